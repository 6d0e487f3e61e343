"""The ML lifecycle on a table: untidy data, a preprocessing pipeline, and a model artifact saved with its metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloud.ml.data import sha256_of

# Imported inside the functions that use them, to keep this module quick to import: joblib, sklearn.

SITES = ("north", "south", "east")  # the categorical column added to a numeric table


def make_untidy(frame, seed: int = 42, missing_fraction: float = 0.05,
                category_column: str = "site"):
    """A copy of a numeric table as real data arrives: a text category column and missing cells.

    The category is drawn at random per row (it carries no signal: encoding it must not
    hurt); missing_fraction of the numeric cells become NaN.
    """
    rng = np.random.default_rng(seed)
    untidy = frame.copy()
    numeric = untidy.columns.tolist()
    holes = rng.random(untidy[numeric].shape) < missing_fraction  # N, d
    untidy[numeric] = untidy[numeric].mask(holes)
    untidy[category_column] = rng.choice(SITES, size=len(untidy))
    return untidy


def tabular_pipeline(numeric: list[str], categorical: list[str], estimator):
    """Impute (median), scale numeric columns; impute and one-hot encode categorical ones; then fit estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric_steps = Pipeline([("impute", SimpleImputer(strategy="median")),
                              ("scale", StandardScaler())])
    categorical_steps = Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                                  ("onehot", OneHotEncoder(handle_unknown="ignore"))])
    prepare = ColumnTransformer([("numeric", numeric_steps, numeric),
                                 ("categorical", categorical_steps, categorical)])
    return Pipeline([("prepare", prepare), ("model", estimator)])


@dataclass(frozen=True)
class ModelCard:
    """What travels with a saved model: its file, digest, inputs, classes and metrics."""
    name: str
    file: str
    sha256: str
    features: list[str]
    classes: list[Any]
    metrics: dict[str, float]


def save_model(model, folder: Path, name: str, features: list[str], classes: list[Any],
               metrics: dict[str, float]) -> ModelCard:
    """Write model as NAME.joblib plus NAME.json (its model card with sha256 and metrics)."""
    import joblib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_path = folder / f"{name}.joblib"
    joblib.dump(model, model_path)
    card = ModelCard(name, model_path.name, sha256_of(model_path), list(features),
                     [c.item() if hasattr(c, "item") else c for c in classes], dict(metrics))
    (folder / f"{name}.json").write_text(json.dumps(card.__dict__, indent=2) + "\n")
    return card


def load_model(folder: Path, name: str):
    """Read NAME.json, check the model file's sha256, and return (model, card)."""
    import joblib

    folder = Path(folder)
    card = ModelCard(**json.loads((folder / f"{name}.json").read_text()))
    seen = sha256_of(folder / card.file)
    if seen != card.sha256:
        raise ValueError(f"model {name} in {folder}: sha256 mismatch (expected {card.sha256}, "
                         f"got {seen}); the file was changed after saving, retrain or restore it")
    return joblib.load(folder / card.file), card
