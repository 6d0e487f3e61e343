"""Untidy tables, the preprocessing pipeline, and model artifacts that refuse to load when altered."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.ml.data import load_dataset
from cloud.ml.lifecycle import SITES, load_model, make_untidy, save_model, tabular_pipeline


def test_make_untidy_blanks_the_asked_fraction_and_adds_a_category():
    # Prepare
    frame = load_dataset("wine").frame
    # Execute
    untidy = make_untidy(frame, seed=1, missing_fraction=0.1)
    # Assert
    assert untidy[frame.columns].isna().to_numpy().mean() == pytest.approx(0.1, abs=0.02)
    assert set(untidy["site"]) == set(SITES)
    assert not frame.isna().any().any()  # the input is left unchanged


def test_pipeline_trains_on_untidy_data_and_artifact_round_trips(tmp_path):
    # Prepare
    from sklearn.linear_model import LogisticRegression

    table = load_dataset("iris")
    frame = make_untidy(table.frame, seed=0)
    pipeline = tabular_pipeline(table.frame.columns.tolist(), ["site"], LogisticRegression(max_iter=500))
    # Execute
    pipeline.fit(frame, table.target)
    card = save_model(pipeline, tmp_path, "iris", frame.columns.tolist(), list(pipeline.classes_),
                      {"accuracy": 1.0})
    reloaded, loaded_card = load_model(tmp_path, "iris")
    # Assert
    assert pipeline.score(frame, table.target) > 0.9
    np.testing.assert_array_equal(reloaded.predict(frame), pipeline.predict(frame))
    assert loaded_card == card and card.classes == [0, 1, 2]


def test_altered_artifact_is_refused_with_both_digests(tmp_path):
    # Prepare
    card = save_model({"weights": [1, 2]}, tmp_path, "m", ["a"], [0, 1], {})
    with open(tmp_path / card.file, "ab") as handle:
        handle.write(b"tampered")
    # Execute / Assert
    with pytest.raises(ValueError, match=f"sha256 mismatch \\(expected {card.sha256}, got [0-9a-f]{{64}}\\)"):
        load_model(tmp_path, "m")
