"""Lab 05: three simulated edge devices as processes, live predictions and latency, a hot swap and a refused bundle."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

TITLE = "Run on the edge: three device processes, live latency, a hot swap and a tampered bundle refused"
DEFAULTS = {
    "seed": 42,
    "seconds": 30.0,  # how long the devices serve
    "rate": 100.0,  # readings per second per device
    "noise": 0.05,  # camera noise (pixel std)
    "threads": 1,  # runtime threads per device
}
QUICK = {"seconds": 6.0}

# device name -> the lab 04 bundle it starts with
DEVICES = {"cam-onnx-fp32": "onnx-fp32", "cam-onnx-int8": "onnx-int8", "cam-tflite-fp32": "tflite-fp32"}
SWAP = ("cam-onnx-fp32", "tflite-int8")  # roll this device over to the LiteRT int8 bundle at 40% of the time
TAMPER = ("cam-tflite-fp32", "tflite-int8")  # offer this device a tampered copy at 60% of the time


class Tail:
    """Reads the JSON lines a device has appended since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.rows = path, 0, []

    def read(self) -> list[dict]:
        """New complete lines, parsed; also kept in ``rows``."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1  # a half-written last line waits for the next read
        self.offset += end
        new = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        self.rows.extend(new)
        return new


def device_row(name: str, rows: list[dict], last: int = 500) -> list:
    """One line of the live table: serving model, count, accuracy, recent p50/p99 latency."""
    if not rows:
        return [name, "starting", 0, "-", "-", "-"]
    recent = np.array([r["latency_us"] for r in rows[-last:]])
    acc = np.mean([r["predicted"] == r["true_label"] for r in rows])
    return [name, rows[-1]["model"], len(rows), f"{acc:.3f}", f"{np.percentile(recent, 50):.1f}",
            f"{np.percentile(recent, 99):.1f}"]


def live_table(tails: dict[str, Tail], note: str):
    """The live view as a rich Table."""
    from rich.table import Table

    table = Table(title=f"edge devices (live) {note}")
    for column in ("device", "serving", "predictions", "accuracy", "p50 µs", "p99 µs"):
        table.add_column(column)
    for name, tail in tails.items():
        table.add_row(*[str(v) for v in device_row(name, tail.rows)])
    return table


def run(ctx) -> dict:
    """Start three device processes, watch them, swap one, offer one a tampered bundle, stop them all."""
    from rich.live import Live

    from cloud.ml.publish import bundles_dir
    from cloud.stack.procs import start_process, stop_pid, wait_until
    from edge.serving.bundle import load_bundle
    from edge.serving.device import ControlFolder
    from edge.serving.keys import PUBLIC_KEY_FILE, load_public_key
    from edge.serving.sources import FRAMES_FILE

    args = ctx.args
    out = bundles_dir(ctx.settings.artifacts_dir)
    ctx.step("1. The bundles lab 04 published")
    bundle = {kind: out / f"digits-cnn-{kind}@1" for kind in ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8")}
    missing = [str(p) for p in [*bundle.values(), out / PUBLIC_KEY_FILE, out / FRAMES_FILE] if not p.exists()]
    if missing:
        raise SystemExit(f"lab 05 needs lab 04's bundles; missing: {', '.join(missing)}. "
                         "Run `make lab-04` (or `make lab-04 QUICK=1`) first.")
    key = load_public_key(out / PUBLIC_KEY_FILE)
    ctx.table("bundles", ["bundle", "runtime", "precision", "KB"],
              [[b.ref, b.manifest.runtime, b.manifest.precision, f"{b.model_path.stat().st_size / 1024:.1f}"]
               for b in (load_bundle(p, key) for p in bundle.values())])
    tampered = shutil.copytree(bundle[TAMPER[1]], ctx.run.path / "tampered" / bundle[TAMPER[1]].name)
    model = tampered / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    model.write_bytes(bytes(data))

    ctx.step(f"2. Start {len(DEVICES)} device processes ({args['rate']:g} readings/s each)")
    procs, tails, controls = {}, {}, {}
    try:
        for i, (name, kind) in enumerate(DEVICES.items()):
            controls[name] = ControlFolder(ctx.run.path / "control" / name)
            tails[name] = Tail(ctx.run.path / f"{name}.jsonl")
            cmd = [sys.executable, "-m", "edge.cli", "run", "--bundle", str(bundle[kind]), "--name", name,
                   "--rate", str(args["rate"]), "--noise", str(args["noise"]), "--seed", str(ctx.seed + i),
                   "--threads", str(args["threads"]), "--out", str(tails[name].path),
                   "--control", str(controls[name].path), "--print-every", "0"]
            procs[name] = start_process(cmd, ctx.run.path / f"{name}.log")
            ctx.console.print(f"{name}: pid {procs[name].pid}, log {ctx.run.path / f'{name}.log'}", highlight=False)
        for name, proc in procs.items():
            wait_until(lambda n=name: tails[n].path.exists() and tails[n].path.stat().st_size > 0,
                       f"{name} predicts", 30, proc, ctx.run.path / f"{name}.log")

        ctx.step(f"3. Watch for {args['seconds']:g} s: swap {SWAP[0]} at 40%, tamper with {TAMPER[0]} at 60%")
        start = time.monotonic()
        swapped = refused = False
        notes: list[str] = []
        with Live(live_table(tails, ""), console=ctx.console, refresh_per_second=4, transient=False) as live:
            while (elapsed := time.monotonic() - start) < args["seconds"]:
                for tail in tails.values():
                    tail.read()
                if not swapped and elapsed >= 0.4 * args["seconds"]:
                    controls[SWAP[0]].request_swap(bundle[SWAP[1]])
                    notes.append(f"t={elapsed:.1f}s: asked {SWAP[0]} to swap to {bundle[SWAP[1]].name}")
                    swapped = True
                if not refused and elapsed >= 0.6 * args["seconds"]:
                    controls[TAMPER[0]].request_swap(tampered)
                    notes.append(f"t={elapsed:.1f}s: offered {TAMPER[0]} a tampered {tampered.name}")
                    refused = True
                live.update(live_table(tails, f"t={elapsed:4.1f}s"))
                time.sleep(0.25)
        ctx.console.print()
        for note in notes:
            ctx.console.print(note, highlight=False)
    finally:
        for proc in procs.values():
            stop_pid(proc.pid)
    for tail in tails.values():
        tail.read()

    ctx.step("4. What the devices did")
    events = {name: control.events() for name, control in controls.items()}
    for name, evs in events.items():
        for event in evs:
            ctx.console.print(f"{name}: {event['message']}", highlight=False)
    swap_event = next((e for e in events[SWAP[0]] if e.get("event") == "swap"), None)
    refuse_event = next((e for e in events[TAMPER[0]] if e.get("event") == "swap"), None)
    rows, metrics = [], {}
    for name, tail in tails.items():
        preds = tail.rows
        indexes = [p["index"] for p in preds]
        continuous = indexes == list(range(len(indexes)))
        served = {}
        for p in preds:
            served[p["model"]] = served.get(p["model"], 0) + 1
        lat = np.array([p["latency_us"] for p in preds])
        acc = float(np.mean([p["predicted"] == p["true_label"] for p in preds]))
        rows.append([name, ", ".join(f"{m} x{c}" for m, c in served.items()), len(preds), f"{acc:.3f}",
                     f"{np.percentile(lat, 50):.1f}", f"{np.percentile(lat, 99):.1f}",
                     "yes" if continuous else "NO"])
        key_ = name.replace("cam-", "").replace("-", "_")
        metrics.update({f"{key_}_served": len(preds), f"{key_}_accuracy": acc,
                        f"{key_}_p50_us": float(np.percentile(lat, 50)),
                        f"{key_}_p99_us": float(np.percentile(lat, 99)), f"{key_}_continuous": continuous,
                        f"{key_}_models": len(served)})
    ctx.table("devices after the run", ["device", "models served", "predictions", "accuracy", "p50 µs", "p99 µs",
                                        "no gaps/duplicates"], rows)
    after_refusal = [p for p in tails[TAMPER[0]].rows if refuse_event and p["t"] > refuse_event["t"]]
    metrics.update({
        "swap_accepted": bool(swap_event and swap_event["accepted"]),
        "swap_models": [m for m in dict.fromkeys(p["model"] for p in tails[SWAP[0]].rows)],
        "tampered_refused": bool(refuse_event and not refuse_event["accepted"]),
        "refusal_message": refuse_event["message"] if refuse_event else "",
        "served_after_refusal": len(after_refusal),
        "models_after_refusal": sorted({p["model"] for p in after_refusal}),
    })
    ctx.run.write_json("events.json", events)
    return metrics
