"""Read federated runs (lab 08's and lab 11's private ones): a line per round, a summary per setting, curves, a baseline."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.federated.mlp import evaluate, init_params, train_sgd

# Imported inside the functions that use them, to keep this module quick to import: matplotlib.


@dataclass
class FlResult:
    """What a finished run left: its id, status, journal, model file and wall time."""
    run_id: int
    status: str
    journal: dict[str, Any]
    model_path: Path
    seconds: float
    out_dir: Path
    rounds: list[dict[str, Any]] = field(default_factory=list)


def centralized_baseline(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, epochs: int,
                         lr: float, batch_size: int, hidden: int, seed: int) -> list[float]:
    """Train the same MLP on all the devices' data pooled in one place; test accuracy after each epoch."""
    params = init_params(x.shape[1], hidden, 10, seed=seed)
    curve = []
    for epoch in range(epochs):
        params, _ = train_sgd(params, x, y, epochs=1, lr=lr, batch_size=batch_size, seed=seed * 1000 + epoch)
        curve.append(evaluate(params, x_test, y_test)[1])
    return curve


def round_line(name: str, entry: dict[str, Any], rounds: int) -> str:
    """One line per finished round: central accuracy, weighted train loss, devices' held-out accuracy, time."""
    devices = sorted(entry["train"], key=lambda r: r["partition_id"])
    # Each device scores the global model it received on its own held-out data before training on it.
    held_out = " ".join(f"{r['partition_id']}:{r['received_accuracy']:.2f}" for r in devices)
    dropped = len({d["node_id"] for d in entry["dropouts"]})
    return (f"{name:<15} round {entry['round']:>2}/{rounds}  acc {entry['central']['accuracy']:.3f}  "
            f"loss {entry.get('train_loss', float('nan')):.3f}  {entry['seconds']:4.1f} s  "
            f"devices' acc {held_out}" + (f"  [yellow]{dropped} dropped[/]" if dropped else ""))


def rounds_to_reach(curve: list[float], target: float) -> int | None:
    """The first round (1-based) whose accuracy reaches target, or None."""
    return next((i + 1 for i, acc in enumerate(curve) if acc >= target), None)


def round_bytes(entry: dict[str, Any]) -> int:
    """Bytes a round moved: the global model down to the devices plus their updates back up."""
    return entry["bytes_down"] + entry["bytes_up"]


def round_costs(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Mean bytes and seconds per round over the given rounds."""
    return {"bytes_per_round": float(np.mean([round_bytes(r) for r in rounds])),
            "seconds_per_round": float(np.mean([r["seconds"] for r in rounds]))}


def summarize(result: FlResult, centralized: float) -> dict[str, Any]:
    """Final accuracy, rounds to 90 % of centralized, bytes and seconds per round, dropouts of one run."""
    rounds = result.rounds
    curve = [r["central"]["accuracy"] for r in rounds]
    devices_final = [r.get("eval_accuracy") for r in rounds[-1]["evaluate"]] if rounds[-1]["evaluate"] else []
    return {
        "final_accuracy": curve[-1],
        "rounds_to_90pct": rounds_to_reach(curve, 0.9 * centralized),
        **round_costs(rounds),
        "dropouts": sum(len(r["dropouts"]) for r in rounds),
        "curve": curve,
        "initial_accuracy": result.journal["central_initial"]["accuracy"],
        "devices_final_accuracy": devices_final,
        "run_seconds": result.seconds,
    }


def refusing_device(error: dict[str, Any]) -> str:
    """The device named in a privacy-budget refusal ('device-2: refusing to train ...'), else its node id."""
    found = re.search(r"device-(\d+): refusing", error["reason"])
    return found.group(1) if found else f"node {error['node_id']}"


def private_round_line(name: str, entry: dict[str, Any], rounds: int) -> str:
    """One line per private round: central accuracy (plaintext modes), devices' accuracy, ε, refusals, bytes, time."""
    central = entry.get("central")
    acc = f"acc {central['accuracy']:.3f}" if central else "acc  (hidden)" if entry.get("aggregated") else "not aggregated"
    devices = sorted(entry["train"], key=lambda r: r["partition_id"])
    eps = " ".join(f"{r['partition_id']}:ε{r['epsilon']:.2f}" for r in devices if "epsilon" in r)
    refused = sorted(refusing_device(e) for e in entry.get("refusals", []))
    received = " ".join(f"{r['received_accuracy']:.2f}" for r in devices)
    return (f"{name:<6} round {entry['round']}/{rounds}  {acc}  devices' acc {received}  {eps}  "
            f"{round_bytes(entry) / 1e3:,.0f} KB  {entry['seconds']:.1f} s"
            + (f"  [yellow]refused: device {', '.join(map(str, refused))} (budget)[/]" if refused else ""))


def summarize_private(result: FlResult, final: dict[str, np.ndarray], x_test: np.ndarray, y_test: np.ndarray,
                      devices: int) -> dict[str, Any]:
    """Accuracy (test and devices' held-out), refusals, bytes and seconds per aggregated round of a private run.

    ``final`` is the final global model in plaintext (decrypted by a key holder in HE modes: the
    server cannot). ``epsilon`` is left as one None per device for the caller to fill from the
    devices' own ledgers.
    """
    rounds = result.rounds
    evaluations = {r["partition_id"]: r for r in rounds[-1]["evaluate"]}
    n = sum(r["num_examples"] for r in evaluations.values())
    aggregated = [r for r in rounds if r.get("aggregated")]
    # Devices' held-out accuracy of the global model they received at the start of each round, then the final one.
    curve = [float(np.average([t["received_accuracy"] for t in r["train"]], weights=[t["num_examples"] for t in r["train"]]))
             for r in rounds if r["train"]]
    held_out = sum(r["eval_accuracy"] * r["num_examples"] for r in evaluations.values()) / n
    return {
        "test_accuracy": evaluate(final, x_test, y_test)[1],
        "held_out_accuracy": held_out,
        "curve": curve + [held_out],
        "epsilon": [None] * devices,
        "refusals": " ".join(f"{r['round']}:{d}" for r in rounds
                             for d in sorted(refusing_device(e) for e in r.get("refusals", []))),
        "rounds_aggregated": len(aggregated),
        **round_costs(aggregated),
        "stopped": result.journal.get("stopped"),
    }


def plot_accuracy(curves: dict[str, list[float]], initial: float, centralized: float):
    """Central test accuracy per round for each setting, against the centralized line and 90 % of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, curve in curves.items():
        style = "--" if "drop" in name else "-"  # the dropout run would hide under the IID line
        ax.plot(range(len(curve) + 1), [initial, *curve], style, marker="o", markersize=3, label=name)
    ax.axhline(centralized, color="black", linestyle="--", linewidth=1, label=f"centralized {centralized:.3f}")
    ax.axhline(0.9 * centralized, color="grey", linestyle=":", linewidth=1, label="90 % of centralized")
    ax.set_xlabel("round")
    ax.set_ylabel("central test accuracy")
    ax.set_ylim(0, 1.0)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Federated digits MLP: accuracy per round")
    fig.tight_layout()
    return fig
