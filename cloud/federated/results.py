"""Read federated runs: a line per round, a summary row per setting, accuracy curves, a centralized baseline."""

from __future__ import annotations

from typing import Any

import numpy as np

from cloud.federated.federation import FlResult
from edge.federated.mlp import evaluate, init_params, train_sgd


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


def summarize(result: FlResult, centralized: float) -> dict[str, Any]:
    """Final accuracy, rounds to 90 % of centralized, bytes and seconds per round, dropouts of one run."""
    rounds = result.rounds
    curve = [r["central"]["accuracy"] for r in rounds]
    devices_final = [r.get("eval_accuracy") for r in rounds[-1]["evaluate"]] if rounds[-1]["evaluate"] else []
    return {
        "final_accuracy": curve[-1],
        "rounds_to_90pct": rounds_to_reach(curve, 0.9 * centralized),
        "bytes_per_round": float(np.mean([r["bytes_down"] + r["bytes_up"] for r in rounds])),
        "seconds_per_round": float(np.mean([r["seconds"] for r in rounds])),
        "dropouts": sum(len(r["dropouts"]) for r in rounds),
        "curve": curve,
        "initial_accuracy": result.journal["central_initial"]["accuracy"],
        "devices_final_accuracy": devices_final,
        "run_seconds": result.seconds,
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
