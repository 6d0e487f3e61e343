"""Lab 12's scenario, a private self-healing fleet, as steps the lab and ``compose/lab-12.yml`` share.

Devices stream predictions of a signed model without their frames; some cameras turn upside down;
the cloud detects the drift from the devices' error streams and names the drifted ones; each device's
window of labelled frames fills with what it sees now; a dp+he Flower run fine-tunes the deployed model
on those windows (DP-SGD on each device, FedAvg under CKKS); device 0, the fleet's key holder, decrypts
the aggregate; the cloud signs it once per runtime (ONNX, TFLite) and sends it; every device swaps.

``make lab-12`` starts the devices, the processor and the SuperNodes as local processes and calls
:func:`heal`; in compose every device, its SuperNode, the processor and the ServerApp are containers
and ``python -m cloud.fleet.scenario`` is the two one-shot services around them:

    python -m cloud.fleet.scenario setup --folder runs/compose-lab-12 --devices 2   # model, keys, frames
    python -m cloud.fleet.scenario heal --folder runs/compose-lab-12 --devices 2    # detect, retrain, publish

``heal`` waits for the same milestones as the lab, prints the same tables, writes ``summary.json`` and
``timeline.png`` into the folder and exits 0 only if every milestone was reached.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloud.labkit.milestones import MilestoneMissed, Milestones
from cloud.streaming.report import ScenarioFolder, print_tables
from cloud.streaming.scenario import accuracy

# Imported inside the functions that use them, to keep this module quick to import: kafka, matplotlib,
# rich, tenseal, torch (through the DP ledger's accountant), tensorflow (TFLite export).

MODEL_NAME = "digits-fleet"
WINDOW_SET = "window"  # the partition set the SuperNodes read: <data>/window/device-N.npz, written by each device
RUNTIMES = ("onnxruntime", "litert")
RUNTIME_LABELS = {"onnxruntime": "ONNX", "litert": "LiteRT"}  # short names for the results table
# The scenario's settings (lab 12's DEFAULTS and QUICK; compose/lab-12.yml runs the quick ones).
DEFAULTS = {"devices": 4, "drifted": 2, "drift_at": 20.0, "rate": 40.0, "window": 800, "rounds": 3,
            "local_epochs": 3, "lr": 0.75, "batch_size": 32, "noise_multiplier": 1.1, "max_grad_norm": 1.0,
            "budget": 8.0, "delta": 1e-5, "hidden": 32, "he_preset": "8192", "pretrain_epochs": 30,
            "after_update": 300, "cap": 900.0, "runtimes": "onnxruntime,litert", "seed": 0}
QUICK = {"devices": 2, "drifted": 1, "drift_at": 10.0, "window": 600, "rounds": 3, "after_update": 150}


def runtime_cycle(spec: str, devices: int) -> list[str]:
    """Each device's runtime from a comma-separated cycle: 'onnxruntime,litert' -> cam-0 ONNX, cam-1 LiteRT, ...

    >>> runtime_cycle("onnxruntime,litert", 3)
    ['onnxruntime', 'litert', 'onnxruntime']
    """
    cycle = [r.strip() for r in str(spec).split(",") if r.strip()]
    if not cycle or any(r not in RUNTIMES for r in cycle):
        raise ValueError(f"runtimes={spec!r}: a comma-separated cycle of {', '.join(RUNTIMES)}")
    return [cycle[i % len(cycle)] for i in range(devices)]


def window_file(data_dir: Path, device: int) -> Path:
    """Where device N keeps its window of labelled frames (and its SuperNode reads them)."""
    return Path(data_dir) / WINDOW_SET / f"device-{device}.npz"


def state_dir(data_dir: Path, device: int) -> Path:
    """Device N's private state beside its window: its DP ledger and the fleet's shared CKKS key."""
    return Path(data_dir) / WINDOW_SET / f"state-{device}"


@dataclass
class FleetModel:
    """What `setup` leaves for the fleet: digits-fleet@1 per runtime, its weights, the test split and frames."""
    bundles: dict[str, Path]
    public_key: Path
    weights: Path  # v1.npz, the MLP's parameters (the federated run's starting point)
    test_path: Path  # the server's central test split
    frames: Path  # the held-out digits the cameras stream
    test_accuracy: float
    keys: dict[str, Any]  # share_keys' answer: the public context's path, sizes

    def params(self) -> dict[str, np.ndarray]:
        """The deployed model's parameters."""
        with np.load(self.weights) as saved:
            return {k: saved[k] for k in saved.files}


def prepare_fleet(artifacts_dir: Path, data_dir: Path, devices: int, runtimes: list[str], *, hidden: int,
                  pretrain_epochs: int, he_preset: str, seed: int) -> FleetModel:
    """Train the MLP centrally, sign it as digits-fleet@1 per runtime, write the test split and frames, share CKKS keys."""
    from cloud.federated.deploy import publish_federated_model
    from cloud.ml.data import digits_split
    from cloud.ml.publish import bundles_dir
    from edge.federated.mlp import evaluate, init_params, train_sgd
    from edge.federated.private_client_app import share_keys
    from edge.serving.keys import PUBLIC_KEY_FILE
    from edge.serving.sources import save_frames

    data_dir = Path(data_dir)
    split = digits_split(seed=42)
    params = init_params(64, hidden, 10, seed=seed)
    params, _ = train_sgd(params, split.x_train, split.y_train, epochs=pretrain_epochs, lr=0.1, seed=seed)
    _, test_accuracy = evaluate(params, split.x_test, split.y_test)
    data_dir.mkdir(parents=True, exist_ok=True)
    np.savez(data_dir / "v1.npz", **params)
    np.savez(data_dir / "central_test.npz", x_test=split.x_test, y_test=split.y_test)
    save_frames(data_dir / "frames.npz", split.x_test, split.y_test)
    # Keys first: TenSEAL must be imported before the TFLite export loads TensorFlow (edge.private.he).
    keys = share_keys([state_dir(data_dir, i) for i in range(devices)], data_dir / "server", he_preset)
    bundles = {runtime: publish_federated_model(params, artifacts_dir, name=MODEL_NAME, version=1,
                                                metrics={"test_accuracy": test_accuracy}, runtime=runtime)
               for runtime in sorted(set(runtimes))}
    fleet = FleetModel(bundles, bundles_dir(artifacts_dir) / PUBLIC_KEY_FILE, data_dir / "v1.npz",
                       data_dir / "central_test.npz", data_dir / "frames.npz", float(test_accuracy),
                       {k: str(v) if isinstance(v, Path) else v for k, v in keys.items()})
    (data_dir / "fleet.json").write_text(json.dumps(
        {**{k: str(v) for k, v in vars(fleet).items() if isinstance(v, Path)},
         "bundles": {r: str(p) for r, p in bundles.items()}, "test_accuracy": fleet.test_accuracy,
         "keys": fleet.keys}, indent=2))
    return fleet


def load_fleet(data_dir: Path) -> FleetModel:
    """The FleetModel a `setup` wrote into ``data_dir/fleet.json``."""
    saved = json.loads((Path(data_dir) / "fleet.json").read_text())
    return FleetModel({r: Path(p) for r, p in saved["bundles"].items()}, Path(saved["public_key"]),
                      Path(saved["weights"]), Path(saved["test_path"]), Path(saved["frames"]),
                      saved["test_accuracy"], saved["keys"])


def drifted_devices(scenario: ScenarioFolder, last: int) -> list[str]:
    """Devices whose error rate over their last ``last`` labelled events is 0.25 above their first ``last``."""
    by_device: dict[str, list[int]] = {}
    for _, device, _, correct, _, _ in scenario.store.predictions():
        by_device.setdefault(device, []).append(1 - correct)
    return [d for d, errors in sorted(by_device.items())
            if len(errors) >= 2 * last and np.mean(errors[-last:]) > np.mean(errors[:last]) + 0.25]


def events_since(scenario: ScenarioFolder, since: float) -> int:
    """The fewest labelled events any device streamed since ``since`` (epoch seconds)."""
    counts = {name: 0 for name in scenario.names}
    for ts, device, *_ in scenario.store.predictions():
        if ts >= since and device in counts:
            counts[device] += 1
    return min(counts.values())


def window_since(data_dir: Path, device: int) -> float:
    """When the oldest frame in a device's window was seen (0 before the window was written)."""
    try:
        with np.load(window_file(data_dir, device)) as saved:
            return float(saved["t_first"]) if "t_first" in saved.files else 0.0
    except (OSError, ValueError, EOFError):
        return 0.0


def fl_config(a: dict[str, Any], devices: int, fleet: FleetModel):
    """The dp+he Flower run's settings: DP-SGD on each device's window, FedAvg under CKKS, from v1."""
    from cloud.federated.private_server_app import PrivateFlConfig

    return PrivateFlConfig(
        num_server_rounds=int(a["rounds"]), min_nodes=devices, round_timeout=300.0, timeout_floor=300.0,
        privacy="dp+he", partition_set=WINDOW_SET, test_path=str(fleet.test_path), hidden=int(a["hidden"]),
        local_epochs=int(a["local_epochs"]), lr=float(a["lr"]), batch_size=int(a["batch_size"]), seed=int(a["seed"]),
        noise_multiplier=float(a["noise_multiplier"]), max_grad_norm=float(a["max_grad_norm"]),
        dp_budgets=",".join(f"{float(a['budget']):g}" for _ in range(devices)), dp_delta=float(a["delta"]),
        he_preset=str(a["he_preset"]), he_context_path=str(fleet.keys["public_context"]),
        initial_model_path=str(fleet.weights))


def round_line(entry: dict, rounds: int) -> str:
    """One line per finished round: devices trained, ε per device, bytes up."""
    eps = " ".join(f"{r.get('partition_id', '?')}:ε{r['epsilon']:.2f}" for r in entry.get("train", []) if "epsilon" in r)
    return (f"round {entry['round']}/{rounds}: {len(entry.get('train', []))} devices trained  {eps}  "
            f"{entry.get('bytes_up', 0) / 1024:,.0f} KB up (ciphertexts)")


def decrypt_final(result, key_folder: Path, like: dict[str, np.ndarray], he_preset: str) -> dict[str, np.ndarray]:
    """The final aggregate, decrypted with the key holder's secret context (the server never could)."""
    from cloud.federated.private_server_app import ENCRYPTED_MODEL_FILE
    from edge.federated.mlp import PARAM_NAMES
    from edge.federated.private_client_app import load_key_holder
    from edge.private.he import flatten, unflatten

    if "completed" not in result.status or not result.journal.get("rounds_aggregated"):
        raise RuntimeError(f"the federated run ended {result.status} without a model: "
                           f"{result.journal.get('stopped') or result.journal.get('error')}")
    with np.load(result.out_dir / ENCRYPTED_MODEL_FILE) as saved:
        blobs = [saved[k].tobytes() for k in sorted(saved.files)]
    flat = load_key_holder(key_folder, he_preset).decrypt(blobs, len(flatten(like, PARAM_NAMES)))
    return unflatten(flat, like, PARAM_NAMES)


def publish_update(bootstrap: str, artifacts_dir: Path, params: dict[str, np.ndarray], test_path: Path,
                   runtimes: list[str], scenario: ScenarioFolder, rounds: int, log=print) -> dict[str, Any]:
    """Sign the new global model as digits-fleet@2 for each runtime in use and send each on model-updates.

    ONNX first (most devices run it), then TFLite: LiteRT devices swap a moment later. Writes the
    update into ``updates.json`` (what the dashboard and ScenarioFolder read) and returns it.
    """
    update: dict[str, Any] = {"model": f"{MODEL_NAME}@2", "reason": "federated retraining (dp+he) after drift",
                              "rounds": rounds, "bundle_bytes_by_runtime": {}}
    for runtime in sorted(set(runtimes)):
        bundle, sent, export_s = _send_bundle(bootstrap, artifacts_dir, params, test_path, runtime)
        log(f"{bundle.name} for {runtime}: exported and signed in {export_s:.1f} s, {sent:,} bytes on model-updates")
        prefix = "" if runtime == "onnxruntime" else "tflite_"
        update.update({f"{prefix}bundle": str(bundle), f"{prefix}bundle_bytes": sent,
                       f"{prefix}export_s": round(export_s, 2)})
        update["bundle_bytes_by_runtime"][runtime] = sent
        update.setdefault("published_at", time.time())
    (scenario.folder / "updates.json").write_text(json.dumps([update]))
    return update


def _send_bundle(bootstrap: str, artifacts_dir: Path, params, test_path: Path, runtime: str):
    """Sign digits-fleet@2 for ``runtime`` and send it inline; returns (bundle folder, bytes sent, export seconds)."""
    from kafka import KafkaProducer

    from cloud.federated.deploy import publish_federated_model
    from edge.federated.mlp import evaluate
    from edge.serving.bundle import pack_bundle
    from edge.wire.events import ModelUpdate
    from edge.wire.kafka import producer_config
    from edge.wire.topics import MODEL_UPDATES

    with np.load(test_path) as test:
        _, test_accuracy = evaluate(params, test["x_test"], test["y_test"])
    started = time.monotonic()
    bundle = publish_federated_model(params, artifacts_dir, name=MODEL_NAME, version=2,
                                     metrics={"test_accuracy": test_accuracy}, runtime=runtime)
    export_s = time.monotonic() - started
    data = pack_bundle(bundle, bundle.with_suffix(".tar.gz")).read_bytes()
    notice = ModelUpdate(device_id="cloud", model=f"{MODEL_NAME}@2", version=2, runtime=runtime,
                         archive_sha256=hashlib.sha256(data).hexdigest(), bundle_b64=base64.b64encode(data).decode(),
                         reason="federated retraining (dp+he) after drift")
    producer = KafkaProducer(**producer_config(bootstrap))
    try:
        producer.send(MODEL_UPDATES, notice.to_bytes()).get(timeout=30)
    finally:
        producer.close()
    return bundle, len(data), export_s


def records_with_features(bootstrap: str) -> tuple[int, int]:
    """Every record on every topic, read from the start: (records carrying a non-empty features list, records)."""
    from kafka import KafkaConsumer, TopicPartition

    from edge.wire.topics import TOPICS

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(t, p) for t in TOPICS for p in (consumer.partitions_for_topic(t) or [])]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found = records = 0
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    records += 1
                    try:
                        value = json.loads(record.value)
                    except (TypeError, ValueError):
                        continue
                    found += bool(isinstance(value, dict) and value.get("features"))
        return found, records
    finally:
        consumer.close()


@dataclass
class Healing:
    """What :func:`heal` saw: the drift, the devices it named, the run, the new model, the update, the records."""
    drift_time: float
    named: list[str]
    result: Any  # FlResult
    v2: dict[str, np.ndarray]
    update: dict[str, Any]
    features_found: int
    records: int


def heal(scenario: ScenarioFolder, fleet: FleetModel, a: dict[str, Any], milestones: Milestones, *,
         drift_time: Callable[[], float | None], run_federation: Callable, stop_devices: Callable[[], None],
         devices_stopped: Callable[[], bool], bootstrap: str, artifacts_dir: Path, data_dir: Path,
         runtimes: list[str], log=print, step=None, device_log: str | None = None,
         processor_log: str | None = None) -> Healing:
    """From the drift to the last event counted: detect, name, fill the windows, retrain privately, publish, swap.

    ``drift_time()`` is when the drifted cameras turned (None until known); ``run_federation(config,
    milestones, on_round)`` runs the dp+he Flower run on the devices' SuperNodes and returns its FlResult;
    ``stop_devices`` asks the devices to stop (compose devices stop themselves: a no-op) and
    ``devices_stopped`` says when all of them drained and exited. ``step`` prints a step's heading.
    """
    step = step or log
    n = len(scenario.names)
    status = scenario.progress_line
    milestones.wait("drift injected", lambda: (drift_time() or float("inf")) <= time.time(), status=status)
    drifted_at = float(drift_time())
    milestones.wait("drift detected", lambda: bool(scenario.store.alerts("drift")), status=status, log=processor_log)
    last = int(a["window"]) // 2
    detected_at = scenario.store.alerts("drift")[0][0]
    milestones.wait(f"{last} labelled events per device after the detection",
                    lambda: events_since(scenario, detected_at) >= last, status=status)
    named = drifted_devices(scenario, last)
    log(f"the cloud names the drifted devices from their error streams: {', '.join(named)}")
    milestones.wait(f"every device's window holds {a['window']} frames seen after the drift",
                    lambda: all(window_since(data_dir, i) >= drifted_at for i in range(n)), status=status)

    step(f"4. The answer is federated: {a['rounds']} rounds of DP-SGD on each device's window, FedAvg under CKKS")
    result = run_federation(fl_config(a, n, fleet), milestones, lambda entry: log(round_line(entry, a["rounds"])))

    step("5. Device 0 decrypts the aggregate; the cloud exports, signs and sends digits-fleet@2")
    v2 = decrypt_final(result, state_dir(data_dir, 0), fleet.params(), str(a["he_preset"]))
    update = publish_update(bootstrap, artifacts_dir, v2, fleet.test_path, runtimes, scenario,
                            len(result.journal["rounds"]), log=log)
    newest = update["model"]
    milestones.wait("every device on the update", lambda: all(m == newest for m in scenario.device_models()),
                    status=status, log=device_log)
    k = int(a["after_update"])
    milestones.wait(f"{k} labelled events per device on the update",
                    lambda: min(scenario.labelled_on_update()) >= k, status=status)
    stop_devices()
    milestones.wait("devices drained and stopped", devices_stopped, status=status)
    delivered = scenario.delivered()
    milestones.wait("counts settled", lambda: scenario.store.total() >= delivered, status=status)
    features_found, records = records_with_features(bootstrap)
    return Healing(drifted_at, named, result, v2, update, features_found, records)


def summarize(scenario: ScenarioFolder, fleet: FleetModel, healing: Healing, a: dict[str, Any], data_dir: Path,
              runtimes: list[str], milestones: Milestones, t0: float, started: float) -> dict[str, Any]:
    """The scenario's tables (title, columns, rows), metrics and timeline figure."""
    from edge.federated.mlp import evaluate, train_sgd
    from edge.private.dp import PrivacyLedger

    n, drifted = len(scenario.names), int(a["drifted"])
    rows = scenario.store.predictions()
    newest = healing.update["model"]
    drift_time = healing.drift_time
    stats = scenario.device_stats()
    counts = scenario.store.counts()
    device_rows, per_device = [], {}
    for i, name in enumerate(scenario.names):
        mine = [r for r in rows if r[1] == name]
        before = accuracy([r for r in mine if r[0] < drift_time])
        after_drift = accuracy([r for r in mine if r[0] >= drift_time and r[2] != newest])
        after_update = accuracy([r for r in mine if r[2] == newest])
        eps = PrivacyLedger.open(state_dir(data_dir, i), f"device-{i}", a["budget"], a["delta"]).spent()
        s = stats[name]
        per_device[name] = {"drifted": i < drifted, "runtime": s.get("runtime"), "accuracy_before_drift": before,
                            "accuracy_after_drift": after_drift, "accuracy_after_update": after_update,
                            "epsilon": eps, "budget": a["budget"], "model": s.get("model"),
                            "produced": sum(s.get("produced", {}).values()),
                            "acknowledged": sum(s.get("delivered", {}).values()), "processed": counts.get(name, 0)}
        device_rows.append((name, "yes" if i < drifted else "no", RUNTIME_LABELS[runtimes[i]], round(before, 3),
                            round(after_drift, 3), round(after_update, 3), f"{eps:.2f} / {a['budget']:g}",
                            str(s.get("model", "?")).replace(MODEL_NAME, "")))

    # The same drift answered centrally (lab 07's way, no privacy): fine-tune v1 on the union of the windows.
    v1 = fleet.params()
    windows = [np.load(window_file(data_dir, i)) for i in range(n)]
    x_train = np.concatenate([w["x_train"] for w in windows])
    y_train = np.concatenate([w["y_train"] for w in windows])
    x_val = np.concatenate([w["x_val"] for w in windows])
    y_val = np.concatenate([w["y_val"] for w in windows])
    central, _ = train_sgd(v1, x_train, y_train, epochs=a["local_epochs"] * a["rounds"], lr=0.1, seed=a["seed"])
    held_out = {name: round(float(evaluate(params, x_val, y_val)[1]), 4) for name, params in
                (("deployed @1", v1), ("federated dp+he @2", healing.v2), ("central retrain, no privacy", central))}

    plain_bytes = sum(np.asarray(p).nbytes for p in v1.values())
    fl_rows = []
    for entry in healing.result.journal["rounds"]:
        trained = len(entry.get("train", []))
        up = entry.get("bytes_up", 0) / max(trained, 1)
        fl_rows.append((entry["round"], trained, f"{up / 1024:,.0f} KB", f"{plain_bytes / 1024:,.1f} KB",
                        f"{up / plain_bytes:.0f}x", round(entry.get("seconds", 0.0), 1)))

    alerts = scenario.store.alerts("drift")
    detected = alerts[0][0] if alerts else None
    delay = None if detected is None else round(detected - drift_time, 2)
    summary = [("drift detected after (s)", delay),
               ("drifted devices named by the cloud", ", ".join(healing.named)),
               ("records on every topic / carrying frames", f"{healing.records:,} / {healing.features_found}"),
               ("processed events (distinct)", scenario.store.total()),
               ("dead letters", scenario.store.dead_letters()),
               ("milestones reached", len(milestones.reached))]
    tables = [
        (f"devices: {MODEL_NAME} accuracy before the drift, after it (old model), on the update",
         ["device", "drifted", "runtime", "before", "after drift", "on update", "ε / budget", "model"], device_rows),
        ("accuracy on the devices' held-out window frames", ["model", "accuracy"], list(held_out.items())),
        ("federated rounds: bytes each device sent", ["round", "devices", "encrypted", "plaintext", "ratio", "s"],
         fl_rows),
        ("lab-12 summary", ["measure", "value"], summary),
    ]
    metrics = {
        "devices": per_device, "drifted_named": healing.named, "drifted_actual": scenario.names[:drifted],
        "held_out_accuracy": held_out, "records": healing.records, "records_with_features": healing.features_found,
        "processed": scenario.store.total(), "dead_letters": scenario.store.dead_letters(),
        "fl_status": healing.result.status, "fl_rounds": len(healing.result.journal["rounds"]),
        "bytes_per_device_round": [r[2] for r in fl_rows], "plaintext_update_bytes": plain_bytes,
        "update_bundle_bytes": healing.update["bundle_bytes_by_runtime"], "detection_delay_s": delay,
        "milestones": [m for m, _ in milestones.reached], "milestones_s": dict(milestones.reached),
        "wall_s": round(time.time() - started, 1),
    }
    figure = timeline(rows, t0, drift_time, detected, healing.result.journal, scenario.names, drifted, newest)
    return {"tables": tables, "metrics": metrics, "figure": figure}


def timeline(rows, t0, drift_time, detected, journal, names, drifted, newest, bin_s: float = 2.0):
    """Each device's accuracy over time, with the drift, its detection, each FL round and the update marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, name in enumerate(names):
        mine = [(r[0] - t0, r[3]) for r in rows if r[1] == name]
        if not mine:
            continue
        ts, ok = np.asarray(mine).T
        edges = np.arange(0, ts.max() + bin_s, bin_s)
        centers = [(lo + hi) / 2 for lo, hi in zip(edges[:-1], edges[1:]) if ((ts >= lo) & (ts < hi)).sum() >= 5]
        values = [ok[(ts >= c - bin_s / 2) & (ts < c + bin_s / 2)].mean() for c in centers]
        ax.plot(centers, values, label=f"{name}{' (drifted)' if i < drifted else ''}",
                linestyle="-" if i < drifted else ":")
    ax.axvline(drift_time - t0, color="tab:red", linestyle="--", label="drift injected")
    if detected is not None:
        ax.axvline(detected - t0, color="tab:orange", linestyle="--", label="drift detected")
    started = journal.get("started_at")
    for entry in journal.get("rounds", []):
        if started and entry.get("seconds"):
            started += entry["seconds"]
            ax.axvline(started - t0, color="tab:gray", alpha=0.5, linewidth=1)
    swap = [r[0] for r in rows if r[2] == newest]
    if swap:
        ax.axvline(min(swap) - t0, color="tab:purple", linestyle="--", label=f"first prediction on {newest}")
    ax.set_xlabel("seconds since the devices started (grey: each federated round ends)")
    ax.set_ylabel(f"edge accuracy ({bin_s:g} s bins)")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Lab 12: drift on some cameras, answered by private federated retraining")
    return fig


# ---------------------------------------------------------------------------------------------- compose

def _settings(args) -> dict[str, Any]:
    """The quick scenario's settings with the command line's devices and after-update."""
    return {**DEFAULTS, **QUICK, "devices": args.devices, "drifted": args.drifted, "after_update": args.after_update,
            "window": args.window, "runtimes": args.runtimes}


def _cmd_setup(args, console) -> int:
    """Empty the scenario folder, then train and sign digits-fleet@1 and share the fleet's CKKS keys."""
    import shutil

    a = _settings(args)
    folder = Path(args.folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    fleet = prepare_fleet(Path(args.artifacts), folder / "fl-data", a["devices"], runtime_cycle(a["runtimes"], a["devices"]),
                          hidden=a["hidden"], pretrain_epochs=a["pretrain_epochs"], he_preset=a["he_preset"],
                          seed=a["seed"])
    for runtime, bundle in fleet.bundles.items():
        console.print(f"{bundle.name} for {runtime}: test accuracy {fleet.test_accuracy:.3f}; {bundle}")
    return 0


def _cmd_heal(args, console) -> int:
    """Follow the running fleet to its milestones, answering the drift; 0 only if every milestone was reached."""
    import matplotlib.pyplot as plt

    from cloud.federated.federation import Federation
    from cloud.federated.private_server_app import APP_DIR

    a = _settings(args)
    started = time.time()
    folder = Path(args.folder)
    data_dir = folder / "fl-data"
    scenario = ScenarioFolder(folder, a["devices"])
    fleet = load_fleet(data_dir)
    runtimes = runtime_cycle(a["runtimes"], a["devices"])
    drifted = scenario.names[:a["drifted"]]
    milestones = Milestones(args.cap, progress=lambda line: console.print(line, highlight=False), progress_every_s=10)

    def drift_time() -> float | None:
        """When the last drifted camera turns (each device's stats file says), None until all said."""
        times = [scenario.device_stats()[name].get("drift_at") for name in drifted]
        return None if None in times else max(times)

    federation = Federation(args.superlink, folder / "federation", 0, data_dir, console=console,
                            health_timeout_s=600, app_dir=APP_DIR)

    def run_federation(config, milestones, on_round):
        """Wait for every device's SuperNode, then run the dp+he run on them."""
        milestones.wait(f"{a['devices']} SuperNodes online", lambda: len(federation.online_nodes()) >= a["devices"])
        return federation.run(config, folder / "fl", milestones=milestones, on_round=on_round)

    try:
        milestones.wait(f"{a['devices']} devices streaming",
                        lambda: all(s.get("started_at") for s in scenario.device_stats().values()),
                        status=scenario.progress_line)
        t0 = min(s["started_at"] for s in scenario.device_stats().values())
        healing = heal(scenario, fleet, a, milestones, drift_time=drift_time, run_federation=run_federation,
                       stop_devices=lambda: None,  # each device stops itself after --stop-after-update readings
                       devices_stopped=lambda: all(s.get("final") for s in scenario.device_stats().values()),
                       bootstrap=args.bootstrap, artifacts_dir=Path(args.artifacts), data_dir=data_dir,
                       runtimes=runtimes, log=lambda line: console.print(line, highlight=False))
    except (MilestoneMissed, RuntimeError) as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    report = summarize(scenario, fleet, healing, a, data_dir, runtimes, milestones, t0, started)
    print_tables(console, report["tables"])
    (folder / "summary.json").write_text(json.dumps(report["metrics"], indent=2, default=str))
    report["figure"].savefig(folder / "timeline.png", dpi=110, bbox_inches="tight")
    plt.close(report["figure"])
    console.print(f"summary: {folder / 'summary.json'}; plot: {folder / 'timeline.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`setup` the fleet's model and keys, or `heal` a running fleet (compose/lab-12.yml's one-shot services)."""
    from rich.console import Console

    parser = argparse.ArgumentParser(prog="python -m cloud.fleet.scenario", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("setup", "heal"))
    parser.add_argument("--folder", required=True, help="the scenario's folder (fl-data/, processed.db, cam-N.json)")
    parser.add_argument("--artifacts", default="artifacts", help="where the signing key and bundles live")
    parser.add_argument("--devices", type=int, default=QUICK["devices"], help="devices cam-0 .. cam-N-1")
    parser.add_argument("--drifted", type=int, default=QUICK["drifted"], help="the first N devices drift")
    parser.add_argument("--window", type=int, default=QUICK["window"], help="the devices' --window")
    parser.add_argument("--after-update", type=int, default=QUICK["after_update"],
                        help="labelled events per device on the update (the devices' --stop-after-update)")
    parser.add_argument("--runtimes", default=DEFAULTS["runtimes"], help="the devices' runtimes, cycled")
    parser.add_argument("--bootstrap", default="kafka:19092", help="the broker, as the containers reach it")
    parser.add_argument("--superlink", default="superlink:8000", help="the SuperLink's Control API")
    parser.add_argument("--cap", type=float, default=900.0, help="seconds for all milestones together")
    args = parser.parse_args(argv)
    console = Console(width=120)
    return _cmd_setup(args, console) if args.command == "setup" else _cmd_heal(args, console)


if __name__ == "__main__":
    sys.exit(main())
