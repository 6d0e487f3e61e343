"""A small multilayer perceptron written in numpy: the model devices train in federated learning.

Numpy only, so a Raspberry Pi trains it without torch, and every aggregate is exact-checkable.
The model is ``logits = relu(x @ w1 + b1) @ w2 + b2``; its parameters are a dict of float32
arrays in the fixed order of ``PARAM_NAMES``, which is also the order they travel in.
"""

from __future__ import annotations

import numpy as np

PARAM_NAMES = ("w1", "b1", "w2", "b2")
Params = dict[str, np.ndarray]


def init_params(features: int = 64, hidden: int = 32, classes: int = 10, seed: int = 0) -> Params:
    """He-initialised weights and zero biases, reproducible from the seed.

    Examples
    --------
    >>> p = init_params(features=4, hidden=3, classes=2, seed=0)
    >>> [p[k].shape for k in PARAM_NAMES]
    [(4, 3), (3,), (3, 2), (2,)]
    """
    if min(features, hidden, classes) < 1:
        raise ValueError(f"features, hidden and classes must be >= 1, got {features}, {hidden}, {classes}")
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.standard_normal((features, hidden)) * np.sqrt(2.0 / features)).astype(np.float32),
        "b1": np.zeros(hidden, dtype=np.float32),
        "w2": (rng.standard_normal((hidden, classes)) * np.sqrt(2.0 / hidden)).astype(np.float32),
        "b2": np.zeros(classes, dtype=np.float32),
    }


def check_params(params: Params) -> None:
    """Raise ValueError naming what is missing or mis-shaped in a parameter dict."""
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise ValueError(f"MLP parameters lack {missing}; got keys {sorted(params)}")
    w1, b1, w2, b2 = (params[k] for k in PARAM_NAMES)
    if not (w1.ndim == 2 and b1.shape == (w1.shape[1],) and w2.shape[0] == w1.shape[1] and b2.shape == (w2.shape[1],)):
        raise ValueError(
            f"MLP parameter shapes do not chain: w1 {w1.shape}, b1 {b1.shape}, w2 {w2.shape}, b2 {b2.shape}"
        )


def forward(params: Params, x: np.ndarray) -> np.ndarray:
    """Logits for flat samples x (N, features) -> (N, classes)."""
    h = np.maximum(x @ params["w1"] + params["b1"], 0.0)  # N, H
    return h @ params["w2"] + params["b2"]  # N, C


def _softmax_cross_entropy(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to the logits."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)  # N, C
    n = len(y)
    loss = float(-np.log(probs[np.arange(n), y] + 1e-12).mean())
    grad = probs
    grad[np.arange(n), y] -= 1.0
    return loss, grad / n


def loss_and_grads(params: Params, x: np.ndarray, y: np.ndarray, anchor: Params | None = None,
                   mu: float = 0.0) -> tuple[float, Params]:
    """Cross-entropy (plus FedProx's ``mu/2 * ||w - anchor||^2`` when mu > 0) and its gradients."""
    pre = x @ params["w1"] + params["b1"]  # N, H
    h = np.maximum(pre, 0.0)  # N, H
    logits = h @ params["w2"] + params["b2"]  # N, C
    loss, dlogits = _softmax_cross_entropy(logits, y)
    dh = (dlogits @ params["w2"].T) * (pre > 0)  # N, H
    grads = {"w1": x.T @ dh, "b1": dh.sum(0), "w2": h.T @ dlogits, "b2": dlogits.sum(0)}
    if mu > 0.0:
        if anchor is None:
            raise ValueError(f"FedProx needs the global parameters as anchor when mu > 0 (mu={mu})")
        for k in PARAM_NAMES:
            diff = params[k] - anchor[k]
            loss += 0.5 * mu * float(np.sum(diff * diff))
            grads[k] = grads[k] + mu * diff
    return loss, grads


def train_sgd(params: Params, x: np.ndarray, y: np.ndarray, epochs: int = 1, lr: float = 0.1,
              batch_size: int = 32, seed: int = 0, mu: float = 0.0) -> tuple[Params, float]:
    """Mini-batch SGD from params; returns (new params, mean training loss over the batches seen).

    With ``mu > 0`` it minimises FedProx's local objective, anchored at the starting params.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((64, 4)).astype(np.float32); y = (x[:, 0] > 0.5).astype(np.int64)
    >>> p0 = init_params(4, 8, 2, seed=0)
    >>> p1, loss = train_sgd(p0, x, y, epochs=20, lr=0.5, seed=0)
    >>> evaluate(p1, x, y)[1] > evaluate(p0, x, y)[1]
    True
    """
    if len(x) == 0:
        raise ValueError("train_sgd got 0 samples; this device's partition is empty")
    check_params(params)
    anchor = {k: v.copy() for k, v in params.items()} if mu > 0 else None
    current = {k: v.astype(np.float32).copy() for k, v in params.items()}
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss, grads = loss_and_grads(current, x[idx], y[idx], anchor, mu)
            for k in PARAM_NAMES:
                current[k] -= np.float32(lr) * grads[k].astype(np.float32)
            losses.append(loss)
    return current, float(np.mean(losses))


def evaluate(params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of params on (x, y)."""
    if len(x) == 0:
        return float("nan"), float("nan")
    logits = forward(params, x)
    loss, _ = _softmax_cross_entropy(logits, y)
    return loss, float((logits.argmax(1) == y).mean())


def weighted_average(param_sets: list[Params], weights: list[float]) -> Params:
    """FedAvg's aggregate: sum_k (n_k / n) * w_k, per parameter (the reference the tests compare with)."""
    if not param_sets or len(param_sets) != len(weights):
        raise ValueError(f"need one weight per parameter set, got {len(param_sets)} sets and {len(weights)} weights")
    total = float(sum(weights))
    return {k: sum((w / total) * p[k] for p, w in zip(param_sets, weights)) for k in PARAM_NAMES}
