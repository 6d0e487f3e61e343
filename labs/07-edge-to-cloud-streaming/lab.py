"""Lab 07: devices stream predictions to Kafka; the cloud learns online, detects drift, retrains and updates them."""

from __future__ import annotations

import time

from cloud.dashboard.server import lab_dashboard
from cloud.labkit.milestones import Milestones
from cloud.stack import procs
from cloud.stack.cpu_limit import CpuLimit
from cloud.streaming.report import ScenarioFolder, summarize
from cloud.streaming.scenario import (
    prepare_initial_model,
    start_device,
    start_processor,
    start_responder,
    timeline_figure,
    wait_ready,
)

TITLE = "Edge to cloud: streaming, online learning and drift response"
# The run is a story with milestones, not a stopwatch: devices stream for drift_at seconds, then the
# drift starts and the lab waits, for at most `cap` seconds more, until drift was detected, the update
# published, every device applied it and streamed `after_update` labelled events on it, and the counts
# settled. A busy laptop or a slow device takes longer and passes the same milestones.
DEFAULTS = {"devices": 3, "drift_at": 25.0, "cap": 180.0, "after_update": 400, "rate": 40.0, "processors": 1,
            "glitch_rate": 0.01, "window": 600, "epochs": 15, "retrain_epochs": 15, "tflite": 1,
            "slow_device_cpu": 0.0, "dashboard": 0, "seed": 0}
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
    scenario = ScenarioFolder(folder, a["devices"])
    started: list = []
    slow = CpuLimit(a["slow_device_cpu"]) if a["slow_device_cpu"] else None  # cam-0 as a Raspberry Pi 3
    # dashboard=1 serves the live dashboard (cloud/dashboard) over this run's files while the lab runs.
    with lab_dashboard(bool(a["dashboard"]), ctx.console, stream_folder=folder), ctx.stack(services=("broker",)) as stack:
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
            status = scenario.progress_line
            running = [(f"processor-{i}", p) for i, (p, _, _) in enumerate(processors)] + [
                ("drift responder", responder[0])] + [(f"cam-{i}", p) for i, (p, _, _) in enumerate(devices)]

            def exited() -> str | None:
                """A process of the scenario that exited early (waiting on is pointless)."""
                gone = [f"{name} exited with code {p.returncode}" for name, p in running if p.poll() is not None]
                return "; ".join(gone) or None

            k = int(a["after_update"])
            processor_log, drift_log = str(processors[0][2]), str(responder[2])
            milestones.wait("drift injected", lambda: time.time() >= drift_time, status=status, failed=exited)
            milestones.wait("drift detected", lambda: bool(scenario.store.alerts("drift")), log=processor_log,
                            status=status, failed=exited)
            milestones.wait("update published", lambda: scenario.newest() is not None, log=drift_log, status=status,
                            failed=exited)
            milestones.wait("every device on the update", lambda: all(m == scenario.newest() for m in scenario.device_models()),
                            log=str(devices[0][2]), status=status, failed=exited)
            milestones.wait(f"{k} labelled events per device on the update",
                            lambda: min(scenario.labelled_on_update()) >= k, log=processor_log, status=status, failed=exited)
            running = running[:-len(devices)]  # the devices are stopped on purpose now
            for proc, _, _ in devices:
                procs.stop_pid(proc.pid)
            milestones.wait("devices drained and stopped", lambda: all(p.poll() is not None for p, _, _ in devices),
                            log=str(devices[0][2]), status=status)
            delivered = scenario.delivered()
            milestones.wait("counts settled", lambda: scenario.store.total() >= delivered, log=processor_log,
                            status=lambda: f"{scenario.store.total()} of {delivered} delivered events processed",
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
    report = summarize(scenario, drift_started=drift_time, drift_all=drift_time, drift_after_s=a["drift_at"],
                       started_at=lab_started, tflite=bool(a["tflite"]))
    ctx.table("events per device", ["device", "produced", "acknowledged", "processed (once)", "model at the end"],
              report["device_rows"])
    ctx.table("lab-07 summary", ["measure", "value"], report["summary_rows"])
    startup["first prediction processed"] = report["metrics"]["first_prediction_s"]
    line = report["timeline"]
    if line["rows"]:
        ctx.save_plot(timeline_figure(line["rows"], t0, drift_time, line["detected"], line["updated"],
                                      line["anomalies"]), "timeline")
    return {
        **report["metrics"],
        "startup": {k: round(v, 2) for k, v in startup.items()},
        "milestones": [name for name, _ in milestones.reached],
        "milestones_s": dict(milestones.reached),
        "wall_s": round(time.time() - lab_started, 1),
        "slow_device_throttled_s": round(throttled, 2) if slow is not None else None,
    }
