"""Training plots as PNG files (matplotlib, no display): curves, confusion matrix, ROC."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from data.files import atomic_write


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


def plot_curves(history: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """Loss and accuracy per epoch; `history` maps a metric name to (epoch, value) pairs."""
    fig = Figure(figsize=(10, 4))
    for ax, kind in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for name in (f"train_{kind}", f"val_{kind}"):
            if history.get(name):
                epochs, values = zip(*history[name])
                ax.plot(epochs, values, marker="." if len(epochs) < 50 else None, label=name)
        ax.set(xlabel="epoch", ylabel=kind, title=kind)
        ax.legend()
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, labels: tuple[str, str], path: Path) -> None:
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=labels, yticklabels=labels, xlabel="predicted", ylabel="true",
           title="validation confusion matrix")
    _save(fig, path)


def plot_roc(labels, scores, auc: float, path: Path) -> None:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    tp = np.concatenate([[0], np.cumsum(labels[order] == 1)]) / max(1, (labels == 1).sum())
    fp = np.concatenate([[0], np.cumsum(labels[order] == 0)]) / max(1, (labels == 0).sum())
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    ax.plot(fp, tp, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="validation ROC")
    ax.legend(loc="lower right")
    _save(fig, path)
