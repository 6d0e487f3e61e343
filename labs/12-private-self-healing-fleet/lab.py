"""Lab 12: a private, self-healing edge fleet: drift on some cameras, answered by DP + CKKS federated retraining."""

from __future__ import annotations

import time

from cloud.fleet import scenario as fleet
from cloud.labkit.milestones import Milestones
from cloud.stack import procs

TITLE = "Capstone: a private, self-healing edge fleet (drift -> private federated retraining -> signed update)"
# The story has milestones, not a stopwatch: devices stream a signed model; `drifted` of them turn upside
# down at drift_at; the cloud detects it and names them; each device's window of labelled frames fills
# with what it sees now; a dp+he Flower run fine-tunes the deployed model on those windows (no frame leaves
# a device, the server cannot read an update); device 0, the fleet's key holder, decrypts the aggregate;
# the cloud signs it and sends it; every device swaps and streams `after_update` labelled events on it.
# `runtimes` cycles over the devices: cam-0 ONNX Runtime, cam-1 LiteRT (a TFLite bundle of the same
# weights), cam-2 ONNX Runtime, ...; every update is signed once per runtime in use.
# The steps live in cloud/fleet/scenario.py, which compose/lab-12.yml runs too.
DEFAULTS = {**fleet.DEFAULTS, "dashboard": 1}
QUICK = {**fleet.QUICK, "dashboard": 0}


def run(ctx) -> dict:
    """Deploy, stream, drift, detect, retrain privately on the devices, publish, swap, summarise."""
    from cloud.dashboard.server import lab_dashboard
    from cloud.federated.federation import Federation
    from cloud.federated.private_server_app import APP_DIR, CLIENT_PRELOAD
    from cloud.streaming.report import ScenarioFolder
    from cloud.streaming.scenario import InitialModel, start_device, start_processor, wait_ready

    a = ctx.args
    n, drifted = int(a["devices"]), int(a["drifted"])
    if not 1 <= drifted < n:
        raise ValueError(f"drifted={drifted} with devices={n}: drift some devices and keep at least one upright")
    runtimes = fleet.runtime_cycle(a["runtimes"], n)
    started = time.time()
    folder = ctx.run.path / "stream"
    data_dir = ctx.run.path / "fl-data"
    folder.mkdir()
    scenario = ScenarioFolder(folder, n)

    ctx.step("1. The model the fleet starts with: an MLP trained centrally, signed for each runtime in use")
    model = fleet.prepare_fleet(ctx.settings.artifacts_dir, data_dir, n, runtimes, hidden=a["hidden"],
                                pretrain_epochs=a["pretrain_epochs"], he_preset=a["he_preset"], seed=ctx.seed)
    for runtime, bundle in model.bundles.items():
        ctx.console.print(f"{fleet.MODEL_NAME}@1 for {runtime}: test accuracy {model.test_accuracy:.3f}; {bundle}")
    ctx.console.print(f"device 0 made the CKKS keys: secret context {model.keys['secret_bytes']:,} bytes to the "
                      f"{n} devices' state folders, public context {model.keys['public_bytes']:,} bytes to the server")
    starts = {runtime: InitialModel(bundle, model.public_key, model.frames, model.weights, model.test_accuracy, "")
              for runtime, bundle in model.bundles.items()}

    started_procs: list = []
    with lab_dashboard(bool(a["dashboard"]), ctx.console, stream_folder=folder, fl_folders=[ctx.run.path / "fl"]), \
            ctx.stack(services=("broker", "superlink")) as stack:
        bootstrap = stack.bootstrap_servers
        try:
            turned = ", ".join(f"cam-{i}" for i in range(drifted))
            ctx.step(f"2. {n} devices stream predictions without their frames; {turned} turn upside down at "
                     f"{a['drift_at']:.0f} s")
            ctx.console.print("runtimes: " + ", ".join(f"cam-{i} {r}" for i, r in enumerate(runtimes)))
            processor = start_processor(bootstrap, folder / "processed.db", folder, "processor-0", seed=ctx.seed)
            started_procs.append(processor[0])
            t0, t0_clock = time.time(), time.monotonic()
            drift_time = t0 + a["drift_at"]
            devices = [start_device(bootstrap, starts[runtimes[i]], folder, f"cam-{i}", rate=a["rate"],
                                    duration=a["cap"] + 120, drift_at=drift_time if i < drifted else None,
                                    seed=ctx.seed + i,
                                    extra=["--no-features", "--window", str(a["window"]),
                                           "--window-file", str(fleet.window_file(data_dir, i))])
                       for i in range(n)]
            started_procs += [p for p, _, _ in devices]
            wait_ready(processor[1], processor[0], processor[2], "the processor's group join")

            ctx.step(f"3. {n} SuperNodes, one per device, each reading only its own device's window")
            federation = Federation(stack.superlink_address, ctx.run.path / "federation", n, data_dir,
                                    console=ctx.console, health_timeout_s=ctx.settings.health_timeout_s * 4,
                                    app_dir=APP_DIR, preload=CLIENT_PRELOAD)
            milestones = Milestones(a["drift_at"] + a["cap"], start=t0_clock, progress_every_s=10,
                                    progress=lambda line: ctx.console.print(line, highlight=False))

            def stop_devices() -> None:
                """SIGTERM every device: each drains its buffer and writes its final stats."""
                for proc, _, _ in devices:
                    procs.stop_pid(proc.pid)

            with federation:
                healing = fleet.heal(
                    scenario, model, a, milestones, drift_time=lambda: drift_time,
                    run_federation=lambda config, ms, on_round: federation.run(
                        config, ctx.run.path / "fl", milestones=ms, on_round=on_round),
                    stop_devices=stop_devices, devices_stopped=lambda: all(p.poll() is not None for p, _, _ in devices),
                    bootstrap=bootstrap, artifacts_dir=ctx.settings.artifacts_dir, data_dir=data_dir,
                    runtimes=runtimes, log=lambda line: ctx.console.print(line, highlight=False), step=ctx.step,
                    device_log=str(devices[0][2]), processor_log=str(processor[2]))
        finally:
            for proc in reversed(started_procs):
                procs.stop_pid(proc.pid)

    ctx.step("6. Results")
    report = fleet.summarize(scenario, model, healing, a, data_dir, runtimes, milestones, t0, started)
    for title, columns, rows in report["tables"]:
        ctx.table(title, columns, rows)
    ctx.save_plot(report["figure"], "timeline")
    return report["metrics"]
