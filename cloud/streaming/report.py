"""The streaming scenario's milestones and summary, read from what its processes leave in one folder.

Lab 07 and the compose overlay ``compose/lab-07.yml`` run the same scenario, and both report it
through this module: the processor's SQLite store (``processed.db``), the drift responder's
``updates.json`` and each device's stats file (``cam-N.json``, written by ``python -m edge.streaming
--stats``). In compose, ``python -m cloud.streaming.report`` is the one-shot ``report`` service: it waits
for the same milestones as ``make lab-07`` (drift injected, detected, update published, every device
on it, K labelled events each, devices drained and stopped, counts settled), prints the same tables,
writes ``summary.json`` and the timeline plot, and exits 0 only if every milestone was reached.

    python -m cloud.streaming.report --folder runs/compose-lab-07 --devices 3 --after-update 400 --cap 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from cloud.labkit.milestones import MilestoneMissed, Milestones
from cloud.streaming.scenario import accuracy, read_json, timeline_figure
from cloud.streaming.store import StoreReader

# Imported inside the functions that use them, to keep this module quick to import: rich.


class ScenarioFolder:
    """The files a streaming scenario writes into one folder, and the questions its milestones ask of them."""

    def __init__(self, folder: Path, devices: int) -> None:
        self.folder = Path(folder)
        self.store = StoreReader(self.folder / "processed.db")
        self.names = [f"cam-{i}" for i in range(devices)]

    def device_stats(self) -> dict[str, dict[str, Any]]:
        """Each device's latest stats file ({} until it wrote one)."""
        return {name: read_json(self.folder / f"{name}.json", {}) for name in self.names}

    def updates(self) -> list[dict[str, Any]]:
        """The drift responder's updates, oldest first."""
        return read_json(self.folder / "updates.json", [])

    def newest(self) -> str | None:
        """The model the last update published, or None."""
        updates = self.updates()
        return updates[-1]["model"] if updates else None

    def device_models(self) -> list[str]:
        """The model each device runs now, from its stats file."""
        return [stats.get("model", "?") for stats in self.device_stats().values()]

    def labelled_on_update(self) -> list[int]:
        """Labelled events each device streamed on the newest update."""
        on = self.store.labelled_on(self.newest() or "-")
        return [on.get(name, (0, None))[0] for name in self.names]

    def delivered(self) -> int:
        """Events the devices' brokers acknowledged, summed over devices."""
        return sum(sum(s.get("delivered", {}).values()) for s in self.device_stats().values())

    def progress_line(self) -> str:
        """One line: each device's acknowledged/processed counts and model version, cloud totals."""
        counts = self.store.counts()
        parts = []
        for name, stats in self.device_stats().items():
            parts.append(f"{name} {sum(stats.get('delivered', {}).values())}/{counts.get(name, 0)} "
                         f"{stats.get('model', '?').split('@')[-1].join(['v', ''])}")
        return ("  ".join(parts) + f"  | cloud {self.store.total()} processed, "
                f"drift alerts {len(self.store.alerts('drift'))}, updates {len(self.updates())}")


def summarize(scenario: ScenarioFolder, *, drift_started: float, drift_all: float, drift_after_s: float,
              started_at: float, tflite: bool, started: str = "lab start") -> dict[str, Any]:
    """Tables and metrics of a finished scenario (``drift_started``: the first device's drift, epoch seconds).

    ``drift_all`` is when every device had drifted (the same time in lab 07; in compose each device
    drifts ``drift_after_s`` after its own start): events before ``drift_started`` count as before the
    drift, events from ``drift_all`` on made with an old model as after it. ``started`` names what
    ``started_at`` is, for the row "<started> to first processed prediction".
    """
    store = scenario.store
    rows = store.predictions()
    counts = store.counts()
    drift_alerts = store.alerts("drift")
    anomalies = [r[0] for r in store.alerts("anomaly")]
    updates = scenario.updates()
    processor_stats = [read_json(p, {}) for p in sorted(scenario.folder.glob("processor-*.json"))]
    duplicates = sum(s.get("duplicates", 0) for s in processor_stats) if processor_stats else None
    detected = drift_alerts[0][0] if drift_alerts else None
    first_source = drift_alerts[0][1] if drift_alerts else None
    delay_events = sum(1 for r in rows if drift_started <= r[0] <= first_source) if first_source else None
    newest = updates[-1]["model"] if updates else None
    updated_at = updates[-1]["published_at"] if updates else None
    before = [r for r in rows if r[0] < drift_started]
    during = [r for r in rows if r[0] >= drift_all and r[2] != newest]
    after = [r for r in rows if newest and r[2] == newest]
    span = max(r[5] for r in rows) - min(r[5] for r in rows) if rows else float("nan")
    on_update = store.labelled_on(newest) if newest else {}
    # Detection to every device swapped: the last device's first prediction on the update.
    swapped = (round(max(first for _, first in on_update.values()) - detected, 2)
               if detected is not None and len(on_update) == len(scenario.names) else None)
    phases = updates[-1].get("phases_s", {}) if updates else {}
    first_processed = store.first_processed_at()
    first_prediction_s = round((first_processed or started_at) - started_at, 2)
    throughput = store.total() / span if span == span and span > 0 else 0.0

    device_rows = []
    for name, stats in scenario.device_stats().items():
        device_rows.append((name, sum(stats.get("produced", {}).values()), sum(stats.get("delivered", {}).values()),
                            counts.get(name, 0), stats.get("model", "?")))
    summary_rows = [
        ("processed events (distinct)", store.total()), ("duplicates dropped", duplicates),
        ("dead letters", store.dead_letters()), ("anomaly alerts", len(anomalies)),
        ("drift injected at (s)", drift_after_s),
        ("drift detected after (s)", None if detected is None else round(detected - drift_started, 2)),
        ("detection delay (labelled events)", delay_events),
        ("model update published after drift (s)",
         None if updated_at is None else round(updated_at - drift_started, 2)),
        ("drift response: " + ", ".join(phases) + " (s)", " + ".join(f"{v:.1f}" for v in phases.values()) or "-"),
        ("detection to every device swapped (s)", swapped),
        ("edge accuracy before drift", accuracy(before)), ("edge accuracy after drift, old model", accuracy(during)),
        ("edge accuracy after update", accuracy(after)),
        ("online model accuracy (whole run)", accuracy(rows, 4)),
        ("held-out window accuracy before -> after retrain",
         f"{updates[-1]['accuracy_before']:.3f} -> {updates[-1]['accuracy_after']:.3f}" if updates else "-"),
        ("TFLite bundle of the update (KB, seconds after ONNX)",
         f"{updates[-1]['tflite_bundle_bytes'] / 1024:.0f} KB, {updates[-1]['tflite_s']} s"
         if updates and "tflite_bundle_bytes" in updates[-1] else "off" if not tflite else "-"),
        ("cloud throughput (events/s while streaming)", throughput),
        (f"{started} to first processed prediction (s)", first_prediction_s),
    ]
    metrics = {
        "devices": {name: {"produced": p, "acknowledged": d, "processed": n, "model": m}
                    for name, p, d, n, m in device_rows},
        "processed": store.total(), "duplicates_dropped": duplicates, "dead_letters": store.dead_letters(),
        "anomaly_alerts": len(anomalies), "drift_alerts": len(drift_alerts),
        "detection_delay_s": None if detected is None else round(detected - drift_started, 2),
        "detection_delay_events": delay_events,
        "update_after_drift_s": None if updated_at is None else round(updated_at - drift_started, 2),
        "new_model": newest, "accuracy_before_drift": accuracy(before), "accuracy_after_drift": accuracy(during),
        "accuracy_after_update": accuracy(after), "online_accuracy": accuracy(rows, 4),
        "updates": updates, "first_prediction_s": first_prediction_s,
        "throughput_eps": round(throughput, 1),
        "response_phases_s": phases, "swapped_after_detection_s": swapped,
        "labelled_on_update_min": min((n for n, _ in on_update.values()), default=0),
    }
    timeline = dict(rows=rows, drift_at=drift_started, detected=detected, updated=updated_at, anomalies=anomalies)
    return {"device_rows": device_rows, "summary_rows": summary_rows, "metrics": metrics, "timeline": timeline}


def wait_for_devices(scenario: ScenarioFolder, milestones: Milestones) -> dict[str, dict[str, Any]]:
    """Wait until every device wrote its stats file with its drift time (the devices need --drift-after)."""
    milestones.wait(f"{len(scenario.names)} devices streaming",
                    lambda: all(s.get("drift_at") is not None for s in scenario.device_stats().values()),
                    status=scenario.progress_line)
    return scenario.device_stats()


def follow(scenario: ScenarioFolder, after_update: int, milestones: Milestones,
           tflite: bool = False) -> dict[str, float]:
    """Wait for the scenario's milestones from outside its processes (devices stop themselves); returns drift times.

    With ``tflite`` it also waits for the TFLite bundle of the update, which the responder signs after
    the ONNX notice (TensorFlow's import and the conversion take seconds that the ONNX devices never wait).
    """
    stats = wait_for_devices(scenario, milestones)
    drift = [s["drift_at"] for s in stats.values()]
    status = scenario.progress_line
    milestones.wait("drift injected", lambda: time.time() >= max(drift), status=status)
    milestones.wait("drift detected", lambda: bool(scenario.store.alerts("drift")), status=status)
    milestones.wait("update published", lambda: scenario.newest() is not None, status=status)
    milestones.wait("every device on the update",
                    lambda: all(m == scenario.newest() for m in scenario.device_models()), status=status)
    milestones.wait(f"{after_update} labelled events per device on the update",
                    lambda: min(scenario.labelled_on_update()) >= after_update, status=status)
    milestones.wait("devices drained and stopped",
                    lambda: all(s.get("final") for s in scenario.device_stats().values()), status=status)
    milestones.wait("counts settled", lambda: scenario.store.total() >= scenario.delivered(),
                    status=lambda: f"{scenario.store.total()} of {scenario.delivered()} delivered events processed")
    if tflite:
        milestones.wait("TFLite bundle of the update signed",
                        lambda: "tflite_bundle_bytes" in (scenario.updates() or [{}])[-1], status=status)
    starts = [s.get("started_at", s["drift_at"]) for s in scenario.device_stats().values()]
    return {"drift_started": min(drift), "drift_all": max(drift), "devices_started": min(starts)}


def print_tables(console, tables) -> None:
    """Print (title, columns, rows) tables with rich: floats to 3 decimals, None as '-'."""
    from rich.table import Table

    for name, columns, rows in tables:
        table = Table(title=name)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*[f"{v:.3f}" if isinstance(v, float) else "-" if v is None else str(v) for v in row])
        console.print(table)


def print_summary(console, report: dict[str, Any], title: str) -> None:
    """Print the per-device table and the summary table."""
    print_tables(console, (
        ("events per device", ["device", "produced", "acknowledged", "processed (once)", "model at the end"],
         report["device_rows"]),
        (title, ["measure", "value"], report["summary_rows"])))


def main(argv: list[str] | None = None) -> int:
    """Follow a running scenario to its milestones, print its summary, write summary.json; 0 if all were reached."""
    from rich.console import Console

    parser = argparse.ArgumentParser(prog="python -m cloud.streaming.report", description=__doc__.split("\n")[0])
    parser.add_argument("--folder", required=True, help="the scenario's folder (processed.db, updates.json, cam-N.json)")
    parser.add_argument("--devices", type=int, default=3, help="devices cam-0 .. cam-N-1 to wait for")
    parser.add_argument("--after-update", type=int, default=400, help="labelled events per device on the update")
    parser.add_argument("--cap", type=float, default=300.0, help="seconds for all milestones together")
    parser.add_argument("--drift-after", type=float, default=25.0, help="the devices' --drift-after (for the table)")
    parser.add_argument("--tflite", action="store_true", help="the responder publishes TFLite bundles too")
    args = parser.parse_args(argv)
    console = Console(width=120)
    scenario = ScenarioFolder(Path(args.folder), args.devices)
    milestones = Milestones(args.cap, progress=lambda line: console.print(line, highlight=False), progress_every_s=10)
    try:
        times = follow(scenario, args.after_update, milestones, tflite=args.tflite)
    except MilestoneMissed as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    report = summarize(scenario, drift_started=times["drift_started"], drift_all=times["drift_all"],
                       drift_after_s=args.drift_after, started_at=times["devices_started"], tflite=args.tflite,
                       started="first device start")
    print_summary(console, report, "compose lab-07 summary")
    metrics = {**report["metrics"], "milestones": [name for name, _ in milestones.reached],
               "milestones_s": dict(milestones.reached)}
    (scenario.folder / "summary.json").write_text(json.dumps(metrics, indent=2, default=str))
    line = report["timeline"]
    if line["rows"]:
        import matplotlib.pyplot as plt

        fig = timeline_figure(line["rows"], times["devices_started"], line["drift_at"], line["detected"],
                              line["updated"], line["anomalies"])
        fig.savefig(scenario.folder / "timeline.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
    console.print(f"summary: {scenario.folder / 'summary.json'}; plot: {scenario.folder / 'timeline.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
