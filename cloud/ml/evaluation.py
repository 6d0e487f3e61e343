"""Metrics the labs report: classification scores, ROC curves, regression errors."""

from __future__ import annotations

import numpy as np

# Imported inside the functions that use them, to keep this module quick to import: sklearn.


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray | None = None,
                          average: str = "macro") -> dict[str, float]:
    """Accuracy, precision, recall, F1 and (with scores) ROC-AUC; macro-averaged over classes.

    y_score is P(positive) (N,) for two classes or class probabilities (N, K) for more;
    multi-class ROC-AUC is one-vs-rest, macro-averaged.
    """
    from sklearn import metrics

    scores = {
        "accuracy": metrics.accuracy_score(y_true, y_pred),
        "precision": metrics.precision_score(y_true, y_pred, average=average, zero_division=0),
        "recall": metrics.recall_score(y_true, y_pred, average=average, zero_division=0),
        "f1": metrics.f1_score(y_true, y_pred, average=average, zero_division=0),
    }
    if y_score is not None:
        multi = y_score.ndim == 2 and y_score.shape[1] > 2
        scores["roc_auc"] = metrics.roc_auc_score(y_true, y_score, multi_class="ovr" if multi else "raise")
    return {k: float(v) for k, v in scores.items()}


def micro_roc(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One ROC curve for a multi-class problem: every (sample, class) pair as a yes/no decision."""
    from sklearn import metrics
    from sklearn.preprocessing import label_binarize

    classes = np.arange(y_score.shape[1])
    truth = label_binarize(y_true, classes=classes)  # N, K
    fpr, tpr, _ = metrics.roc_curve(truth.ravel(), y_score.ravel())
    return fpr, tpr, float(metrics.auc(fpr, tpr))


def binary_roc(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC curve and its area for a two-class problem (y_score: higher means positive)."""
    from sklearn import metrics

    fpr, tpr, _ = metrics.roc_curve(y_true, y_score)
    return fpr, tpr, float(metrics.roc_auc_score(y_true, y_score))


def regression_errors(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Root mean squared error, mean absolute error and R^2."""
    from sklearn import metrics

    return {
        "rmse": float(np.sqrt(metrics.mean_squared_error(y_true, y_pred))),
        "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
        "r2": float(metrics.r2_score(y_true, y_pred)),
    }
