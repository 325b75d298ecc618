"""Binary classification metrics from labels and predictions (fight = 1)."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels, predictions) -> dict[str, float]:
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    tp = int(np.sum((predictions == 1) & (labels == 1)))
    fp = int(np.sum((predictions == 1) & (labels == 0)))
    fn = int(np.sum((predictions == 0) & (labels == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = float(np.mean(labels == predictions)) if len(labels) else 0.0
    return {"accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1}
