"""Gradient descent for linear and logistic regression in numpy, checked against autograd and finite differences."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# Imported inside the functions that use them, to keep this module quick to import: torch.

# Parameters are one vector theta = [w_1, ..., w_d, b]; add_bias appends the column of ones
# so that a prediction is simply X @ theta.

MODELS = ("linear", "logistic")


def add_bias(x: np.ndarray) -> np.ndarray:
    """Append a column of ones to x (N, d) -> (N, d + 1), so theta's last entry is the bias."""
    return np.hstack([x, np.ones((x.shape[0], 1), dtype=x.dtype)])


def sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + exp(-z)), computed without overflow."""
    return np.exp(-np.logaddexp(0.0, -z))


def loss(model: str, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error (linear) or mean binary cross-entropy (logistic) of theta on (x, y)."""
    z = x @ theta  # N
    if model == "linear":
        return float(np.mean((z - y) ** 2))
    if model == "logistic":
        # -[y log s(z) + (1 - y) log(1 - s(z))] simplifies to log(1 + e^z) - y z
        return float(np.mean(np.logaddexp(0.0, z) - y * z))
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def gradient(model: str, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The analytic gradient of loss() with respect to theta, derived by hand."""
    n = x.shape[0]
    z = x @ theta  # N
    if model == "linear":
        return (2.0 / n) * x.T @ (z - y)  # d + 1
    if model == "logistic":
        return (1.0 / n) * x.T @ (sigmoid(z) - y)  # d + 1
    raise ValueError(f"model must be one of {MODELS}, got {model!r}")


def finite_difference_gradient(f: Callable[[np.ndarray], float], theta: np.ndarray,
                               eps: float = 1e-6) -> np.ndarray:
    """Central differences (f(theta + eps e_i) - f(theta - eps e_i)) / 2 eps for every i."""
    grad = np.zeros_like(theta, dtype=np.float64)
    for i in range(theta.size):
        step = np.zeros_like(theta, dtype=np.float64)
        step[i] = eps
        grad[i] = (f(theta + step) - f(theta - step)) / (2 * eps)
    return grad


def torch_gradient(model: str, theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The same loss written in torch (float64); its gradient by autograd."""
    import torch

    t = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64)
    z = xt @ t  # N
    if model == "linear":
        value = torch.mean((z - yt) ** 2)
    elif model == "logistic":
        value = torch.nn.functional.binary_cross_entropy_with_logits(z, yt)
    else:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    value.backward()
    return t.grad.numpy()


@dataclass
class GradientCheck:
    """Largest absolute differences between the hand-written gradient and two references."""
    model: str
    vs_autograd: float
    vs_finite_difference: float
    norm: float  # size of the gradient itself, for scale


def check_gradient(model: str, theta: np.ndarray, x: np.ndarray, y: np.ndarray,
                   eps: float = 1e-6) -> GradientCheck:
    """Compare gradient() with torch autograd and with central finite differences (float64)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    ours = gradient(model, theta, x, y)
    auto = torch_gradient(model, theta, x, y)
    numeric = finite_difference_gradient(lambda t: loss(model, t, x, y), theta, eps)
    return GradientCheck(model, float(np.max(np.abs(ours - auto))),
                         float(np.max(np.abs(ours - numeric))), float(np.linalg.norm(ours)))


@dataclass
class DescentResult:
    """Parameters found by gradient descent and the loss after every step."""
    theta: np.ndarray
    losses: list[float] = field(default_factory=list)


def gradient_descent(model: str, x: np.ndarray, y: np.ndarray, lr: float = 0.1,
                     steps: int = 500, seed: int = 42) -> DescentResult:
    """Full-batch gradient descent theta <- theta - lr * grad, from small random weights."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.01, size=x.shape[1])  # d + 1
    result = DescentResult(theta)
    for _ in range(steps):
        theta = theta - lr * gradient(model, theta, x, y)
        result.losses.append(loss(model, theta, x, y))
    result.theta = theta
    return result
