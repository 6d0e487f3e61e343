"""The ``edge`` command a device runs: ``edge run``, ``edge bench``, ``edge verify`` and ``edge join``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.federated.supernode import FlowerNotFound, claim_partition, flower_executable, supernode_command
from edge.machine import machine_name
from edge.serving.bundle import load_bundle
from edge.serving.device import ControlFolder, EdgeDevice
from edge.serving.keys import PUBLIC_KEY_FILE, KeyFileError, load_public_key
from edge.serving.manifest import BundleError
from edge.serving.runners import open_runner
from edge.serving.sinks import ConsoleSink, JsonlSink, MultiSink
from edge.serving.sources import FRAMES_FILE, DigitFrames, load_frames

DEFAULT_KAFKA_PORT = 9092
DEFAULT_SUPERLINK_PORT = 8000


def resolve_key(args) -> Path:
    """--key, else $EDGE_PUBLIC_KEY, else public_key.pem next to the bundle."""
    if args.key:
        return Path(args.key)
    if os.environ.get("EDGE_PUBLIC_KEY"):
        return Path(os.environ["EDGE_PUBLIC_KEY"])
    return Path(args.bundle).resolve().parent / PUBLIC_KEY_FILE


def resolve_frames(args) -> Path:
    """--frames, else $EDGE_FRAMES, else digits_test_frames.npz next to the bundle."""
    if args.frames:
        return Path(args.frames)
    if os.environ.get("EDGE_FRAMES"):
        return Path(os.environ["EDGE_FRAMES"])
    return Path(args.bundle).resolve().parent / FRAMES_FILE


def open_verified(args):
    """Load the public key and the bundle, verify it and open a runner; exit 2 with the reason if refused."""
    try:
        key = load_public_key(resolve_key(args))
        return open_runner(load_bundle(Path(args.bundle), key), num_threads=args.threads), key
    except (BundleError, KeyFileError) as exc:
        print(f"edge: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


class _Stats:
    """A sink that keeps per-model counts, correct answers and latencies for the summary."""
    def __init__(self) -> None:
        self.by_model: dict[str, dict[str, list]] = {}

    def write(self, prediction) -> None:
        """Record one prediction."""
        entry = self.by_model.setdefault(prediction.model, {"latency": [], "correct": []})
        entry["latency"].append(prediction.latency_us)
        if prediction.true_label is not None:
            entry["correct"].append(prediction.predicted == prediction.true_label)

    def close(self) -> None:
        """Nothing to release."""

    def summary(self) -> list[dict[str, Any]]:
        """One dict per model: count, accuracy, p50/p99 latency."""
        rows = []
        for model, entry in self.by_model.items():
            lat = np.asarray(entry["latency"])
            rows.append({"model": model, "count": len(lat),
                         "accuracy": float(np.mean(entry["correct"])) if entry["correct"] else None,
                         "p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99))})
        return rows


def cmd_run(args) -> int:
    """Serve frames with a verified bundle until --count is reached or SIGTERM/Ctrl-C."""
    runner, key = open_verified(args)
    try:
        source = DigitFrames.from_file(resolve_frames(args), count=args.count, noise=args.noise, drift=args.drift,
                                       seed=args.seed, rate_hz=args.rate or None)
    except FileNotFoundError as exc:
        print(f"edge: {exc}; or pass --frames PATH", file=sys.stderr)
        return 2
    stats = _Stats()
    sinks = [stats]
    if args.out:
        sinks.append(JsonlSink(Path(args.out), flush_every=args.flush_every))
    if args.print_every:
        sinks.append(ConsoleSink(every=args.print_every))
    control = ControlFolder(Path(args.control)) if args.control else None

    def on_event(event: dict[str, Any]) -> None:
        print(f"{args.name}: {event['message']}", flush=True)

    device = EdgeDevice(runner, source, MultiSink(*sinks), name=args.name, public_key=key,
                        num_threads=args.threads, on_event=on_event)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"{args.name}: serving {runner.ref} ({runner.bundle.manifest.runtime}, {runner.bundle.manifest.precision}, "
          f"{args.threads} thread{'s' if args.threads > 1 else ''}) on {machine_name()}", flush=True)
    try:
        served = device.run(stop=stop, control=control)
    except KeyboardInterrupt:
        served = device.served
    for row in stats.summary():
        acc = "" if row["accuracy"] is None else f", accuracy {row['accuracy']:.3f}"
        print(f"{args.name}: {row['model']} served {row['count']}{acc}, "
              f"p50 {row['p50_us']:.1f} µs, p99 {row['p99_us']:.1f} µs", flush=True)
    print(f"{args.name}: stopped after {served} readings", flush=True)
    return 0


def cmd_bench(args) -> int:
    """Single-sample p50/p99 latency, batch throughput and accuracy of one bundle on this machine."""
    runner, _ = open_verified(args)
    try:
        x, y = load_frames(resolve_frames(args))
    except FileNotFoundError as exc:
        print(f"edge: {exc}; or pass --frames PATH", file=sys.stderr)
        return 2
    for i in range(args.warmup):
        runner.predict_one(x[i % len(x)])
    times = np.empty(args.repeats)
    for i in range(args.repeats):
        start = time.perf_counter_ns()
        runner.predict_one(x[i % len(x)])
        times[i] = (time.perf_counter_ns() - start) / 1e3
    batch = np.resize(x, (args.batch, x.shape[1])).astype(np.float32)
    runner.predict_batch(batch)
    calls, start = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - start < args.seconds:
        runner.predict_batch(batch)
        calls += 1
    rate = calls * args.batch / (time.perf_counter() - start)
    accuracy = float((runner.predict(x).argmax(1) == y).mean()) if y is not None else None
    result = {"bundle": runner.ref, "runtime": runner.bundle.manifest.runtime,
              "precision": runner.bundle.manifest.precision, "threads": args.threads,
              "size_kb": round(runner.bundle.model_path.stat().st_size / 1024, 1),
              "p50_us": float(np.percentile(times, 50)), "p99_us": float(np.percentile(times, 99)),
              "batch": args.batch, "batch_per_s": rate, "accuracy": accuracy, "samples": len(x),
              "machine": machine_name()}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"machine: {result['machine']}")
    print(f"bundle:  {result['bundle']} ({result['runtime']} {result['precision']}, {result['size_kb']} KB, "
          f"{args.threads} thread{'s' if args.threads > 1 else ''})")
    print(f"single sample: p50 {result['p50_us']:.1f} µs, p99 {result['p99_us']:.1f} µs "
          f"({args.repeats} runs after {args.warmup} warm-up)")
    print(f"batch of {args.batch}: {rate:,.0f} samples/s")
    if accuracy is not None:
        print(f"top-1 accuracy on {len(x)} held-out frames: {accuracy:.4f}")
    return 0


def cmd_verify(args) -> int:
    """Verify a bundle and print its manifest summary; exit 2 with the reason if refused."""
    runner, _ = open_verified(args)
    manifest = runner.bundle.manifest
    print(f"{manifest.ref}: verified (signed by {manifest.signed_by}); {manifest.runtime} {manifest.precision}, "
          f"input {manifest.inputs[0].name} {manifest.inputs[0].shape} {manifest.inputs[0].dtype}, "
          f"output {manifest.outputs[0].name} {manifest.outputs[0].shape} {manifest.outputs[0].dtype}, "
          f"metrics {manifest.metrics}")
    return 0


def check_port(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to host:port succeeds, else why it failed."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as exc:
        return f"cannot resolve {host!r} ({exc.strerror})"
    except TimeoutError:
        return f"no answer within {timeout:g} s (a firewall, or the wrong address)"
    except ConnectionRefusedError:
        return "connection refused (nothing listens there)"
    except OSError as exc:
        return exc.strerror or str(exc)


def cmd_join(args) -> int:
    """Check that the cloud's Kafka and SuperLink ports answer; say what to do about those that do not."""
    superlink_host = args.superlink_host or args.cloud
    services = [("Kafka broker", args.cloud, args.kafka_port, "KAFKA_BOOTSTRAP_SERVERS"),
                ("Flower SuperLink", superlink_host, args.superlink_port, "SUPERLINK_ADDRESS")]
    failed = 0
    for name, host, port, variable in services:
        problem = check_port(host, port, args.timeout)
        if problem is None:
            print(f"ok    {name} at {host}:{port} answers")
        else:
            failed += 1
            print(f"FAIL  {name} at {host}:{port}: {problem}")
    if getattr(args, "supernode", False):
        return start_supernode(args, superlink_host, superlink_ok=check_port(superlink_host, args.superlink_port,
                                                                            args.timeout) is None)
    if failed:
        print(f"{failed} of {len(services)} services do not answer. On the cloud host run `make up` and "
              "`make status`; for a Raspberry Pi set KAFKA_ADVERTISED_HOST to the host's LAN address there; "
              "if the services listen on other ports pass --kafka-port/--superlink-port.")
        return 1
    print(f"{args.cloud} is reachable: this device can join (streaming and federated labs connect here).")
    return 0


def start_supernode(args, superlink_host: str, superlink_ok: bool) -> int:
    """Replace this process with a SuperNode pointed at the cloud's SuperLink (Ctrl-C stops it)."""
    if not superlink_ok:
        print("edge: the SuperLink does not answer, so no SuperNode was started; fix the address first", file=sys.stderr)
        return 1
    if args.partition_id is None or args.data_dir is None or not (args.partition_id == "auto"
                                                                 or args.partition_id.isdigit()):
        print(f"edge: --supernode needs --partition-id N (or auto; got {args.partition_id!r}) and --data-dir DIR "
              "(the folder holding "
              "<partition-set>/device-N.npz, written by `python -m cloud.federated.partition` on the cloud host)", file=sys.stderr)
        return 2
    if args.root_certificates and not Path(args.root_certificates).exists():
        print(f"edge: --root-certificates {args.root_certificates}: no such file; copy certs/ca.pem from the cloud "
              "host (`make certs` made it)", file=sys.stderr)
        return 2
    if not Path(args.data_dir).expanduser().is_dir():
        print(f"edge: --data-dir {args.data_dir}: no such folder; copy this device's partitions there", file=sys.stderr)
        return 2
    try:
        flower_executable("flower-supernode")  # before claiming: a device without Flower must not use up a partition
    except FlowerNotFound as exc:
        print(f"edge: {exc}", file=sys.stderr)
        return 2
    partition_id = claim_partition(Path(args.data_dir)) if args.partition_id == "auto" else int(args.partition_id)
    cmd = supernode_command(f"{superlink_host}:{args.superlink_port}", partition_id, Path(args.data_dir),
                            args.supernode_port, Path(args.root_certificates) if args.root_certificates else None)
    print("starting: " + " ".join(cmd), flush=True)
    if args.dry_run:
        return 0
    if args.flwr_home:
        os.environ["FLWR_HOME"] = str(Path(args.flwr_home).expanduser())
    # The SuperNode starts Flower's other executables (flwr-clientapp, flower-superexec) from PATH: its own folder first.
    os.environ["PATH"] = str(Path(cmd[0]).parent) + os.pathsep + os.environ.get("PATH", "")
    os.execv(cmd[0], cmd)
    return 0  # not reached: execv replaced this process


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``edge``."""
    parser = argparse.ArgumentParser(prog="edge", description="Run verified model bundles on this device.")
    sub = parser.add_subparsers(dest="command", required=True)

    def bundle_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bundle", required=True, help="bundle folder or .tar.gz/.zip archive")
        p.add_argument("--key", help="the cloud's public key (default: $EDGE_PUBLIC_KEY or public_key.pem beside the bundle)")
        p.add_argument("--frames", help="frames .npz (default: $EDGE_FRAMES or digits_test_frames.npz beside the bundle)")
        p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")

    run = sub.add_parser("run", help="serve predictions from a sensor source with a verified bundle")
    bundle_args(run)
    run.add_argument("--name", default=socket.gethostname(), help="device name in predictions")
    run.add_argument("--count", type=int, default=None, help="stop after this many readings (default: run until stopped)")
    run.add_argument("--rate", type=float, default=50.0, help="readings per second (0: as fast as possible)")
    run.add_argument("--noise", type=float, default=0.0, help="Gaussian pixel noise std")
    run.add_argument("--drift", type=float, default=0.0, help="brightness lost per 1,000 frames (0.1 = 10%%)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", help="append predictions as JSON lines to this file")
    run.add_argument("--flush-every", type=int, default=1, help="flush --out every N lines")
    run.add_argument("--print-every", type=int, default=50, help="print every N-th prediction (0: none)")
    run.add_argument("--control", help="folder to watch for swap requests (swap-request.json)")
    run.set_defaults(func=cmd_run)

    bench = sub.add_parser("bench", help="latency and throughput of a bundle on this machine")
    bundle_args(bench)
    bench.add_argument("--repeats", type=int, default=2000)
    bench.add_argument("--warmup", type=int, default=100)
    bench.add_argument("--batch", type=int, default=256)
    bench.add_argument("--seconds", type=float, default=0.5, help="time spent on batch throughput")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=cmd_bench)

    verify = sub.add_parser("verify", help="verify a bundle's signature, checksums and model, and describe it")
    bundle_args(verify)
    verify.set_defaults(func=cmd_verify)

    join = sub.add_parser("join", help="check that the cloud's Kafka and SuperLink ports answer")
    join.add_argument("--cloud", required=True, help="cloud host name or LAN address")
    join.add_argument("--kafka-port", type=int, default=DEFAULT_KAFKA_PORT)
    join.add_argument("--superlink-port", type=int, default=DEFAULT_SUPERLINK_PORT)
    join.add_argument("--superlink-host", default=None,
                      help="SuperLink host when it is not the --cloud host (compose: superlink)")
    join.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each port")
    fl = join.add_argument_group("federated learning: run a Flower SuperNode for this device")
    fl.add_argument("--supernode", action="store_true", help="after the checks, become a SuperNode of the SuperLink")
    fl.add_argument("--partition-id", help="this device's partition number (device-N.npz), or 'auto' to claim the "
                    "lowest free one in DATA_DIR/claims/ (containers scaled with --scale)")
    fl.add_argument("--data-dir", help="folder with this device's partitions (<partition-set>/device-N.npz)")
    fl.add_argument("--root-certificates", help="the cloud's CA (certs/ca.pem) for a SuperLink with TLS; "
                    "without it the connection is insecure")
    fl.add_argument("--supernode-port", type=int, default=9094, help="the SuperNode's local Runtime API port")
    fl.add_argument("--flwr-home", help="the SuperNode's state folder (default: $FLWR_HOME or ~/.flwr)")
    fl.add_argument("--dry-run", action="store_true", help="print the SuperNode command instead of running it")
    join.set_defaults(func=cmd_join)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edge`` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
