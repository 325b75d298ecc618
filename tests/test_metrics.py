import numpy as np
import pytest

from trainer.metrics import (average_precision, classification_metrics, confusion, mean_class_accuracy, roc_auc,
                             threshold_sweep, timeline_report)


def test_confusion_and_scores():
    labels, preds = [1, 1, 1, 0, 0], [1, 0, 1, 1, 0]
    assert confusion(labels, preds).tolist() == [[1, 1], [1, 2]]
    m = classification_metrics(labels, preds, scores=[0.9, 0.4, 0.8, 0.6, 0.1])
    assert m["accuracy"] == pytest.approx(0.6) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of the 6 fight/non-fight pairs are ordered right


def test_roc_auc_extremes_and_ties():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))


def clip(start, prob):
    return {"start_s": start, "end_s": start + 0.64, "fight_prob": prob}


def test_timeline_report_counts_false_alerts_latency_and_margins():
    fights = [[8.0, 14.0]]
    clips = [clip(0.0, 0.1), clip(7.68, 0.6), clip(8.32, 0.9), clip(8.96, 0.8), clip(14.08, 0.2)]
    alerts = [{"start_s": 0.0, "end_s": 1.28, "raised_s": 1.28},  # calm time: false
              {"start_s": 7.68, "end_s": 13.0, "raised_s": 8.96}]  # straddles the fight's start: a hit
    report = timeline_report(clips, alerts, fights)
    assert report["false_alerts"] == 1 and report["caught"] == 1
    assert report["latency_s"] == [pytest.approx(0.96)]
    # 7.68-8.32 straddles the start: neither inside nor calm
    assert report["fight_p"] == 0.8 and report["calm_p"] == 0.2


def test_timeline_report_missed_fight_and_no_alerts():
    report = timeline_report([clip(0.0, 0.1), clip(8.32, 0.3)], [], [[8.0, 14.0]])
    assert report == {"false_alerts": 0, "caught": 0, "latency_s": [None], "fight_p": 0.3, "calm_p": 0.1}


def test_average_precision_mean_class_accuracy_and_sweep():
    labels, scores = [1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.2, 0.1]
    # ranked: fight (p 1/1), calm, fight (p 2/3): AP = (1 + 2/3) / 2
    assert average_precision(labels, scores) == pytest.approx(5 / 6)
    assert np.isnan(average_precision([0, 0], [0.1, 0.2]))
    # fights 1 of 2 right, non-fights 3 of 3: balanced accuracy 0.75 where plain accuracy is 0.8
    assert mean_class_accuracy(labels, [1, 0, 0, 0, 0]) == pytest.approx(0.75)
    sweep = threshold_sweep(labels, scores, [0.5, 0.85])
    assert [s["threshold"] for s in sweep] == [0.5, 0.85]
    assert sweep[0]["recall"] == 1.0 and sweep[0]["precision"] == pytest.approx(2 / 3)
    assert sweep[1]["recall"] == 0.5 and sweep[1]["precision"] == 1.0


@pytest.mark.parametrize("labels, scores, expected", [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 5 / 6),  # scikit-learn's documented example: 0.83
    ([0, 1], [0.5, 0.5], 0.5),  # one threshold takes both: precision 1/2 at recall 1
    ([1, 0, 0, 1], [0.5] * 4, 0.5),  # all tied: the fights' share
    # thresholds 0.9, 0.6 (a fight and a non-fight together), 0.3: (1 + 2/3 + 3/4) / 3
    ([1, 0, 1, 1], [0.9, 0.6, 0.6, 0.3], 29 / 36),
    ([0, 1, 0, 1], [0.6, 0.6, 0.2, 0.2], 0.5),
])
def test_average_precision_takes_tied_scores_as_one_threshold_as_scikit_learn_does(labels, scores, expected):
    assert average_precision(labels, scores) == pytest.approx(expected)


def test_timeline_report_locates_an_alert_by_its_box_at_the_raise():
    clips = [{"start_s": 0.0, "end_s": 1.0, "fight_prob": 0.9}]
    truth = [{"frame": 20, "box": [0.0, 0.0, 0.2, 0.2]}, {"frame": 25, "box": [0.5, 0.5, 0.7, 0.7]}]
    on, off = ({"start_s": 0.5, "end_s": 2.0, "raised_s": 1.0, "box": box}
               for box in ([0.48, 0.5, 0.7, 0.72], [0.0, 0.0, 0.2, 0.2]))  # the raise is frame 25 at 25 fps
    assert timeline_report(clips, [on], [[0.8, 2.0]], truth, 25.0)["located"] == [True]
    assert timeline_report(clips, [off], [[0.8, 2.0]], truth, 25.0)["located"] == [False]
    no_box = {**on, "box": None}
    assert timeline_report(clips, [no_box], [[0.8, 2.0]], truth, 25.0)["located"] == [None]
    assert timeline_report(clips, [], [[0.8, 2.0]], truth, 25.0)["located"] == [None]
    assert "located" not in timeline_report(clips, [on], [[0.8, 2.0]])
