import numpy as np
import pytest

from trainer.metrics import classification_metrics, confusion, roc_auc, timeline_report


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
