"""Lab 12: a private, self-healing edge fleet: drift on some cameras, answered by DP + CKKS federated retraining."""

from __future__ import annotations

import json
import time

import numpy as np

from cloud.labkit.milestones import Milestones
from cloud.stack import procs

TITLE = "Capstone: a private, self-healing edge fleet (drift -> private federated retraining -> signed update)"
# The story has milestones, not a stopwatch: devices stream a signed model; `drifted` of them turn upside
# down at drift_at; the cloud detects it and names them; each device's window of labelled frames fills
# with what it sees now; a dp+he Flower run fine-tunes the deployed model on those windows (no frame leaves
# a device, the server cannot read an update); device 0, the fleet's key holder, decrypts the aggregate;
# the cloud signs it and sends it; every device swaps and streams `after_update` labelled events on it.
DEFAULTS = {"devices": 4, "drifted": 2, "drift_at": 20.0, "rate": 40.0, "window": 800, "rounds": 3,
            "local_epochs": 3, "lr": 0.75, "batch_size": 32, "noise_multiplier": 1.1, "max_grad_norm": 1.0,
            "budget": 8.0, "delta": 1e-5, "hidden": 32, "he_preset": "8192", "pretrain_epochs": 30,
            "after_update": 300, "cap": 900.0, "dashboard": 1, "seed": 0}
QUICK = {"devices": 2, "drifted": 1, "drift_at": 10.0, "window": 600, "rounds": 3, "after_update": 150,
         "dashboard": 0}
MODEL_NAME = "digits-fleet"
WINDOW_SET = "window"  # the partition set the SuperNodes read: <data>/window/device-N.npz, written by each device


def run(ctx) -> dict:
    """Deploy, stream, drift, detect, retrain privately on the devices, publish, swap, summarise."""
    from cloud.dashboard.server import lab_dashboard
    from cloud.federated.federation import Federation
    from cloud.federated.private_server_app import APP_DIR, PrivateFlConfig
    from cloud.streaming.report import ScenarioFolder
    from cloud.streaming.scenario import InitialModel, start_device, start_processor, wait_ready
    from edge.federated.private_client_app import share_keys

    a = ctx.args
    n, drifted = int(a["devices"]), int(a["drifted"])
    if not 1 <= drifted < n:
        raise ValueError(f"drifted={drifted} with devices={n}: drift some devices and keep at least one upright")
    started = time.time()
    folder = ctx.run.path / "stream"
    data_dir = ctx.run.path / "fl-data"
    folder.mkdir()
    scenario = ScenarioFolder(folder, n)

    ctx.step("1. The model the fleet starts with: an MLP trained centrally, exported to ONNX and signed")
    v1, deployed, test_path, frames = _initial_model(ctx, data_dir)
    ctx.console.print(f"{MODEL_NAME}@1: test accuracy {deployed['test_accuracy']:.3f}; {deployed['bundle']}")
    keys = share_keys([data_dir / WINDOW_SET / f"state-{i}" for i in range(n)], data_dir / "server", a["he_preset"])
    ctx.console.print(f"device 0 made the CKKS keys: secret context {keys['secret_bytes']:,} bytes to the "
                      f"{n} devices' state folders, public context {keys['public_bytes']:,} bytes to the server")
    model = InitialModel(deployed["bundle"], deployed["public_key"], frames, data_dir / "v1.npz",
                         deployed["test_accuracy"], "")

    started_procs: list = []
    with lab_dashboard(bool(a["dashboard"]), ctx.console, stream_folder=folder, fl_folders=[ctx.run.path / "fl"]), \
            ctx.stack(services=("broker", "superlink")) as stack:
        bootstrap = stack.bootstrap_servers
        try:
            turned = ", ".join(f"cam-{i}" for i in range(drifted))
            ctx.step(f"2. {n} devices stream predictions without their frames; {turned} turn upside down at "
                     f"{a['drift_at']:.0f} s")
            processor = start_processor(bootstrap, folder / "processed.db", folder, "processor-0", seed=ctx.seed)
            started_procs.append(processor[0])
            t0, t0_clock = time.time(), time.monotonic()
            drift_time = t0 + a["drift_at"]
            devices = [start_device(bootstrap, model, folder, f"cam-{i}", rate=a["rate"], duration=a["cap"] + 120,
                                    drift_at=drift_time if i < drifted else None, seed=ctx.seed + i,
                                    extra=["--no-features", "--window", str(a["window"]), "--window-file",
                                           str(data_dir / WINDOW_SET / f"device-{i}.npz")])
                       for i in range(n)]
            started_procs += [p for p, _, _ in devices]
            wait_ready(processor[1], processor[0], processor[2], "the processor's group join")

            ctx.step(f"3. {n} SuperNodes, one per device, each reading only its own device's window")
            federation = Federation(stack.superlink_address, ctx.run.path / "federation", n, data_dir,
                                    console=ctx.console, health_timeout_s=ctx.settings.health_timeout_s * 4,
                                    app_dir=APP_DIR)
            milestones = Milestones(a["drift_at"] + a["cap"], start=t0_clock, progress_every_s=10,
                                    progress=lambda line: ctx.console.print(line, highlight=False))
            status = scenario.progress_line
            with federation:
                milestones.wait("drift injected", lambda: time.time() >= drift_time, status=status)
                milestones.wait("drift detected", lambda: bool(scenario.store.alerts("drift")), status=status,
                                log=str(processor[2]))
                last = int(a["window"]) // 2
                detected_at = scenario.store.alerts("drift")[0][0]
                milestones.wait(f"{last} labelled events per device after the detection",
                                lambda: _events_since(scenario, detected_at) >= last, status=status)
                named = _drifted_devices(scenario, last)
                ctx.console.print(f"the cloud names the drifted devices from their error streams: {', '.join(named)}")
                milestones.wait(f"every device's window holds {a['window']} frames seen after the drift",
                                lambda: all(_window_since(data_dir, i) >= drift_time for i in range(n)),
                                status=status)

                ctx.step(f"4. The answer is federated: {a['rounds']} rounds of DP-SGD on each device's window, "
                         "FedAvg under CKKS")
                budgets = ",".join(f"{a['budget']:g}" for _ in range(n))
                config = PrivateFlConfig(
                    num_server_rounds=a["rounds"], min_nodes=n, round_timeout=300.0, timeout_floor=300.0,
                    privacy="dp+he", partition_set=WINDOW_SET, test_path=str(test_path), hidden=a["hidden"],
                    local_epochs=a["local_epochs"], lr=a["lr"], batch_size=a["batch_size"], seed=ctx.seed,
                    noise_multiplier=a["noise_multiplier"], max_grad_norm=a["max_grad_norm"], dp_budgets=budgets,
                    dp_delta=a["delta"], he_preset=a["he_preset"], he_context_path=str(keys["public_context"]),
                    initial_model_path=str(data_dir / "v1.npz"))
                result = federation.run(config, ctx.run.path / "fl", milestones=milestones,
                                        on_round=lambda entry: ctx.console.print(_round_line(entry, a["rounds"])))

            ctx.step("5. Device 0 decrypts the aggregate; the cloud exports, signs and sends digits-fleet@2")
            v2 = _decrypt_final(result, data_dir / WINDOW_SET / "state-0", v1, a["he_preset"])
            bundle, sent = _publish_update(bootstrap, ctx.settings.artifacts_dir, v2, test_path)
            ctx.console.print(f"{bundle.name}: {sent:,} bytes on model-updates (signed ONNX bundle)")
            # What the dashboard and ScenarioFolder read as "the updates", as lab 07's responder writes them.
            (folder / "updates.json").write_text(json.dumps([{
                "model": f"{MODEL_NAME}@2", "published_at": time.time(), "bundle_bytes": sent,
                "reason": "federated retraining (dp+he) after drift", "rounds": len(result.journal["rounds"])}]))
            newest = f"{MODEL_NAME}@2"
            milestones.wait("every device on the update", lambda: all(m == newest for m in scenario.device_models()),
                            status=status, log=str(devices[0][2]))
            k = int(a["after_update"])
            on_update = lambda: [scenario.store.labelled_on(newest).get(f"cam-{i}", (0, 0))[0]  # noqa: E731
                                 for i in range(n)]
            milestones.wait(f"{k} labelled events per device on the update", lambda: min(on_update()) >= k,
                            status=status)
            for proc, _, _ in devices:
                procs.stop_pid(proc.pid)
            milestones.wait("devices drained and stopped", lambda: all(p.poll() is not None for p, _, _ in devices),
                            status=status)
            delivered = scenario.delivered()
            milestones.wait("counts settled", lambda: scenario.store.total() >= delivered, status=status)
            features_found, records = _records_with_features(bootstrap)
        finally:
            for proc in reversed(started_procs):
                procs.stop_pid(proc.pid)

    ctx.step("6. Results")
    return _results(ctx, scenario, result, v1, v2, data_dir, test_path, drift_time, t0, drifted, named,
                    milestones, features_found, records, started)


def _initial_model(ctx, data_dir):
    """Train the MLP centrally on the digits, sign it as digits-fleet@1; write the server's test split and frames."""
    from cloud.federated.deploy import publish_federated_model
    from cloud.ml.data import digits_split
    from cloud.ml.publish import bundles_dir
    from edge.federated.mlp import evaluate, init_params, train_sgd
    from edge.serving.keys import PUBLIC_KEY_FILE
    from edge.serving.sources import save_frames

    a = ctx.args
    split = digits_split(seed=42)
    params = init_params(64, a["hidden"], 10, seed=ctx.seed)
    params, _ = train_sgd(params, split.x_train, split.y_train, epochs=a["pretrain_epochs"], lr=0.1, seed=ctx.seed)
    _, accuracy = evaluate(params, split.x_test, split.y_test)
    data_dir.mkdir(parents=True, exist_ok=True)
    np.savez(data_dir / "v1.npz", **params)
    test_path = data_dir / "central_test.npz"
    np.savez(test_path, x_test=split.x_test, y_test=split.y_test)
    frames = data_dir / "frames.npz"
    save_frames(frames, split.x_test, split.y_test)  # the held-out digits the cameras stream
    bundle = publish_federated_model(params, ctx.settings.artifacts_dir, name=MODEL_NAME, version=1,
                                     metrics={"test_accuracy": accuracy})
    return params, {"bundle": bundle, "public_key": bundles_dir(ctx.settings.artifacts_dir) / PUBLIC_KEY_FILE,
                    "test_accuracy": accuracy}, test_path, frames


def _drifted_devices(scenario, last: int) -> list[str]:
    """Devices whose error rate over their last ``last`` labelled events is 0.25 above their first ``last``."""
    by_device: dict[str, list[int]] = {}
    for _, device, _, correct, _, _ in scenario.store.predictions():
        by_device.setdefault(device, []).append(1 - correct)
    named = [d for d, errors in sorted(by_device.items())
             if len(errors) >= 2 * last and np.mean(errors[-last:]) > np.mean(errors[:last]) + 0.25]
    return named


def _events_since(scenario, since: float) -> int:
    """The fewest labelled events any device streamed since ``since`` (epoch seconds)."""
    counts = {name: 0 for name in scenario.names}
    for ts, device, *_ in scenario.store.predictions():
        if ts >= since and device in counts:
            counts[device] += 1
    return min(counts.values())


def _window_since(data_dir, device: int) -> float:
    """When the oldest frame in a device's window was seen (0 before the window was written)."""
    try:
        with np.load(data_dir / WINDOW_SET / f"device-{device}.npz") as saved:
            return float(saved["t_first"]) if "t_first" in saved.files else 0.0
    except (OSError, ValueError, EOFError):
        return 0.0


def _round_line(entry: dict, rounds: int) -> str:
    """One line per finished round: devices trained, ε per device, bytes up."""
    eps = " ".join(f"{r.get('partition_id', '?')}:ε{r['epsilon']:.2f}" for r in entry.get("train", []) if "epsilon" in r)
    return (f"round {entry['round']}/{rounds}: {len(entry.get('train', []))} devices trained  {eps}  "
            f"{entry.get('bytes_up', 0) / 1024:,.0f} KB up (ciphertexts)")


def _decrypt_final(result, key_folder, like, he_preset: str) -> dict[str, np.ndarray]:
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


def _publish_update(bootstrap: str, artifacts_dir, params, test_path):
    """Sign the new global model as digits-fleet@2 and send it on model-updates; returns (bundle, bytes sent)."""
    import base64
    import hashlib

    from kafka import KafkaProducer

    from cloud.federated.deploy import publish_federated_model
    from edge.federated.mlp import evaluate
    from edge.serving.bundle import pack_bundle
    from edge.wire.events import ModelUpdate
    from edge.wire.kafka import producer_config
    from edge.wire.topics import MODEL_UPDATES

    with np.load(test_path) as test:
        _, accuracy = evaluate(params, test["x_test"], test["y_test"])
    bundle = publish_federated_model(params, artifacts_dir, name=MODEL_NAME, version=2,
                                     metrics={"test_accuracy": accuracy})
    data = pack_bundle(bundle, bundle.with_suffix(".tar.gz")).read_bytes()
    notice = ModelUpdate(device_id="cloud", model=f"{MODEL_NAME}@2", version=2,
                         archive_sha256=hashlib.sha256(data).hexdigest(), bundle_b64=base64.b64encode(data).decode(),
                         reason="federated retraining (dp+he) after drift")
    producer = KafkaProducer(**producer_config(bootstrap))
    try:
        producer.send(MODEL_UPDATES, notice.to_bytes()).get(timeout=30)
    finally:
        producer.close()
    return bundle, len(data)


def _records_with_features(bootstrap: str) -> tuple[int, int]:
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


def _results(ctx, scenario, result, v1, v2, data_dir, test_path, drift_time, t0, drifted, named, milestones,
             features_found, records, started) -> dict:
    """Tables, the timeline plot and the metrics: accuracy per device, ε per device, bytes per round."""
    from cloud.streaming.scenario import accuracy
    from edge.federated.mlp import evaluate, train_sgd
    from edge.private.dp import PrivacyLedger

    a = ctx.args
    n = int(a["devices"])
    rows = scenario.store.predictions()
    newest = f"{MODEL_NAME}@2"
    stats = scenario.device_stats()
    counts = scenario.store.counts()
    device_rows, per_device = [], {}
    for i, name in enumerate(scenario.names):
        mine = [r for r in rows if r[1] == name]
        before = accuracy([r for r in mine if r[0] < drift_time])
        after_drift = accuracy([r for r in mine if r[0] >= drift_time and r[2] != newest])
        after_update = accuracy([r for r in mine if r[2] == newest])
        ledger = PrivacyLedger.open(data_dir / WINDOW_SET / f"state-{i}", f"device-{i}", a["budget"], a["delta"])
        eps = ledger.spent()
        s = stats[name]
        per_device[name] = {"drifted": i < drifted, "accuracy_before_drift": before,
                            "accuracy_after_drift": after_drift, "accuracy_after_update": after_update,
                            "epsilon": eps, "budget": a["budget"], "model": s.get("model"),
                            "produced": sum(s.get("produced", {}).values()),
                            "acknowledged": sum(s.get("delivered", {}).values()), "processed": counts.get(name, 0)}
        device_rows.append((name, "yes" if i < drifted else "no", round(before, 3), round(after_drift, 3),
                            round(after_update, 3), f"{eps:.2f} / {a['budget']:g}",
                            str(s.get("model", "?")).replace(MODEL_NAME, "")))
    ctx.table(f"devices: {MODEL_NAME} accuracy before the drift, after it (old model), on the update",
              ["device", "drifted", "before", "after drift", "on update", "ε / budget", "model"], device_rows)

    # The same drift answered centrally (lab 07's way, no privacy): fine-tune v1 on the union of the windows.
    windows = [np.load(data_dir / WINDOW_SET / f"device-{i}.npz") for i in range(n)]
    x_train = np.concatenate([w["x_train"] for w in windows])
    y_train = np.concatenate([w["y_train"] for w in windows])
    x_val = np.concatenate([w["x_val"] for w in windows])
    y_val = np.concatenate([w["y_val"] for w in windows])
    central, _ = train_sgd(v1, x_train, y_train, epochs=a["local_epochs"] * a["rounds"], lr=0.1, seed=ctx.seed)
    held_out = {name: evaluate(params, x_val, y_val)[1] for name, params in
                (("deployed @1", v1), ("federated dp+he @2", v2), ("central retrain, no privacy", central))}
    held_out = {name: round(float(value), 4) for name, value in held_out.items()}
    ctx.table("accuracy on the devices' held-out window frames", ["model", "accuracy"], list(held_out.items()))

    plain_bytes = sum(np.asarray(p).nbytes for p in v1.values())
    fl_rows = []
    for entry in result.journal["rounds"]:
        trained = len(entry.get("train", []))
        up = entry.get("bytes_up", 0) / max(trained, 1)
        fl_rows.append((entry["round"], trained, f"{up / 1024:,.0f} KB", f"{plain_bytes / 1024:,.1f} KB",
                        f"{up / plain_bytes:.0f}x", round(entry.get("seconds", 0.0), 1)))
    ctx.table("federated rounds: bytes each device sent", ["round", "devices", "encrypted", "plaintext", "ratio",
                                                            "s"], fl_rows)

    alerts = scenario.store.alerts("drift")
    detected = alerts[0][0] if alerts else None
    summary = [("drift detected after (s)", None if detected is None else round(detected - drift_time, 2)),
               ("drifted devices named by the cloud", ", ".join(named)),
               ("records on every topic / carrying frames", f"{records:,} / {features_found}"),
               ("processed events (distinct)", scenario.store.total()),
               ("dead letters", scenario.store.dead_letters()),
               ("milestones reached", len(milestones.reached))]
    ctx.table("lab-12 summary", ["measure", "value"], summary)
    ctx.save_plot(_timeline(rows, t0, drift_time, detected, result.journal, scenario.names, drifted, newest),
                  "timeline")
    return {
        "devices": per_device, "drifted_named": named, "drifted_actual": scenario.names[:drifted],
        "held_out_accuracy": held_out, "records": records, "records_with_features": features_found,
        "processed": scenario.store.total(), "dead_letters": scenario.store.dead_letters(),
        "fl_status": result.status, "fl_rounds": len(result.journal["rounds"]),
        "bytes_per_device_round": [r[2] for r in fl_rows], "plaintext_update_bytes": plain_bytes,
        "detection_delay_s": None if detected is None else round(detected - drift_time, 2),
        "milestones": [m for m, _ in milestones.reached], "milestones_s": dict(milestones.reached),
        "wall_s": round(time.time() - started, 1),
    }


def _timeline(rows, t0, drift_time, detected, journal, names, drifted, newest, bin_s: float = 2.0):
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
