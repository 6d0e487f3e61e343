"""Lab 07: devices stream predictions to Kafka; the cloud learns online, detects drift, retrains and updates them."""

from __future__ import annotations

import time

TITLE = "Edge to cloud: streaming, online learning and drift response"
DEFAULTS = {"devices": 3, "duration": 60.0, "drift_at": 25.0, "rate": 40.0, "processors": 1,
            "glitch_rate": 0.01, "window": 600, "epochs": 15, "retrain_epochs": 15, "tflite": 1, "seed": 0}
# Quick mode skips the TFLite bundle: TensorFlow's import and the conversion cost about 10-20 s of CPU
# on a 2-core machine, in the middle of the streaming; tests/unit/test_drift_export.py checks the TFLite path.
QUICK = {"duration": 30.0, "drift_at": 10.0, "rate": 40.0, "window": 360, "epochs": 8, "retrain_epochs": 12,
         "tflite": 0}


def run(ctx) -> dict:
    """Start the broker, processors, the drift responder and devices; inject drift; summarise."""
    from cloud.stack import procs
    from cloud.streaming.scenario import (
        accuracy,
        prepare_initial_model,
        read_json,
        start_device,
        start_processor,
        start_responder,
        timeline_figure,
        wait_ready,
    )
    from cloud.streaming.store import StoreReader

    a = ctx.args
    lab_started = time.time()
    folder = ctx.run.path / "stream"
    folder.mkdir()
    store_path = folder / "processed.db"
    store = StoreReader(store_path)
    started: list = []
    with ctx.stack(services=("broker",)) as stack:
        bootstrap = stack.bootstrap_servers
        try:
            # Start-up order for a short time to the first processed prediction: the processor first
            # (it imports River while its group join waits on the broker), the devices at once (their
            # events wait in Kafka until the processor has partitions), and the drift responder last:
            # it imports torch, which the other processes should not wait for, and it is only needed
            # once the drift starts.
            ctx.step("1. the model devices start with")
            model = prepare_initial_model(ctx.settings.artifacts_dir, seed=a["seed"], epochs=a["epochs"])
            ctx.console.print(model.origin)
            startup = {"model ready": time.time() - lab_started}

            ctx.step("2. the cloud's stream processor(s)")
            processors = [start_processor(bootstrap, store_path, folder, f"processor-{i}", seed=a["seed"])
                          for i in range(a["processors"])]
            started += [p for p, _, _ in processors]

            ctx.step(f"3. {a['devices']} devices stream for {a['duration']:.0f} s; drift at {a['drift_at']:.0f} s")
            t0 = time.time()
            drift_time = t0 + a["drift_at"]
            devices = [start_device(bootstrap, model, folder, f"cam-{i}", rate=a["rate"], duration=a["duration"],
                                    drift_at=drift_time, glitch_rate=a["glitch_rate"], seed=a["seed"] + i)
                       for i in range(a["devices"])]
            started += [p for p, _, _ in devices]
            for proc, ready, log in processors:
                wait_ready(ready, proc, log, f"processor ({log})")
                ctx.console.print(f"{ready.stem} joined the group and got partitions "
                                  f"{time.time() - lab_started:.1f} s after the lab started")
            startup["processor joined"] = time.time() - lab_started
            responder = start_responder(bootstrap, model, ctx.settings.artifacts_dir, folder, a["window"],
                                        a["retrain_epochs"], a["seed"], tflite=bool(a["tflite"]), since=t0)
            started.append(responder[0])
            # It reads from the devices' start (t0) on, so it misses nothing however long torch takes to import.
            wait_ready(responder[1], responder[0], responder[2], "drift responder", timeout=90)
            ctx.console.print(f"drift responder is following alerts and predictions from the devices' start "
                              f"(ready {time.time() - lab_started:.1f} s after the lab started)")
            next_line = time.monotonic() + 5
            while any(p.poll() is None for p, _, _ in devices):
                time.sleep(0.2)
                if time.monotonic() >= next_line:
                    next_line += 5
                    ctx.console.print(progress_line(t0, devices, store, folder), highlight=False)
            ctx.console.print(progress_line(t0, devices, store, folder), highlight=False)
            device_stats = {f"cam-{i}": read_json(stats, {}) for i, (_, stats, _) in enumerate(devices)}
            delivered = sum(sum(s.get("delivered", {}).values()) for s in device_stats.values())
            procs.wait_until(lambda: store.total() >= delivered, f"processors to catch up to {delivered} events",
                             30, None, processors[0][2])
        finally:
            for proc in reversed(started):
                procs.stop_pid(proc.pid)
            ctx.console.print(f"stopped {len(started)} processes")

    ctx.step("4. results")
    rows = store.predictions()
    counts = store.counts()
    drift_alerts = store.alerts("drift")
    anomalies = [r[0] for r in store.alerts("anomaly")]
    updates = read_json(folder / "updates.json", [])
    processor_stats = [read_json(folder / f"processor-{i}.json", {}) for i in range(a["processors"])]
    duplicates = sum(s.get("duplicates", 0) for s in processor_stats)
    detected = drift_alerts[0][0] if drift_alerts else None
    first_source = drift_alerts[0][1] if drift_alerts else None
    delay_events = sum(1 for r in rows if drift_time <= r[0] <= first_source) if first_source else None
    newest = updates[-1]["model"] if updates else None
    updated_at = updates[-1]["published_at"] if updates else None
    before = [r for r in rows if r[0] < drift_time]
    during = [r for r in rows if r[0] >= drift_time and r[2] != newest]
    after = [r for r in rows if newest and r[2] == newest]
    span = max(r[5] for r in rows) - min(r[5] for r in rows) if rows else float("nan")

    device_rows = []
    for name, stats in device_stats.items():
        produced = sum(stats.get("produced", {}).values())
        device_rows.append((name, produced, sum(stats.get("delivered", {}).values()), counts.get(name, 0),
                            stats.get("model", "?")))
    ctx.table("events per device", ["device", "produced", "acknowledged", "processed (once)", "model at the end"],
              device_rows)
    summary = [
        ("processed events (distinct)", store.total()), ("duplicates dropped", duplicates),
        ("dead letters", store.dead_letters()), ("anomaly alerts", len(anomalies)),
        ("drift injected at (s)", a["drift_at"]),
        ("drift detected after (s)", None if detected is None else round(detected - drift_time, 2)),
        ("detection delay (labelled events)", delay_events),
        ("model update published after drift (s)", None if updated_at is None else round(updated_at - drift_time, 2)),
        ("edge accuracy before drift", accuracy(before)), ("edge accuracy after drift, old model", accuracy(during)),
        ("edge accuracy after update", accuracy(after)),
        ("online model accuracy (whole run)", accuracy(rows, 4)),
        ("held-out window accuracy before -> after retrain",
         f"{updates[-1]['accuracy_before']:.3f} -> {updates[-1]['accuracy_after']:.3f}" if updates else "-"),
        ("TFLite bundle of the update (KB, seconds after ONNX)",
         f"{updates[-1]['tflite_bundle_bytes'] / 1024:.0f} KB, {updates[-1]['tflite_s']} s"
         if updates and "tflite_bundle_bytes" in updates[-1] else "off" if not a["tflite"] else "-"),
        ("cloud throughput (events/s while streaming)", store.total() / span if span == span and span > 0 else 0.0),
        ("lab start to first processed prediction (s)",
         round((store.first_processed_at() or lab_started) - lab_started, 2)),
    ]
    startup["first prediction processed"] = (store.first_processed_at() or lab_started) - lab_started
    ctx.table("lab-07 summary", ["measure", "value"], summary)
    if rows:
        fig = timeline_figure(rows, t0, drift_time, detected, updated_at, anomalies)
        ctx.save_plot(fig, "timeline")
    return {
        "devices": {name: {"produced": p, "acknowledged": d, "processed": n, "model": m}
                    for name, p, d, n, m in device_rows},
        "processed": store.total(), "duplicates_dropped": duplicates, "dead_letters": store.dead_letters(),
        "anomaly_alerts": len(anomalies), "drift_alerts": len(drift_alerts),
        "detection_delay_s": None if detected is None else round(detected - drift_time, 2),
        "detection_delay_events": delay_events,
        "update_after_drift_s": None if updated_at is None else round(updated_at - drift_time, 2),
        "new_model": newest, "accuracy_before_drift": accuracy(before), "accuracy_after_drift": accuracy(during),
        "accuracy_after_update": accuracy(after), "online_accuracy": accuracy(rows, 4),
        "updates": updates, "first_prediction_s": round((store.first_processed_at() or lab_started) - lab_started, 2),
        "throughput_eps": round(store.total() / span, 1) if span == span and span > 0 else 0.0,
        "startup": {k: round(v, 2) for k, v in startup.items()},
    }


def progress_line(t0: float, devices, store, folder) -> str:
    """One line: seconds in, each device's acknowledged/processed counts, cloud totals."""
    from cloud.streaming.scenario import read_json

    counts = store.counts()
    parts = []
    for proc, stats_path, _ in devices:
        stats = read_json(stats_path, {})
        name = stats.get("device", stats_path.stem)
        parts.append(f"{name} {sum(stats.get('delivered', {}).values())}/{counts.get(name, 0)} "
                     f"{stats.get('model', '?').split('@')[-1].join(['v', ''])}")
    updates = read_json(folder / "updates.json", [])
    return (f"t={time.time() - t0:5.1f}s  " + "  ".join(parts) + f"  | cloud {store.total()} processed, "
            f"drift alerts {len(store.alerts('drift'))}, updates {len(updates)}")
