"""Matplotlib figures the labs save as PNG: digit grids, histograms, heatmaps, curves, projections."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Imported inside the functions that use them, to keep this module quick to import: matplotlib.


def _pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def digit_grid(x: np.ndarray, y: np.ndarray, rows: int = 4, cols: int = 8, title: str = ""):
    """The first rows*cols digits (flat N x 64) as a grid of 8x8 images with their labels."""
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25))
    for ax, image, label in zip(axes.flat, x, y):
        ax.imshow(image.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(str(label), fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    return fig


def feature_histograms(frame, columns: Sequence[str], hue=None, bins: int = 25, title: str = ""):
    """One histogram per column, split by class when hue (a Series of labels) is given."""
    plt = _pyplot()
    cols = min(4, len(columns))
    rows = int(np.ceil(len(columns) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 2.4), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        if hue is None:
            ax.hist(frame[column], bins=bins, color="tab:blue", alpha=0.8)
        else:
            for label in sorted(set(hue)):
                ax.hist(frame[column][hue == label], bins=bins, alpha=0.55, label=str(label))
        ax.set_title(column, fontsize=9)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    if hue is not None:
        axes.flat[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def correlation_heatmap(frame, title: str = ""):
    """Pearson correlations between a frame's columns as a heatmap."""
    plt = _pyplot()
    corr = frame.corr().to_numpy()
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(corr, cmap="coolwarm", vmin=-1, vmax=1)
    ax.set_xticks(range(len(frame.columns)), frame.columns, rotation=90, fontsize=6)
    ax.set_yticks(range(len(frame.columns)), frame.columns, fontsize=6)
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    return fig


def curves(series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str, title: str = "",
           logy: bool = False):
    """Several named curves on one axis (loss per step, accuracy per epoch, ...)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def xy_curves(x: Sequence[float], series: Mapping[str, Sequence[float]], xlabel: str, ylabel: str,
              title: str = ""):
    """Several named curves over a shared x axis (validation curves, learning curves)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, values in series.items():
        ax.plot(x, values, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def roc_plot(rocs: Mapping[str, tuple[np.ndarray, np.ndarray, float]], title: str = ""):
    """ROC curves: name -> (false positive rates, true positive rates, area under the curve)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (fpr, tpr, auc) in rocs.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def confusion_plot(matrix: np.ndarray, labels: Sequence[str], title: str = ""):
    """A confusion matrix (rows: true class, columns: predicted class) with counts."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return fig


def scatter_panels(panels: Mapping[str, np.ndarray], labels: np.ndarray, title: str = ""):
    """Side-by-side 2-D scatter plots (name -> N x 2 points), coloured by labels."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (name, points) in zip(axes.flat, panels.items()):
        sc = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=6)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=list(axes.flat))
    fig.suptitle(title)
    return fig
