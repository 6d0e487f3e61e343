"""Classical models for labs: scikit-learn regressors, classifiers and clusterers, and resampling for imbalance."""

from __future__ import annotations

import importlib.util

import numpy as np

# Imported inside the functions that use them, to keep this module quick to import: catboost, lightgbm, sklearn, xgboost.


def regressors(seed: int = 42) -> dict:
    """Linear, polynomial, ridge, lasso and elastic-net regression, each behind a StandardScaler."""
    from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    return {
        "linear": make_pipeline(StandardScaler(), LinearRegression()),
        "polynomial (degree 2)": make_pipeline(StandardScaler(), PolynomialFeatures(2),
                                               StandardScaler(), LinearRegression()),
        "polynomial 2 + ridge": make_pipeline(StandardScaler(), PolynomialFeatures(2),
                                              StandardScaler(), Ridge(alpha=100.0)),
        "ridge": make_pipeline(StandardScaler(), Ridge(alpha=10.0)),
        "lasso": make_pipeline(StandardScaler(), Lasso(alpha=1.0, random_state=seed)),
        "elastic net": make_pipeline(StandardScaler(),
                                     ElasticNet(alpha=0.1, l1_ratio=0.5, random_state=seed)),
    }


def classifiers(seed: int = 42, boosting_rounds: int = 100, trees: int = 200) -> dict:
    """Logistic regression, k-NN, SVM, decision tree, random forest and histogram gradient boosting.

    XGBoost, LightGBM and CatBoost join the list when they are installed (none is required).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    models = {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
        "k-NN (k=3)": KNeighborsClassifier(n_neighbors=3),
        "SVM (RBF)": SVC(kernel="rbf", C=10.0, random_state=seed),
        "decision tree": DecisionTreeClassifier(random_state=seed),
        "random forest": RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=1),
        "hist gradient boosting": HistGradientBoostingClassifier(
            max_iter=boosting_rounds, learning_rate=0.2, random_state=seed, early_stopping=False),
    }
    models.update(_optional_boosters(seed, boosting_rounds))
    return models


def _optional_boosters(seed: int, rounds: int) -> dict:
    """XGBoost, LightGBM and CatBoost classifiers for whichever of them is installed."""
    found = {}
    if importlib.util.find_spec("xgboost"):
        from xgboost import XGBClassifier

        found["XGBoost"] = XGBClassifier(n_estimators=rounds, random_state=seed, n_jobs=1)
    if importlib.util.find_spec("lightgbm"):
        from lightgbm import LGBMClassifier

        found["LightGBM"] = LGBMClassifier(n_estimators=rounds, random_state=seed, n_jobs=1,
                                           verbose=-1)
    if importlib.util.find_spec("catboost"):
        from catboost import CatBoostClassifier

        found["CatBoost"] = CatBoostClassifier(iterations=rounds, random_seed=seed,
                                               thread_count=1, verbose=False)
    return found


def class_scores(model, x: np.ndarray) -> np.ndarray:
    """Per-class scores that sum to 1: predict_proba, or a softmax of decision_function (SVM)."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)
    margins = model.decision_function(x)  # N, K (or N for two classes)
    if margins.ndim == 1:
        margins = np.stack([-margins, margins], axis=1)  # N, 2
    shifted = np.exp(margins - margins.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def random_oversample(x: np.ndarray, y: np.ndarray, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Repeat rows of the smaller classes (drawn with replacement) until every class is as big as the largest."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    picks = [np.flatnonzero(y == c) for c in classes]
    extra = [rng.choice(idx, size=counts.max() - len(idx), replace=True) for idx in picks]
    order = np.concatenate([np.arange(len(y)), *extra])
    return x[order], y[order]


def random_undersample(x: np.ndarray, y: np.ndarray, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """Keep a random subset of every class as big as the smallest class."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    keep = np.concatenate([rng.choice(np.flatnonzero(y == c), size=counts.min(), replace=False)
                           for c in classes])
    return x[np.sort(keep)], y[np.sort(keep)]


def skewed(x: np.ndarray, y: np.ndarray, minority: int, share: float, seed: int = 42):
    """Drop rows of class `minority` until it makes up `share` of the result (a rare-event set)."""
    rng = np.random.default_rng(seed)
    rare = np.flatnonzero(y == minority)
    common = np.flatnonzero(y != minority)
    keep_rare = int(round(share * len(common) / (1 - share)))
    if keep_rare > len(rare):
        raise ValueError(f"class {minority} has {len(rare)} rows; share {share} needs {keep_rare}")
    keep = np.sort(np.concatenate([common, rng.choice(rare, size=keep_rare, replace=False)]))
    return x[keep], y[keep]
