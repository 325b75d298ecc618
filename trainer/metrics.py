"""Binary classification metrics from labels, predictions and fight probabilities (fight = 1)."""

from __future__ import annotations

import numpy as np

from trainer.serve.runtime.regions import iou


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


def timeline_report(clips: list[dict], alerts: list[dict], fight_intervals: list[list[float]],
                    truth_boxes: list[dict] | None = None, fps: float | None = None) -> dict:
    """How a scored untrimmed video's alerts match its true fight intervals (seconds). Pure.

    `clips`: output.json segments ({"start_s", "end_s", "fight_prob"}); `alerts`: {"start_s", "end_s",
    "raised_s", and "box" where the score had regions}. Returns false_alerts (alerts that overlap no fight),
    caught (fights with an alert), latency_s (per fight: the first overlapping alert's raised_s minus the fight's
    start; None when missed), and fight_p / calm_p: the lowest fight probability of a segment wholly inside a
    fight and the highest of a segment that touches none (None where there is no such segment).
    With `truth_boxes` ([{"frame", "box"}], normalised, as data/synthetic.py's wide scenes give) and `fps`, also
    located: per fight, whether its first alert's box overlaps the true box of the frame nearest the raise with
    IoU >= LOCATED_IOU (None when missed or the alert has no box).
    """
    def overlaps(start: float, end: float, interval) -> bool:
        return start < interval[1] and end > interval[0]

    hits = [[a for a in alerts if overlaps(a["start_s"], a["end_s"], fight)] for fight in fight_intervals]
    inside = [c["fight_prob"] for c in clips
              if any(f[0] <= c["start_s"] and c["end_s"] <= f[1] for f in fight_intervals)]
    calm = [c["fight_prob"] for c in clips if not any(overlaps(c["start_s"], c["end_s"], f) for f in fight_intervals)]
    report = {
        "false_alerts": sum(not any(overlaps(a["start_s"], a["end_s"], f) for f in fight_intervals) for a in alerts),
        "caught": sum(bool(h) for h in hits),
        "latency_s": [round(min(a["raised_s"] for a in h) - f[0], 3) if h else None
                      for h, f in zip(hits, fight_intervals)],
        "fight_p": min(inside, default=None),
        "calm_p": max(calm, default=None),
    }
    if truth_boxes and fps:
        report["located"] = [_located(min(h, key=lambda a: a["raised_s"]), truth_boxes, fps) if h else None
                             for h in hits]
    return report


LOCATED_IOU = 0.3  # an alert's box "says where" when it overlaps the true box this much (a loose detection match)


def _located(alert: dict, truth_boxes: list[dict], fps: float) -> bool | None:
    if alert.get("box") is None:
        return None
    raised_frame = alert["raised_s"] * fps
    nearest = min(truth_boxes, key=lambda b: abs(b["frame"] - raised_frame))
    return iou(alert["box"], nearest["box"]) >= LOCATED_IOU


def average_precision(labels, scores) -> float:
    """Area under the precision-recall curve: scikit-learn's average_precision_score, the step sum of precision
    times the recall gained at each distinct score: tied scores are one threshold, so labels [0, 1] scored [0.5, 0.5]
    give 0.5, not 1; nan without fights."""
    from sklearn.metrics import average_precision_score  # seconds to import: evaluation needs it, training not

    labels = np.asarray(labels)
    if not (labels == 1).any():
        return float("nan")
    return float(average_precision_score(labels, np.asarray(scores, dtype=float)))


def mean_class_accuracy(labels, predictions) -> float:
    """The mean over classes of the share of each class predicted right (balanced accuracy)."""
    matrix = confusion(labels, predictions)
    present = matrix.sum(1) > 0
    return float((matrix.diagonal()[present] / matrix.sum(1)[present]).mean())


def threshold_sweep(labels, scores, thresholds) -> list[dict[str, float]]:
    """classification_metrics at each fight-probability threshold (what moving the alert threshold trades)."""
    scores = np.asarray(scores, dtype=float)
    return [{"threshold": float(t), **classification_metrics(labels, (scores >= t).astype(int))} for t in thresholds]
