"""On-device differential privacy: one privacy ledger per device for its whole life, and DP-SGD rounds that respect it.

A federated device may train in many rounds, and each round may run in a fresh ClientApp
process. A new Opacus PrivacyEngine per round would start ε at zero every time and
under-report it, so the device keeps its accountant's history, a list of
(noise multiplier σ, sample rate q, steps), in a JSON file in its state folder. Before a round
it asks what ε would be *after* the planned steps, and refuses to train if that passes its
budget; after the round it writes the grown history back.

Needs on the device: numpy only for the ledger file; ``opacus`` (and so ``torch``) to compute
ε and to train with DP-SGD. Both are imported inside the functions that use them, so
inference-only devices import this module (or none of it) without torch.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Imported inside the functions that use them, to keep this module quick to import: opacus, torch.

LEDGER_VERSION = 1
ACCOUNTANTS = ("prv", "rdp")
# Rényi orders for the RDP accountant: Opacus's defaults plus larger ones (tighter when few steps).
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [64, 80, 96, 128, 192, 256, 512]


class PrivacyBudgetExceeded(RuntimeError):
    """Training would spend more ε than this device's budget allows."""


def epsilon_for(history: list[tuple[float, float, int]], delta: float, accountant: str = "prv") -> float:
    """ε of a history of DP-SGD phases (σ, q, steps) by Opacus's PRV or RDP accountant (needs opacus)."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    if not history:
        return 0.0

    acc = PRVAccountant() if accountant == "prv" else RDPAccountant()
    acc.history = [(float(s), float(q), int(n)) for s, q, n in history]
    with warnings.catch_warnings():  # PRV sizes its grid with an RDP bound that warns about its orders
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        if accountant == "rdp":
            return float(acc.get_epsilon(delta=delta, alphas=RDP_ORDERS))
        return float(acc.get_epsilon(delta=delta))


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of Poisson sampling at q = batch_size / num_samples (Opacus: 1/q)."""
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"need num_samples >= 1 and batch_size >= 1, got {num_samples} and {batch_size}")
    return max(1, int(round(num_samples / min(batch_size, num_samples))))


@dataclass
class PrivacyLedger:
    """A device's lifelong privacy accounting, persisted as JSON in its state folder.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> ledger = PrivacyLedger.open(folder, "device-0", budget=3.0, delta=1e-5)
    >>> ledger.history
    []
    >>> ledger.record(noise_multiplier=1.1, sample_rate=0.1, steps=10, round_id=1)
    >>> PrivacyLedger.open(folder, "device-0", budget=3.0, delta=1e-5).history
    [(1.1, 0.1, 10)]
    """
    path: Path
    client_id: str
    budget: float  # ε this device will ever spend
    delta: float
    accountant: str = "prv"
    history: list[tuple[float, float, int]] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)

    @classmethod
    def open(cls, state_dir: str | Path, client_id: str, budget: float, delta: float = 1e-5,
             accountant: str = "prv") -> PrivacyLedger:
        """Load this device's ledger from state_dir, or start an empty one (nothing is written yet)."""
        if budget <= 0 or not 0 < delta < 1:
            raise ValueError(f"privacy budget must be > 0 and 0 < delta < 1, got budget={budget}, delta={delta}")
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
        path = Path(state_dir).expanduser() / f"privacy-ledger-{client_id}.json"
        ledger = cls(path=path, client_id=str(client_id), budget=float(budget), delta=float(delta),
                     accountant=accountant)
        if path.exists():
            saved = json.loads(path.read_text())
            if saved.get("delta") != ledger.delta:
                raise ValueError(f"{path}: ledger kept with delta={saved.get('delta')}, asked for delta={delta}; "
                                 "ε values for different δ do not add up: keep δ fixed for a device's life")
            ledger.history = [(float(s), float(q), int(n)) for s, q, n in saved["history"]]
            ledger.rounds = list(saved.get("rounds", []))
        return ledger

    def spent(self, accountant: str | None = None) -> float:
        """ε spent so far (by this ledger's accountant unless another is named)."""
        return epsilon_for(self.history, self.delta, accountant or self.accountant)

    def spent_both(self) -> dict[str, float]:
        """ε spent so far by PRV and by RDP, side by side."""
        return {name: epsilon_for(self.history, self.delta, name) for name in ACCOUNTANTS}

    def epsilon_after(self, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """ε this device would have spent after a further phase of `steps` steps at (σ, q)."""
        return epsilon_for(self.history + [(noise_multiplier, sample_rate, steps)], self.delta, self.accountant)

    def check(self, noise_multiplier: float, sample_rate: float, steps: int) -> float:
        """Return ε after the planned steps, or raise PrivacyBudgetExceeded saying by how much it would overrun."""
        after = self.epsilon_after(noise_multiplier, sample_rate, steps)
        if after > self.budget:
            raise PrivacyBudgetExceeded(
                f"{self.client_id}: refusing to train: ε would reach {after:.3f} > budget {self.budget:g} "
                f"(δ={self.delta:g}, {self.accountant.upper()} accountant; spent so far {self.spent():.3f} "
                f"over {len(self.rounds)} rounds; this round: σ={noise_multiplier:.3g}, q={sample_rate:.3g}, "
                f"{steps} steps). Raise the noise, train fewer steps, or stop using this device's data.")
        return after

    def record(self, noise_multiplier: float, sample_rate: float, steps: int, round_id: int | None = None) -> None:
        """Append a finished phase and write the ledger atomically (tmp file, then rename)."""
        self.history.append((float(noise_multiplier), float(sample_rate), int(steps)))
        self.rounds.append({"round": round_id, "noise_multiplier": float(noise_multiplier),
                            "sample_rate": float(sample_rate), "steps": int(steps)})
        self.save()

    def save(self) -> None:
        """Write the ledger to its path (creating the state folder)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"version": LEDGER_VERSION, "client": self.client_id, "budget": self.budget,
                                   "delta": self.delta, "accountant": self.accountant,
                                   "history": self.history, "rounds": self.rounds}, indent=1))
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class RoundReport:
    """What one DP training round did to the model and to the budget."""
    loss: float
    steps: int
    sample_rate: float
    noise_multiplier: float
    epsilon_before: float
    epsilon_after: float
    epsilon_rdp_after: float


def mlp_to_torch(params: dict[str, np.ndarray]):
    """A torch copy of edge.federated.mlp's numpy MLP (w1: F x H becomes Linear(F, H).weight H x F)."""
    import torch
    from torch import nn

    hidden, classes = params["w1"].shape[1], params["w2"].shape[1]
    model = nn.Sequential(nn.Linear(params["w1"].shape[0], hidden), nn.ReLU(), nn.Linear(hidden, classes))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(np.ascontiguousarray(params["w1"].T)))
        model[0].bias.copy_(torch.from_numpy(params["b1"]))
        model[2].weight.copy_(torch.from_numpy(np.ascontiguousarray(params["w2"].T)))
        model[2].bias.copy_(torch.from_numpy(params["b2"]))
    return model


def torch_to_mlp(model) -> dict[str, np.ndarray]:
    """edge.federated.mlp numpy parameters from a torch MLP made by mlp_to_torch (after training)."""
    first, last = model[0], model[2]
    return {"w1": first.weight.detach().numpy().T.astype(np.float32).copy(),
            "b1": first.bias.detach().numpy().astype(np.float32).copy(),
            "w2": last.weight.detach().numpy().T.astype(np.float32).copy(),
            "b2": last.bias.detach().numpy().astype(np.float32).copy()}


def train_round(model, x: np.ndarray, y: np.ndarray, ledger: PrivacyLedger, *, noise_multiplier: float,
                max_grad_norm: float = 1.0, batch_size: int = 32, epochs: int = 1, lr: float = 0.1,
                seed: int = 0, round_id: int | None = None) -> RoundReport:
    """One round of local DP-SGD with Opacus, on top of this device's lifelong accountant.

    Checks the budget first (raises PrivacyBudgetExceeded before touching the data), preloads
    the ledger's history into the new PrivacyEngine's accountant so ε keeps accumulating,
    trains `epochs` epochs of Poisson-sampled batches (per-sample clipping to max_grad_norm,
    Gaussian noise σ·max_grad_norm), then records the round. `model` is trained in place
    (its parameters are updated; Opacus's wrapper is discarded).
    """
    with warnings.catch_warnings():
        # Routine Opacus notices (secure RNG off; full backward hook); see the lab 09 README.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return _train_round(model, x, y, ledger, noise_multiplier, max_grad_norm, batch_size, epochs, lr,
                            seed, round_id)


def _train_round(model, x, y, ledger, noise_multiplier, max_grad_norm, batch_size, epochs, lr, seed,
                 round_id) -> RoundReport:
    """The body of train_round, run with Opacus's routine warnings silenced."""
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    if len(x) == 0:
        raise ValueError(f"{ledger.client_id}: no training samples; this device's partition is empty")
    sample_rate = min(batch_size, len(x)) / len(x)
    steps = epochs * steps_per_epoch(len(x), batch_size)
    before = ledger.spent()
    after = ledger.check(noise_multiplier, sample_rate, steps)  # raises before any training
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    data = TensorDataset(torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64)))
    loader = DataLoader(data, batch_size=min(batch_size, len(x)), generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    engine = PrivacyEngine(accountant=ledger.accountant)
    engine.accountant.history = list(ledger.history)  # the device's whole past, not a fresh start
    private, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm, poisson_sampling=True,
        noise_generator=torch.Generator().manual_seed(seed + 1))
    loss_fn = torch.nn.CrossEntropyLoss()
    losses, done = [], 0
    while done < steps:  # Opacus yields about 1/q batches an epoch; stop exactly at the planned steps
        for xb, yb in loader:
            if done >= steps:
                break
            optimizer.zero_grad()
            logits = private(xb)  # xb: B, features (B may be 0: Poisson sampling can draw nobody)
            loss = loss_fn(logits, yb) if len(yb) else logits.sum() * 0.0
            loss.backward()
            if len(yb):
                losses.append(loss.item())
            optimizer.step()  # an empty batch still takes a noise-only step, and it is accounted
            done += 1
    ledger.record(noise_multiplier, sample_rate, steps, round_id)
    if engine.accountant.history and sum(n for *_, n in engine.accountant.history) != sum(
            n for *_, n in ledger.history):
        raise RuntimeError(f"{ledger.client_id}: Opacus counted "
                           f"{sum(n for *_, n in engine.accountant.history)} steps, the ledger "
                           f"{sum(n for *_, n in ledger.history)}; the accounting is out of step")
    return RoundReport(loss=float(np.mean(losses)) if losses else math.nan, steps=steps,
                       sample_rate=sample_rate, noise_multiplier=noise_multiplier, epsilon_before=before,
                       epsilon_after=after, epsilon_rdp_after=ledger.spent("rdp"))
