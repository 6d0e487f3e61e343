"""Hand-written gradients agree with autograd and finite differences; gradient descent converges."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.ml import gradients as gd


def _problem(model: str, seed: int = 0, n: int = 60, d: int = 5):
    """A small random regression (linear) or yes/no (logistic) problem in float64."""
    rng = np.random.default_rng(seed)
    x = gd.add_bias(rng.normal(size=(n, d)))  # n, d + 1
    true_theta = rng.normal(size=d + 1)
    z = x @ true_theta
    y = z + 0.1 * rng.normal(size=n) if model == "linear" else (rng.random(n) < gd.sigmoid(z)) * 1.0
    return x, y, rng.normal(size=d + 1)


@pytest.mark.parametrize("model", gd.MODELS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradient_matches_autograd_and_finite_differences(model, seed):
    # Prepare
    x, y, theta = _problem(model, seed)
    # Execute
    check = gd.check_gradient(model, theta, x, y)
    # Assert: the gradient is not trivially zero, and both references agree to 1e-6
    assert check.norm > 1e-2
    assert check.vs_autograd < 1e-6
    assert check.vs_finite_difference < 1e-6


def test_a_wrong_gradient_is_caught():
    # Prepare: drop the factor 2 of the MSE derivative, a classic slip
    x, y, theta = _problem("linear")
    wrong = (1.0 / len(y)) * x.T @ (x @ theta - y)
    # Execute
    numeric = gd.finite_difference_gradient(lambda t: gd.loss("linear", t, x, y), theta)
    # Assert
    assert np.max(np.abs(wrong - numeric)) > 1e-2


def test_linear_descent_reaches_least_squares():
    # Prepare
    x, y, _ = _problem("linear", n=200)
    best = gd.loss("linear", np.linalg.lstsq(x, y, rcond=None)[0], x, y)
    # Execute
    result = gd.gradient_descent("linear", x, y, lr=0.1, steps=300)
    # Assert: loss falls monotonically (small step) to within 1e-6 of the closed-form optimum
    assert all(b <= a + 1e-12 for a, b in zip(result.losses, result.losses[1:]))
    assert result.losses[-1] == pytest.approx(best, abs=1e-6)


def test_logistic_descent_matches_sklearn_unregularised():
    # Prepare
    from sklearn.linear_model import LogisticRegression

    x, y, _ = _problem("logistic", n=400, d=3)
    reference = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-10, max_iter=5000).fit(x, y)
    # Execute
    result = gd.gradient_descent("logistic", x, y, lr=1.0, steps=3000)
    # Assert
    np.testing.assert_allclose(result.theta, reference.coef_[0], atol=1e-3)


def test_same_seed_same_descent():
    # Prepare
    x, y, _ = _problem("logistic")
    # Execute
    first = gd.gradient_descent("logistic", x, y, steps=20, seed=3)
    again = gd.gradient_descent("logistic", x, y, steps=20, seed=3)
    other = gd.gradient_descent("logistic", x, y, steps=20, seed=4)
    # Assert
    assert first.losses == again.losses
    assert first.losses != other.losses


def test_unknown_model_is_refused_with_the_choices():
    # Execute / Assert
    with pytest.raises(ValueError, match="model must be one of \\('linear', 'logistic'\\), got 'svm'"):
        gd.loss("svm", np.zeros(2), np.zeros((1, 2)), np.zeros(1))
