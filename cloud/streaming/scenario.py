"""The edge-to-cloud streaming scenario's moving parts as processes: devices, processors, the drift responder.

Lab 07, the streaming benchmark and the reliability tests start the same real processes
(``python -m edge.streaming``, ``python -m cloud.streaming.processor``, ``python -m cloud.streaming.drift``)
through these helpers, wait on their health (a ready file, never a sleep), and read the results back
from the processor's store (``cloud.streaming.store.StoreReader``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloud.ml.data import digits_split
from cloud.ml.models import build_torch_cnn
from cloud.ml.publish import bundles_dir, ensure_signing_key, publish_onnx_bundle
from cloud.ml.training import save_torch_model, torch_accuracy, train_torch
from cloud.settings import KIT_ROOT
from cloud.stack import procs
from cloud.stack.local import venv_env
from cloud.streaming.drift import MODEL_NAME
from edge.serving.bundle import load_bundle
from edge.serving.keys import PUBLIC_KEY_FILE, load_public_key
from edge.serving.sources import save_frames

# Imported inside the functions that use them, to keep this module quick to import: matplotlib, torch.


@dataclass
class InitialModel:
    """What devices start with: a signed bundle, the public key, frames to stream, and the torch weights."""
    bundle: Path
    public_key: Path
    frames: Path
    weights: Path
    accuracy: float
    origin: str


def prepare_initial_model(artifacts_dir: Path, seed: int = 0, epochs: int = 15) -> InitialModel:
    """Train the digits CNN and publish it as digits-stream@1, or reuse what an earlier run left in artifacts/lab-07."""
    folder = Path(artifacts_dir) / "lab-07" / f"seed{seed}-e{epochs}"
    bundle, weights, frames = folder / f"{MODEL_NAME}@1", folder / "digits_cnn.pt", folder / "frames.npz"
    info = folder / "model.json"
    key = ensure_signing_key(artifacts_dir)
    public_key = bundles_dir(artifacts_dir) / PUBLIC_KEY_FILE
    if info.exists() and bundle.exists() and weights.exists() and frames.exists():
        meta = json.loads(info.read_text())

        try:
            load_bundle(bundle, load_public_key(public_key), check_model=False)
            return InitialModel(bundle, public_key, frames, weights, meta["accuracy"],
                                f"reused {bundle} (trained by an earlier run)")
        except ValueError:
            pass  # signed with an older key: train again
    import torch


    torch.set_num_threads(1)
    split = digits_split(seed=42)
    model = build_torch_cnn()
    train_torch(model, split, epochs=epochs, seed=seed, device="cpu")
    accuracy = torch_accuracy(model, split.x_test, split.y_test)
    folder.mkdir(parents=True, exist_ok=True)
    save_torch_model(model, folder)
    publish_onnx_bundle(model, MODEL_NAME, 1, folder, key, metrics={"test_accuracy": accuracy})
    save_frames(frames, split.x_test, split.y_test)  # held-out frames the devices stream
    info.write_text(json.dumps({"accuracy": accuracy, "epochs": epochs, "seed": seed}))
    return InitialModel(bundle, public_key, frames, weights, accuracy,
                        f"trained the CNN ({epochs} epochs, test accuracy {accuracy:.3f}) and signed {bundle.name}")


def child_env() -> dict[str, str]:
    """Environment for child processes: the venv's bin on PATH, unbuffered output."""
    return venv_env({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})


def start_processor(bootstrap: str, store: Path, folder: Path, name: str, group: str = "stream-processor",
                    seed: int = 0):
    """Start ``python -m cloud.streaming.processor`` (owned: it dies with us); returns (process, ready file, log)."""
    ready, log = folder / f"{name}.ready", folder / f"{name}.log"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "cloud.streaming.processor", "--bootstrap", bootstrap, "--store", str(store),
           "--group", group, "--name", name, "--seed", str(seed), "--ready-file", str(ready),
           "--stats", str(folder / f"{name}.json")]
    return procs.start_process(cmd, log, env=child_env(), cwd=KIT_ROOT), ready, log


def start_responder(bootstrap: str, model: InitialModel, artifacts_dir: Path, folder: Path,
                    window: int, epochs: int, seed: int = 0, tflite: bool = False, since: float | None = None):
    """Start ``python -m cloud.streaming.drift``; returns (process, ready file, log).

    ``tflite`` also publishes TFLite bundles; ``since`` (epoch seconds) makes it read events from then on,
    so it may start after the devices without missing the drift.
    """
    ready, log = folder / "drift.ready", folder / "drift.log"
    cmd = [sys.executable, "-m", "cloud.streaming.drift", "--bootstrap", bootstrap, "--weights", str(model.weights),
           "--bundles", str(folder / "bundles"), "--keys", str(artifacts_dir), "--window", str(window),
           "--epochs", str(epochs), "--seed", str(seed), "--results", str(folder / "updates.json"),
           "--ready-file", str(ready)] + (["--tflite"] if tflite else []) + (
               ["--since", f"{since:.3f}"] if since is not None else [])
    return procs.start_process(cmd, log, env=child_env(), cwd=KIT_ROOT), ready, log


def start_device(bootstrap: str, model: InitialModel, folder: Path, name: str, *, rate: float, duration: float,
                 drift_at: float | None = None, glitch_rate: float = 0.0, seed: int = 0, count: int | None = None,
                 extra: Sequence[str] = ()):
    """Start ``python -m edge.streaming`` for one device (``extra``: more of its flags); returns (process, stats, log)."""
    stats, log = folder / f"{name}.json", folder / f"{name}.log"
    cmd = [sys.executable, "-m", "edge.streaming", "--bootstrap", bootstrap, "--bundle", str(model.bundle),
           "--key", str(model.public_key), "--frames", str(model.frames), "--name", name, "--rate", str(rate),
           "--duration", str(duration), "--glitch-rate", str(glitch_rate), "--seed", str(seed),
           "--stats", str(stats), "--work-dir", str(folder / name)]
    if drift_at is not None:
        cmd += ["--drift-at", f"{drift_at:.3f}"]
    if count is not None:
        cmd += ["--count", str(count)]
    cmd += list(extra)
    return procs.start_process(cmd, log, env=child_env(), cwd=KIT_ROOT), stats, log


def wait_ready(ready: Path, proc, log: Path, what: str, timeout: float = 60.0) -> float:
    """Wait for a process's ready file (its health signal); returns seconds taken."""
    return procs.wait_until(ready.exists, what, timeout, proc, log)


def read_json(path: Path, default: Any = None) -> Any:
    """A JSON file's content, or default when it is missing or half-written."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return default


def accuracy(rows: list[tuple], index: int = 3) -> float:
    """Mean of the correct column (nan when empty)."""
    values = [r[index] for r in rows if r[index] is not None]
    return float(np.mean(values)) if values else float("nan")


def timeline_figure(rows: list[tuple], t0: float, drift_at: float, detected: float | None,
                    updated: float | None, anomalies: list[float], bin_s: float = 2.0):
    """Accuracy of the edge model and the online model over time, with drift, detection and update marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = np.asarray([r[0] for r in rows]) - t0
    edge = np.asarray([r[3] for r in rows], dtype=float)
    online = np.asarray([np.nan if r[4] is None else r[4] for r in rows], dtype=float)
    edges = np.arange(0, (ts.max() if len(ts) else 1) + bin_s, bin_s)
    centers, edge_acc, online_acc = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (ts >= lo) & (ts < hi)
        if sel.sum() >= 5:
            centers.append((lo + hi) / 2)
            edge_acc.append(np.nanmean(edge[sel]))
            online_acc.append(np.nanmean(online[sel]) if np.isfinite(online[sel]).any() else np.nan)
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(centers, edge_acc, label="edge CNN (on devices)", color="tab:blue")
    ax.plot(centers, online_acc, label="online model (River, cloud)", color="tab:green")
    ax.axvline(drift_at - t0, color="tab:red", linestyle="--", label="drift injected")
    if detected is not None:
        ax.axvline(detected - t0, color="tab:orange", linestyle="--", label="drift detected")
    if updated is not None:
        ax.axvline(updated - t0, color="tab:purple", linestyle="--", label="model update published")
    if anomalies:
        ax.plot(np.asarray(anomalies) - t0, [0.02] * len(anomalies), "kx", label="anomaly alerts")
    ax.set_xlabel("seconds since the devices started")
    ax.set_ylabel(f"accuracy ({bin_s:g} s bins)")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Lab 07: edge and online model accuracy around a drift")
    return fig
