"""Binary classification metrics from labels, predictions and fight probabilities (fight = 1)."""

from __future__ import annotations

import numpy as np


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve: the probability that a random fight outscores a random non-fight (ties half)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def confusion(labels, predictions) -> np.ndarray:
    """[[true non-fight, false fight], [missed fight, true fight]]: rows are labels, columns predictions."""
    matrix = np.zeros((2, 2), dtype=int)
    np.add.at(matrix, (np.asarray(labels, dtype=int), np.asarray(predictions, dtype=int)), 1)
    return matrix


def classification_metrics(labels, predictions, scores=None) -> dict[str, float]:
    tn, fp, fn, tp = (int(n) for n in confusion(labels, predictions).ravel())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    total = tn + fp + fn + tp
    metrics = {"accuracy": (tp + tn) / total if total else 0.0, "precision": precision, "recall": recall, "f1": f1}
    if scores is not None:
        metrics["roc_auc"] = roc_auc(labels, scores)
    return metrics
