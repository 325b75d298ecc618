import numpy as np
import pytest

from trainer.metrics import classification_metrics, confusion, roc_auc


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
