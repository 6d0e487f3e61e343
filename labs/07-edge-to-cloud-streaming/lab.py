"""Lab 07: devices stream predictions to Kafka; the cloud learns online, detects drift, retrains and updates them."""

from __future__ import annotations

import time

from cloud.labkit.milestones import Milestones
from cloud.stack import procs
from cloud.stack.cpu_limit import CpuLimit
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

TITLE = "Edge to cloud: streaming, online learning and drift response"
# The run is a story with milestones, not a stopwatch: devices stream for drift_at seconds, then the
# drift starts and the lab waits, for at most `cap` seconds more, until drift was detected, the update
# published, every device applied it and streamed `after_update` labelled events on it, and the counts
# settled. A busy laptop or a slow device takes longer and passes the same milestones.
DEFAULTS = {"devices": 3, "drift_at": 25.0, "cap": 180.0, "after_update": 400, "rate": 40.0, "processors": 1,
            "glitch_rate": 0.01, "window": 600, "epochs": 15, "retrain_epochs": 15, "tflite": 1,
            "slow_device_cpu": 0.0, "seed": 0}
# Quick mode skips the TFLite bundle: TensorFlow's import and the conversion cost about 10-20 s of CPU
# on a 2-core machine, in the middle of the streaming; tests/unit/test_drift_export.py checks the TFLite path.
QUICK = {"drift_at": 10.0, "cap": 150.0, "after_update": 200, "window": 360, "epochs": 8, "retrain_epochs": 12,
         "tflite": 0}


def run(ctx) -> dict:
    """Start the broker, processors, the drift responder and devices; inject drift; run to the milestones; summarise."""
    a = ctx.args
    lab_started = time.time()
    folder = ctx.run.path / "stream"
    folder.mkdir()
    store_path = folder / "processed.db"
    store = StoreReader(store_path)
    started: list = []
    slow = CpuLimit(a["slow_device_cpu"]) if a["slow_device_cpu"] else None  # cam-0 as a Raspberry Pi 3
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

            ctx.step(f"3. {a['devices']} devices stream; drift at {a['drift_at']:.0f} s, then the lab waits for "
                     f"its milestones (cap {a['cap']:.0f} s)")
            t0, t0_clock = time.time(), time.monotonic()
            drift_time = t0 + a["drift_at"]
            # Devices stream until the lab stops them; their own duration is only a safety net.
            devices = [start_device(bootstrap, model, folder, f"cam-{i}", rate=a["rate"],
                                    duration=a["drift_at"] + a["cap"] + 60, drift_at=drift_time,
                                    glitch_rate=a["glitch_rate"], seed=a["seed"] + i)
                       for i in range(a["devices"])]
            started += [p for p, _, _ in devices]
            if slow is not None:
                slow.add(devices[0][0].pid)
                ctx.console.print(f"cam-0 is held to {a['slow_device_cpu']:g} of one core ({slow.kind} cgroup)")
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

            milestones = Milestones(a["drift_at"] + a["cap"], start=t0_clock, progress=lambda line: ctx.console.print(
                line, highlight=False))
            status = lambda: progress_line(devices, store, folder)  # noqa: E731
            running = [(f"processor-{i}", p) for i, (p, _, _) in enumerate(processors)] + [
                ("drift responder", responder[0])] + [(f"cam-{i}", p) for i, (p, _, _) in enumerate(devices)]

            def exited() -> str | None:
                """A process of the scenario that exited early (waiting on is pointless)."""
                gone = [f"{name} exited with code {p.returncode}" for name, p in running if p.poll() is not None]
                return "; ".join(gone) or None

            def newest() -> str | None:
                """The model the last update published, or None."""
                updates = read_json(folder / "updates.json", [])
                return updates[-1]["model"] if updates else None

            def device_models() -> list[str]:
                """The model each device runs now, from its stats file."""
                return [read_json(stats, {}).get("model", "?") for _, stats, _ in devices]

            def labelled_on_update() -> list[int]:
                """Labelled events each device streamed on the update."""
                on = store.labelled_on(newest() or "-")
                return [on.get(f"cam-{i}", (0, None))[0] for i in range(len(devices))]

            k = int(a["after_update"])
            processor_log, drift_log = str(processors[0][2]), str(responder[2])
            milestones.wait("drift injected", lambda: time.time() >= drift_time, status=status, failed=exited)
            milestones.wait("drift detected", lambda: bool(store.alerts("drift")), log=processor_log,
                            status=status, failed=exited)
            milestones.wait("update published", lambda: newest() is not None, log=drift_log, status=status,
                            failed=exited)
            milestones.wait("every device on the update", lambda: all(m == newest() for m in device_models()),
                            log=str(devices[0][2]), status=status, failed=exited)
            milestones.wait(f"{k} labelled events per device on the update",
                            lambda: min(labelled_on_update()) >= k, log=processor_log, status=status, failed=exited)
            running = running[:-len(devices)]  # the devices are stopped on purpose now
            for proc, _, _ in devices:
                procs.stop_pid(proc.pid)
            milestones.wait("devices drained and stopped", lambda: all(p.poll() is not None for p, _, _ in devices),
                            log=str(devices[0][2]), status=status)
            device_stats = {f"cam-{i}": read_json(stats, {}) for i, (_, stats, _) in enumerate(devices)}
            delivered = sum(sum(s.get("delivered", {}).values()) for s in device_stats.values())
            milestones.wait("counts settled", lambda: store.total() >= delivered, log=processor_log,
                            status=lambda: f"{store.total()} of {delivered} delivered events processed",
                            failed=exited)
            ctx.console.print(status(), highlight=False)
        finally:
            for proc in reversed(started):
                procs.stop_pid(proc.pid)
            if slow is not None:
                throttled = slow.throttled_s()
                ctx.console.print(f"cam-0 was held back {throttled:.1f} s by its CPU limit")
                slow.close()
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
    on_update = store.labelled_on(newest) if newest else {}
    # Detection to every device swapped: the last device's first prediction on the update.
    swapped = (round(max(first for _, first in on_update.values()) - detected, 2)
               if detected is not None and len(on_update) == a["devices"] else None)
    phases = updates[-1].get("phases_s", {}) if updates else {}

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
        ("drift response: " + ", ".join(phases) + " (s)", " + ".join(f"{v:.1f}" for v in phases.values()) or "-"),
        ("detection to every device swapped (s)", swapped),
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
        "milestones": [name for name, _ in milestones.reached],
        "milestones_s": dict(milestones.reached),
        "response_phases_s": phases, "swapped_after_detection_s": swapped,
        "labelled_on_update_min": min((n for n, _ in on_update.values()), default=0),
        "wall_s": round(time.time() - lab_started, 1),
        "slow_device_throttled_s": round(throttled, 2) if slow is not None else None,
    }


def progress_line(devices, store, folder) -> str:
    """One line: each device's acknowledged/processed counts and model version, cloud totals."""
    counts = store.counts()
    parts = []
    for proc, stats_path, _ in devices:
        stats = read_json(stats_path, {})
        name = stats.get("device", stats_path.stem)
        parts.append(f"{name} {sum(stats.get('delivered', {}).values())}/{counts.get(name, 0)} "
                     f"{stats.get('model', '?').split('@')[-1].join(['v', ''])}")
    updates = read_json(folder / "updates.json", [])
    return ("  ".join(parts) + f"  | cloud {store.total()} processed, "
            f"drift alerts {len(store.alerts('drift'))}, updates {len(updates)}")
