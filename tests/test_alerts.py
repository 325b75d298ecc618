import pytest

from trainer.serve.alerting.policy import AlertPolicy, Window, detect_alerts

POLICY = AlertPolicy(threshold=0.5, consecutive=2, calm_to_end=2, cooldown_s=0.0)


def windows(probs, length=1.0):
    return [Window(i * length, (i + 1) * length, p) for i, p in enumerate(probs)]


def test_one_hot_window_is_not_an_alert():
    assert detect_alerts(POLICY, windows([0.1, 0.9, 0.1, 0.9, 0.2]), "cam") == []


def test_alert_spans_the_hot_windows_and_records_when_it_was_raised():
    (alert,) = detect_alerts(POLICY, windows([0.1, 0.8, 0.95, 0.7, 0.2, 0.1, 0.1]), "cam")
    assert (alert.camera, alert.start_s, alert.raised_s, alert.end_s) == ("cam", 1.0, 3.0, 4.0)
    assert alert.peak_prob == 0.95


def test_a_short_calm_gap_does_not_end_the_alert():
    (alert,) = detect_alerts(POLICY, windows([0.9, 0.9, 0.1, 0.9, 0.1, 0.1]), "cam")
    assert (alert.start_s, alert.end_s) == (0.0, 4.0)


def test_alert_still_active_at_the_end_is_closed():
    (alert,) = detect_alerts(POLICY, windows([0.1, 0.9, 0.9, 0.9]), "cam")
    assert (alert.start_s, alert.end_s) == (1.0, 4.0)


def test_cooldown_suppresses_a_second_alert_then_allows_it():
    probs = [0.9, 0.9, 0.1, 0.1, 0.9, 0.9, 0.1, 0.1] + [0.1] * 6 + [0.9, 0.9, 0.1, 0.1]
    policy = AlertPolicy(0.5, 2, 2, cooldown_s=5.0)
    alerts = detect_alerts(policy, windows(probs), "cam")
    assert [a.start_s for a in alerts] == [0.0, 14.0]
    assert len(detect_alerts(POLICY, windows(probs), "cam")) == 3


@pytest.mark.parametrize("kwargs", [dict(threshold=1.5), dict(consecutive=0), dict(cooldown_s=-1)])
def test_invalid_policy(kwargs):
    with pytest.raises(ValueError):
        AlertPolicy(**{**dict(threshold=0.5, consecutive=2, calm_to_end=2, cooldown_s=0.0), **kwargs})


def test_an_alert_says_where_the_window_that_raised_it_was_hottest():
    hot = [Window(i, i + 1.0, p, box) for i, (p, box) in
           enumerate([(0.9, (0.1, 0.1, 0.2, 0.2)), (0.95, (0.6, 0.5, 0.8, 0.9)), (0.9, (0.0, 0.0, 1.0, 1.0))])]
    (alert,) = detect_alerts(POLICY, hot, "cam")
    assert alert.box == (0.6, 0.5, 0.8, 0.9)  # consecutive=2: the second window raised it
    (plain,) = detect_alerts(POLICY, windows([0.9, 0.9]), "cam")
    assert plain.box is None
