"""Resampling helpers, skewed sets, class scores and planted faulty frames behave as documented."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.ml.classical import class_scores, random_oversample, random_undersample, skewed
from cloud.ml.data import FAULT_KINDS, digits_split, faulty_frames


def _rare_problem():
    """90 rows of class 0 and 10 of class 1; features encode the row number."""
    x = np.arange(100, dtype=float).reshape(100, 1)
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    return x, y


def test_oversampling_balances_by_repeating_minority_rows():
    # Prepare
    x, y = _rare_problem()
    # Execute
    x_over, y_over = random_oversample(x, y, seed=0)
    # Assert
    assert np.bincount(y_over).tolist() == [90, 90]
    assert set(x_over[y_over == 1, 0]) == set(x[y == 1, 0])  # only existing rows, repeated
    np.testing.assert_array_equal(x_over[:100], x)  # originals kept in order


def test_undersampling_keeps_a_balanced_subset():
    # Prepare
    x, y = _rare_problem()
    # Execute
    x_under, y_under = random_undersample(x, y, seed=0)
    # Assert
    assert np.bincount(y_under).tolist() == [10, 10]
    assert set(x_under[:, 0]) <= set(x[:, 0])


def test_skewed_reaches_the_asked_share_and_refuses_impossible_ones():
    # Prepare
    x = np.arange(200, dtype=float).reshape(200, 1)
    y = np.r_[np.zeros(100, int), np.ones(100, int)]
    # Execute
    _, y_skewed = skewed(x, y, minority=1, share=0.05, seed=0)
    # Assert
    assert y_skewed.mean() == pytest.approx(0.05, abs=0.005)
    with pytest.raises(ValueError, match="class 1 has 100 rows; share 0.9 needs 900"):
        skewed(x, y, minority=1, share=0.9)


def test_class_scores_from_decision_function_are_probabilities():
    # Prepare
    from sklearn.svm import SVC

    split = digits_split(0)
    model = SVC().fit(split.x_train[:300], split.y_train[:300])
    # Execute
    scores = class_scores(model, split.x_test[:50])
    # Assert
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(scores.argmax(axis=1), model.predict(split.x_test[:50]))


def test_faulty_frames_cycle_kinds_and_stay_in_range():
    # Prepare
    x = digits_split(0).x_test
    # Execute
    frames, kinds = faulty_frames(x, 9, seed=1)
    again, _ = faulty_frames(x, 9, seed=1)
    # Assert
    assert frames.shape == (9, 64) and frames.dtype == np.float32
    assert kinds == list(FAULT_KINDS) * 3
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    np.testing.assert_array_equal(frames, again)
    dead = frames[[k == "dead_block" for k in kinds]]
    assert ((dead == 1.0).sum(axis=1) >= 16).all()  # a saturated 4x4 block in every one
