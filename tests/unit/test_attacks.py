"""Membership-inference attacks and the DP advantage bound, on synthetic scores and logits."""

import math

import numpy as np
import pytest

from cloud.private.attacks import (
    attack_features,
    auc_and_advantage,
    cross_entropy,
    loss_threshold_attack,
    shadow_model_attack,
)
from cloud.private.dp import advantage_bound


def test_cross_entropy_matches_direct_formula_and_is_stable():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 10)), rng.integers(0, 10, 50)
    direct = -np.log(np.exp(logits)[np.arange(50), labels] / np.exp(logits).sum(1))
    assert np.allclose(cross_entropy(logits, labels), direct, atol=1e-12)
    huge = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert np.allclose(cross_entropy(huge, np.array([0, 0])), [0.0, 1000.0])


def test_same_distribution_is_guessing_and_separated_is_perfect():
    rng = np.random.default_rng(1)
    same = loss_threshold_attack(rng.exponential(size=4000), rng.exponential(size=4000))
    assert abs(same.auc - 0.5) < 0.02 and same.advantage < 0.05
    apart = loss_threshold_attack(np.full(10, 0.01), np.full(20, 2.0))
    assert apart.auc == 1.0 and apart.advantage == 1.0
    backwards = loss_threshold_attack(np.full(10, 2.0), np.full(20, 0.01))
    assert backwards.auc == 0.0


def test_auc_does_not_depend_on_how_many_nonmembers():
    rng = np.random.default_rng(2)
    members, nonmembers = rng.normal(0.0, 1, 300), rng.normal(0.5, 1, 300)
    once = auc_and_advantage(members, nonmembers)
    thrice = auc_and_advantage(members, np.tile(nonmembers, 3))
    assert once == pytest.approx(thrice)


def _logits(n, confidence, rng):
    """Logits whose true class (label) gets `confidence` more than the rest, plus noise."""
    labels = rng.integers(0, 10, n)
    logits = rng.normal(size=(n, 10))
    logits[np.arange(n), labels] += confidence
    return logits, labels


def test_shadow_attack_learns_overconfidence_and_is_seeded():
    rng = np.random.default_rng(3)
    shadow_in, shadow_out = _logits(200, 8.0, rng), _logits(200, 2.0, rng)
    target_in, target_out = _logits(200, 8.0, rng), _logits(300, 2.0, rng)
    first = shadow_model_attack(shadow_in, shadow_out, target_in, target_out, seed=0)
    again = shadow_model_attack(shadow_in, shadow_out, target_in, target_out, seed=0)
    assert first.auc > 0.9 and first == again
    assert attack_features(*target_in).shape == (200, 5)


def test_advantage_bound():
    assert advantage_bound(0.0, 1e-5) == pytest.approx(1e-5)
    assert advantage_bound(1.0, 0.0) == pytest.approx((math.e - 1) / (math.e + 1))
    values = [advantage_bound(e, 1e-5) for e in (0.5, 1, 2, 4, 8)]
    assert values == sorted(values) and values[-1] <= 1.0
