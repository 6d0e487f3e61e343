"""Central differential privacy: DP-SGD with Opacus, with ε from the PRV and RDP accountants side by side."""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from cloud.ml.data import as_images
from cloud.ml.models import build_torch_cnn

# ε is computed in one place, on the device side, so a device and the cloud agree on every number.
from edge.private.dp import ACCOUNTANTS, RDP_ORDERS, epsilon_for  # noqa: F401 - re-exported

# Imported inside the functions that use them, to keep this module quick to import: opacus, torch.

# One accountant history entry, as Opacus keeps it: (noise multiplier σ, sample rate q, steps).
HistoryEntry = tuple[float, float, int]


@contextmanager
def quiet_opacus():
    """Silence the two Opacus warnings every run prints (secure RNG off; full backward hook), nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        # The PRV accountant sizes its grid with an RDP bound and warns about that bound's orders.
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


@dataclass
class TrainResult:
    """A trained classifier with its timing and, for DP runs, its privacy accounting."""
    model: object
    private: bool
    accuracy: float  # on the evaluation set
    epochs: int
    epoch_seconds: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    noise_multiplier: float = 0.0
    sample_rate: float = 0.0
    steps: int = 0
    delta: float = 0.0
    max_grad_norm: float = 0.0
    epsilon: dict[str, float] = field(default_factory=dict)  # accountant name -> ε

    @property
    def seconds_per_epoch(self) -> float:
        """Median wall time of one epoch (the first, warming up, is not special-cased)."""
        return float(np.median(self.epoch_seconds)) if self.epoch_seconds else 0.0


def make_compatible(model):
    """Return the model with layers Opacus cannot handle replaced (BatchNorm -> GroupNorm); raise if still invalid."""
    from opacus.validators import ModuleValidator

    if ModuleValidator.is_valid(model):  # fix() deep-copies by pickling: skip it when nothing to fix
        return model
    fixed = ModuleValidator.fix(model)
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise ValueError(f"model still incompatible with Opacus after ModuleValidator.fix: {errors}; "
                         "replace the listed layers by hand (e.g. BatchNorm -> GroupNorm)")
    return fixed


def epsilons(history: list[HistoryEntry], delta: float) -> dict[str, float]:
    """ε from the PRV and the RDP accountant for the same history: {'prv': ..., 'rdp': ...}."""
    return {name: epsilon_for(history, delta, name) for name in ACCOUNTANTS}


def noise_for_epsilon(target_epsilon: float, delta: float, sample_rate: float, steps: int,
                      accountant: str = "prv") -> float:
    """The smallest noise multiplier σ whose ε after `steps` steps at rate q stays ≤ the target."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                      sample_rate=sample_rate, steps=steps, accountant=accountant))


def _loader(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    """A shuffled torch DataLoader over flat digits shown as B x 1 x 8 x 8 images."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.from_numpy(as_images(x)), torch.from_numpy(y))
    return DataLoader(data, batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an (optionally Opacus-wrapped) image classifier on flat digits."""
    import torch

    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(as_images(x)))  # N, 10
    return float((logits.argmax(1).numpy() == y).mean())


def train_private(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, *,
                  target_epsilon: float | None = None, noise_multiplier: float | None = None,
                  delta: float = 1e-5, epochs: int = 20, batch_size: int = 256,
                  max_physical_batch_size: int = 64, max_grad_norm: float = 1.0, lr: float = 1e-2,
                  seed: int = 42, accountant: str = "prv", model=None,
                  grad_sample_mode: str = "hooks") -> TrainResult:
    """Train the digit CNN with DP-SGD (Poisson sampling, per-sample clipping, Gaussian noise).

    Give target_epsilon (Opacus picks σ so that ε ≤ target after `epochs`) or noise_multiplier
    (σ fixed; ε is whatever it comes to). Logical batches of `batch_size` (expected size, Poisson
    sampled) are processed in physical chunks of at most max_physical_batch_size by
    BatchMemoryManager; the optimizer steps once per logical batch. ε is reported by both
    the PRV and the RDP accountant for the same (σ, q, steps). grad_sample_mode picks how
    Opacus computes per-sample gradients ("hooks", "functorch", "ew") or their norms only
    ("ghost": ghost clipping, two backward passes and no per-sample gradient tensors); all give
    the same DP-SGD.
    """
    if (target_epsilon is None) == (noise_multiplier is None):
        raise ValueError("give exactly one of target_epsilon (e.g. 3.0) or noise_multiplier (e.g. 1.0), "
                         f"got target_epsilon={target_epsilon}, noise_multiplier={noise_multiplier}")
    with quiet_opacus():
        return _train_private(x_train, y_train, x_eval, y_eval, target_epsilon, noise_multiplier, delta,
                              epochs, batch_size, max_physical_batch_size, max_grad_norm, lr, seed,
                              accountant, model, grad_sample_mode)


def _train_private(x_train, y_train, x_eval, y_eval, target_epsilon, noise_multiplier, delta, epochs,
                   batch_size, max_physical_batch_size, max_grad_norm, lr, seed, accountant, model,
                   grad_sample_mode):
    """The body of train_private, run with Opacus's routine warnings silenced."""
    import torch
    from opacus import PrivacyEngine
    from opacus.utils.batch_memory_manager import BatchMemoryManager
    from torch import nn


    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = make_compatible(model if model is not None else build_torch_cnn())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = _loader(x_train, y_train, batch_size, seed)
    engine = PrivacyEngine(accountant=accountant)
    loss_fn = nn.CrossEntropyLoss()
    common = dict(module=model, optimizer=optimizer, data_loader=loader, max_grad_norm=max_grad_norm,
                  poisson_sampling=True, noise_generator=torch.Generator().manual_seed(seed + 1),
                  grad_sample_mode=grad_sample_mode, criterion=loss_fn)
    if target_epsilon is not None:
        wrapped = engine.make_private_with_epsilon(target_epsilon=target_epsilon, target_delta=delta,
                                                   epochs=epochs, **common)
    else:
        wrapped = engine.make_private(noise_multiplier=noise_multiplier, **common)
    ghost = grad_sample_mode == "ghost"
    # Ghost clipping also hands back a wrapped criterion whose backward() runs both passes.
    model, optimizer, loss_fn, loader = wrapped if ghost else (*wrapped[:2], loss_fn, wrapped[2])
    result = TrainResult(model=model, private=True, accuracy=0.0, epochs=epochs,
                         noise_multiplier=float(optimizer.noise_multiplier),
                         sample_rate=1 / len(loader), delta=delta, max_grad_norm=max_grad_norm)
    for _ in range(epochs):
        start, total, seen = time.perf_counter(), 0.0, 0
        model.train()
        with BatchMemoryManager(data_loader=loader, max_physical_batch_size=max_physical_batch_size,
                                optimizer=optimizer) as physical:
            for images, labels in physical:
                optimizer.zero_grad()
                logits = model(images)  # images: B, 1, 8, 8; B may be 0 (Poisson sampling drew nobody)
                # An empty batch still takes its noise-only step: skipping it would leak that it was empty.
                if len(labels) or ghost:  # ghost's criterion sums an empty batch's per-sample losses to 0
                    loss = loss_fn(logits, labels)
                else:
                    loss = logits.sum() * 0.0
                loss.backward()
                optimizer.step()  # clips and noises only at the end of a logical batch
                total, seen = total + loss.item() * len(labels), seen + len(labels)
        result.epoch_seconds.append(time.perf_counter() - start)
        result.loss.append(total / max(seen, 1))
    result.steps = sum(n for _, _, n in engine.accountant.history)
    result.epsilon = epsilons(engine.accountant.history, delta)
    result.accuracy = _accuracy(model, x_eval, y_eval)
    return result


def train_plain(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, *,
                epochs: int = 20, batch_size: int = 256, lr: float = 1e-2, seed: int = 42,
                model=None) -> TrainResult:
    """Train the same CNN with the same optimizer and batches but no DP: the reference for accuracy and time."""
    import torch
    from torch import nn


    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = model if model is not None else build_torch_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = _loader(x_train, y_train, batch_size, seed)
    loss_fn = nn.CrossEntropyLoss()
    result = TrainResult(model=model, private=False, accuracy=0.0, epochs=epochs)
    for _ in range(epochs):
        start, total = time.perf_counter(), 0.0
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(labels)
        result.epoch_seconds.append(time.perf_counter() - start)
        result.loss.append(total / len(x_train))
    result.accuracy = _accuracy(model, x_eval, y_eval)
    return result


def predict_logits(model, x: np.ndarray) -> np.ndarray:
    """Logits (N, 10) of an image classifier (plain or Opacus-wrapped) on flat digits, as numpy."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(as_images(x))).numpy()


def advantage_bound(epsilon: float, delta: float) -> float:
    """The most any membership test can gain over guessing under (ε, δ)-DP: TPR - FPR ≤ (e^ε - 1 + 2δ)/(e^ε + 1)."""
    return min(1.0, (math.exp(epsilon) - 1 + 2 * delta) / (math.exp(epsilon) + 1))
