"""Lab 05: three simulated edge devices as processes, live predictions and latency, a hot swap and a refused bundle."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from rich.live import Live
from rich.table import Table

from cloud.labkit.milestones import Milestones
from cloud.ml.publish import bundles_dir
from cloud.stack.procs import start_process, stop_pid
from edge.serving.bundle import load_bundle
from edge.serving.device import ControlFolder
from edge.serving.keys import PUBLIC_KEY_FILE, load_public_key
from edge.serving.sources import FRAMES_FILE

TITLE = "Run on the edge: three device processes, live latency, a hot swap and a tampered bundle refused"
DEFAULTS = {
    "seed": 42,
    "warmup": 1000,  # predictions every device serves on its first model before the swap
    "after": 1000,  # predictions on the new model after the swap, and again after the refusal
    "cap": 180.0,  # seconds the whole scenario may take; past it the lab names the milestone that did not arrive
    "rate": 100.0,  # readings per second per device
    "noise": 0.05,  # camera noise (pixel std)
    "threads": 1,  # runtime threads per device
}
QUICK = {"warmup": 300, "after": 200}

# device name -> the lab 04 bundle it starts with
DEVICES = {"cam-onnx-fp32": "onnx-fp32", "cam-onnx-int8": "onnx-int8", "cam-tflite-fp32": "tflite-fp32"}
SWAP = ("cam-onnx-fp32", "tflite-int8")  # roll this device over to the LiteRT int8 bundle after the warm-up
TAMPER = ("cam-tflite-fp32", "tflite-int8")  # then offer this device a tampered copy of that bundle


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
    table = Table(title=f"edge devices (live) {note}")
    for column in ("device", "serving", "predictions", "accuracy", "p50 µs", "p99 µs"):
        table.add_column(column)
    for name, tail in tails.items():
        table.add_row(*[str(v) for v in device_row(name, tail.rows)])
    return table


def exited(procs: dict) -> str | None:
    """The first device process that has exited, as a reason to stop waiting, or None."""
    for name, proc in procs.items():
        if proc.poll() is not None:
            return f"{name} exited with code {proc.returncode}"
    return None


def run(ctx) -> dict:
    """Start three device processes, swap one, offer one a tampered bundle, each step a milestone; stop them all."""
    args = ctx.args
    out = bundles_dir(ctx.settings.artifacts_dir)
    ctx.step("1. The bundles lab 04 published")
    bundle = {kind: out / f"digits-cnn-{kind}@1" for kind in ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8")}
    missing = [str(p) for p in [*bundle.values(), out / PUBLIC_KEY_FILE, out / FRAMES_FILE] if not p.exists()]
    if missing:
        raise SystemExit(f"lab 05 needs lab 04's bundles; missing: {', '.join(missing)}. "
                         "Run `make lab-04` (or `make lab-04 QUICK=1`) first.")
    key = load_public_key(out / PUBLIC_KEY_FILE)
    bundles = {kind: load_bundle(path, key) for kind, path in bundle.items()}
    ctx.table("bundles", ["bundle", "runtime", "precision", "KB"],
              [[b.ref, b.manifest.runtime, b.manifest.precision, f"{b.model_path.stat().st_size / 1024:.1f}"]
               for b in bundles.values()])
    tampered = shutil.copytree(bundle[TAMPER[1]], ctx.run.path / "tampered" / bundle[TAMPER[1]].name)
    model = tampered / "model.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the weights
    model.write_bytes(bytes(data))
    first = {name: bundles[kind].ref for name, kind in DEVICES.items()}
    new = bundles[SWAP[1]].ref
    warmup, after = args["warmup"], args["after"]

    ctx.step(f"2. Start {len(DEVICES)} device processes ({args['rate']:g} readings/s each)")
    milestones = Milestones(args["cap"], progress=lambda line: ctx.console.print(line, highlight=False),
                            interval_s=0.25)
    procs, tails, controls = {}, {}, {}
    logs = str(ctx.run.path / "cam-*.log")
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

        ctx.step(f"3. Warm up, swap {SWAP[0]}, tamper with {TAMPER[0]}: milestones under a {args['cap']:g} s cap")

        def on_first(name: str) -> int:
            """Predictions a device has served on the model it started with."""
            return sum(1 for r in tails[name].rows if r["model"] == first[name])

        def swap_event(name: str) -> dict | None:
            """The device's answer to the bundle it was offered, once it has reported it."""
            return next((e for e in controls[name].events() if e.get("event") == "swap"), None)

        def after_refusal() -> int:
            """Predictions the tampered-with device served after it answered the offer."""
            answer = swap_event(TAMPER[0])
            return sum(1 for r in tails[TAMPER[0]].rows if answer and r["t"] > answer["t"])

        def on_new() -> int:
            """Predictions the swapped device served on the new model."""
            return sum(1 for r in tails[SWAP[0]].rows if r["model"] == new)

        def swap_refused() -> str | None:
            """Why waiting for the swap is pointless: the device refused the bundle, or a device exited."""
            answer = swap_event(SWAP[0])
            if answer and not answer["accepted"]:
                return f"{SWAP[0]} {answer['message']}"
            return exited(procs)

        def title(text: str) -> str:
            """The live table's title: seconds into the scenario and what it is doing."""
            return f"t={milestones.clock() - milestones.start:4.1f}s, {text}"

        with Live(live_table(tails, ""), console=ctx.console, refresh_per_second=4, transient=False) as live:

            def reach(name: str, check, status=None, log: str = logs, failed=lambda: exited(procs)) -> None:
                """Wait for one milestone, keeping the live table fresh and naming the milestone in its title."""
                def polled() -> bool:
                    """Read what the devices wrote, redraw, then check."""
                    for tail in tails.values():
                        tail.read()
                    live.update(live_table(tails, title(f"waiting for: {name}")))
                    return check()
                milestones.wait(name, polled, log=log, status=status, failed=failed)

            reach("every device predicting", lambda: all(t.rows for t in tails.values()),
                  status=lambda: ", ".join(f"{n} {len(t.rows)}" for n, t in tails.items()))
            reach(f"{warmup} predictions per device on its first model",
                  lambda: all(on_first(n) >= warmup for n in DEVICES),
                  status=lambda: ", ".join(f"{n} {on_first(n)}/{warmup}" for n in DEVICES))
            controls[SWAP[0]].request_swap(bundle[SWAP[1]])
            ctx.console.print(f"asked {SWAP[0]} to swap to {bundle[SWAP[1]].name}", highlight=False)
            reach(f"{SWAP[0]} serving {new}", lambda: on_new() > 0, log=str(ctx.run.path / f"{SWAP[0]}.log"),
                  failed=swap_refused)
            reach(f"{after} predictions on {new}", lambda: on_new() >= after, status=lambda: f"{on_new()}/{after}",
                  log=str(ctx.run.path / f"{SWAP[0]}.log"))
            controls[TAMPER[0]].request_swap(tampered)
            ctx.console.print(f"offered {TAMPER[0]} a tampered {tampered.name}", highlight=False)
            reach(f"{TAMPER[0]} answered the tampered bundle", lambda: swap_event(TAMPER[0]) is not None,
                  log=str(ctx.run.path / f"{TAMPER[0]}.log"))
            reach(f"{after} predictions after the refusal", lambda: after_refusal() >= after,
                  status=lambda: f"{after_refusal()}/{after}", log=str(ctx.run.path / f"{TAMPER[0]}.log"))
            live.update(live_table(tails, title("every milestone reached")))
        ctx.console.print()
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
    swap_answer, refuse_answer = swap_event(SWAP[0]), swap_event(TAMPER[0])
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
        rows.append([name, ", ".join(f"{ref} x{c}" for ref, c in served.items()), len(preds), f"{acc:.3f}",
                     f"{np.percentile(lat, 50):.1f}", f"{np.percentile(lat, 99):.1f}",
                     "yes" if continuous else "NO"])
        key_ = name.replace("cam-", "").replace("-", "_")
        metrics.update({f"{key_}_served": len(preds), f"{key_}_accuracy": acc,
                        f"{key_}_on_first_model": served.get(first[name], 0),
                        f"{key_}_p50_us": float(np.percentile(lat, 50)),
                        f"{key_}_p99_us": float(np.percentile(lat, 99)), f"{key_}_continuous": continuous,
                        f"{key_}_models": len(served)})
    ctx.table("devices after the run", ["device", "models served", "predictions", "accuracy", "p50 µs", "p99 µs",
                                        "no gaps/duplicates"], rows)
    after_rows = [p for p in tails[TAMPER[0]].rows if refuse_answer and p["t"] > refuse_answer["t"]]
    metrics.update({
        "milestones": [name for name, _ in milestones.reached],
        "milestone_s": dict(milestones.reached),  # reported, not a promise: a busy machine takes longer
        "swap_accepted": bool(swap_answer and swap_answer["accepted"]),
        "swap_models": [ref for ref in dict.fromkeys(p["model"] for p in tails[SWAP[0]].rows)],
        "served_on_new_model": on_new(),
        "tampered_refused": bool(refuse_answer and not refuse_answer["accepted"]),
        "refusal_message": refuse_answer["message"] if refuse_answer else "",
        "served_after_refusal": len(after_rows),
        "models_after_refusal": sorted({p["model"] for p in after_rows}),
    })
    ctx.run.write_json("events.json", events)
    return metrics
