"""A streaming device as a process: ``python -m edge.streaming --bootstrap HOST:9092 --bundle ... --key ... --frames ...``.

It serves a signed bundle on a camera source (``DriftingCamera``), streams predictions and telemetry
through a ``KafkaSink``, takes model updates with a ``ModelUpdateFollower``, and writes its counts
to ``--stats`` every second and at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge.serving.bundle import load_bundle
from edge.serving.device import EdgeDevice
from edge.serving.keys import load_public_key
from edge.serving.manifest import BundleError
from edge.serving.runners import open_runner
from edge.serving.sinks import LabelledWindow, MultiSink
from edge.serving.sources import DigitFrames, DriftingCamera
from edge.streaming.kafka_sink import KafkaSink
from edge.streaming.settings import DeviceSettings
from edge.streaming.updates import ModelUpdateFollower


def build_parser(settings: DeviceSettings | None = None) -> argparse.ArgumentParser:
    """Arguments of ``python -m edge.streaming``; endpoint defaults come from ``DeviceSettings``."""
    settings = settings or DeviceSettings()
    p = argparse.ArgumentParser(prog="python -m edge.streaming",
                                description="A simulated camera device streaming predictions to Kafka.")
    p.add_argument("--bootstrap", default=settings.kafka_bootstrap_servers,
                   help="broker host:port (default: KAFKA_BOOTSTRAP_SERVERS, else %(default)s)")
    p.add_argument("--bundle", required=True, help="signed bundle folder or archive to start with")
    p.add_argument("--key", required=True, help="the cloud's public key (public_key.pem)")
    p.add_argument("--frames", required=True, help="frames .npz (edge.serving.sources.save_frames)")
    p.add_argument("--name", default="cam-0", help="device id")
    p.add_argument("--fresh-id", action="store_true", help="append a random suffix to --name (a new identity)")
    p.add_argument("--rate", type=float, default=40.0, help="readings per second (0: as fast as possible)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    p.add_argument("--count", type=int, default=None, help="stop after this many readings")
    p.add_argument("--drift-at", type=float, default=None, help="epoch seconds when the camera turns upside down")
    p.add_argument("--drift-after", type=float, default=None,
                   help="seconds after start when the camera turns upside down (instead of --drift-at)")
    p.add_argument("--stop-after-update", type=int, default=None, metavar="N",
                   help="stop (and drain) once N readings were served on a model newer than the starting one")
    p.add_argument("--glitch-rate", type=float, default=0.0, help="fraction of over-exposed frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stats", help="write counts as JSON here every second and at exit")
    p.add_argument("--no-features", action="store_true",
                   help="keep frames on the device: prediction events carry no features (lab 12)")
    p.add_argument("--window-file", default=None, metavar="PATH",
                   help="keep the last --window labelled frames, as seen, in this .npz (x_train, y_train, x_val, "
                        "y_val: what a federated ClientApp on this device trains on)")
    p.add_argument("--window", type=int, default=400, help="labelled frames --window-file keeps")
    p.add_argument("--work-dir", default=None, help="where downloaded bundles go (default: a temp folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one streaming device until --duration/--count or SIGTERM; print and write its counts."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.drift_at is not None and args.drift_after is not None:
        parser.error("give --drift-at (epoch seconds) or --drift-after (seconds from start), not both")
    started_at = time.time()
    drift_at = started_at + args.drift_after if args.drift_after is not None else args.drift_at
    name = f"{args.name}-{os.urandom(3).hex()}" if args.fresh_id else args.name
    key = load_public_key(Path(args.key))
    try:
        runner = open_runner(load_bundle(Path(args.bundle), key), num_threads=1)
    except BundleError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    frames = DigitFrames.from_file(Path(args.frames), count=args.count, seed=args.seed, rate_hz=args.rate or None)
    camera = DriftingCamera(frames, drift_at=drift_at, glitch_rate=args.glitch_rate, seed=args.seed)
    sink = KafkaSink(args.bootstrap, name, camera, send_features=not args.no_features)
    outputs = sink if args.window_file is None else MultiSink(
        sink, LabelledWindow(Path(args.window_file), camera.frame, capacity=args.window))
    device = EdgeDevice(runner, camera, outputs, name=name, public_key=key)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix=f"edge-{name}-"))
    follower = ModelUpdateFollower(args.bootstrap, device, work / "downloads").start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = time.monotonic() + args.duration

    def write_stats(final: bool = False) -> dict[str, Any]:
        """The device's counts (also to --stats, atomically)."""
        stats = {"device": name, "served": device.served, "model": device.model,
                 "runtime": getattr(device.runner, "runtime", None), **sink.stats(),
                 "served_by_model": dict(device.served_by_model), "updates": follower.applied,
                 "started_at": started_at, "drift_at": drift_at, "final": final, "t": time.time()}
        if args.stats:
            tmp = Path(args.stats + ".tmp")
            tmp.write_text(json.dumps(stats))
            os.replace(tmp, args.stats)
        return stats

    start_model = device.model

    def served_on_updates() -> int:
        """Readings served on models other than the starting one."""
        return sum(n for model, n in dict(device.served_by_model).items() if model != start_model)

    def watchdog() -> None:
        """Stop at the deadline or after --stop-after-update readings on an update; refresh the stats every second."""
        while not stop.wait(1.0):
            write_stats()
            if time.monotonic() >= deadline:
                stop.set()
            if args.stop_after_update is not None and served_on_updates() >= args.stop_after_update:
                print(f"{name}: served {served_on_updates()} readings on {device.model}; stopping", flush=True)
                stop.set()

    threading.Thread(target=watchdog, daemon=True).start()
    print(f"{name}: streaming {device.model} to {args.bootstrap} at {args.rate:g} readings/s", flush=True)
    try:
        # As fast as possible (--rate 0) the recording is always ahead: predict 16 frames per runner call.
        device.run(stop=stop, batch=16 if args.rate <= 0 else 1)  # closes the sink, which drains the buffer
    except KeyboardInterrupt:
        outputs.close()
    finally:
        stop.set()
        follower.stop()
    stats = write_stats(final=True)
    print(f"{name}: served {device.served}, produced {sum(sink.produced.values())}, "
          f"delivered {sum(sink.delivered.values())}, dropped {sink.dropped}, model {device.model}", flush=True)
    return 0 if stats["pending"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
