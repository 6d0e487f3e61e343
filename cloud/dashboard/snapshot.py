"""One JSON snapshot of a running scenario, read only from the files its processes write (never from the broker).

The streaming side comes from the scenario folder lab 07 and ``compose/lab-07.yml`` write
(``cloud.streaming.report.ScenarioFolder``): the processors' SQLite store ``processed.db``, the
drift responder's ``updates.json`` and each device's stats file (``cam-N.json``, found by globbing
for files with a ``device`` key, so any number of devices with any names shows up). The federated
side comes from each run's round journal ``fl-metrics.json`` (``cloud.federated.journal``), with the
private runs' ε per device and ciphertext bytes when lab 11 wrote them. Because nothing here talks
to Kafka or the SuperLink, the snapshot keeps coming while the broker restarts.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cloud.federated.config import METRICS_FILE
from cloud.streaming.report import ScenarioFolder
from cloud.streaming.scenario import read_json
from cloud.streaming.store import StoreReader

RECENT_WINDOW = 100  # labelled predictions per device behind "accuracy (recent)"
TIMELINE_BINS = 120  # at most this many points per line in the accuracy timeline
LIST_LIMIT = 50  # newest alerts and dead letters kept in a snapshot
NOT_DEVICE_FILES = {"updates.json", "summary.json", METRICS_FILE}


class DeadLetterReader(StoreReader):
    """The store's dead letters with their reasons (read-only, like every StoreReader query)."""

    def reasons(self) -> list[tuple[str, int]]:
        """(reason, count) of every refusal reason, most frequent first."""
        return self._query("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason ORDER BY 2 DESC, 1")

    def recent(self, limit: int = LIST_LIMIT) -> list[tuple]:
        """(topic, partition, offset, reason, size, processed_at) of the newest dead letters, newest first."""
        return self._query('SELECT topic, partition, "offset", reason, size, processed_at FROM dead_letters '
                           "ORDER BY processed_at DESC LIMIT ?", (limit,))


def finite(value: Any, digits: int = 4) -> float | None:
    """A float rounded for the page, or None for missing, NaN and infinite values (JSON has no NaN)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, digits) if math.isfinite(number) else None


def mean(values: list[Any]) -> float | None:
    """Mean of the values that are not None, or None when there are none."""
    present = [v for v in values if v is not None]
    return finite(sum(present) / len(present)) if present else None


def device_stats_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Every device stats file in the folder (a JSON object with a ``device`` key), by device id."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(folder).glob("*.json")):
        if path.name in NOT_DEVICE_FILES or path.name.startswith("processor-"):
            continue
        stats = read_json(path, None)
        if isinstance(stats, dict) and isinstance(stats.get("device"), str):
            found[stats["device"]] = stats
    return found


def model_version(model: str | None) -> str | None:
    """The version part of a model name ('digits-stream@2' -> '2'), or None."""
    if not model or "@" not in model:
        return None
    return model.rsplit("@", 1)[1]


def timeline(rows: list[tuple], bins: int = TIMELINE_BINS) -> dict[str, Any]:
    """Edge-model and online-model accuracy over event time, in at most ``bins`` equal time bins."""
    if not rows:
        return {"t0": None, "bin_s": None, "points": []}
    t0, t1 = rows[0][0], rows[-1][0]
    bin_s = max(1.0, math.ceil((t1 - t0) / bins)) if t1 > t0 else 1.0
    grouped: dict[int, list[tuple]] = {}
    for row in rows:
        grouped.setdefault(int((row[0] - t0) // bin_s), []).append(row)
    points = [{"t": round(index * bin_s + bin_s / 2, 2), "n": len(group),
               "edge": mean([r[3] for r in group]), "online": mean([r[4] for r in group])}
              for index, group in sorted(grouped.items())]
    return {"t0": t0, "bin_s": bin_s, "points": points}


def stream_snapshot(folder: Path) -> dict[str, Any]:
    """Devices, accuracy timeline, alerts, dead letters and updates of one streaming scenario folder."""
    folder = Path(folder)
    stats = device_stats_files(folder)
    scenario = ScenarioFolder(folder, 0)  # devices come from the stats files found, not from a count
    store = scenario.store
    dead = DeadLetterReader(store.path)
    rows = store.predictions()  # (ts, device, model, correct, online_correct, processed_at), by ts
    processed = store.counts()
    by_device: dict[str, list[tuple]] = {}
    for row in rows:
        by_device.setdefault(row[1], []).append(row)
    devices = []
    for name in sorted(set(stats) | set(processed)):
        info = stats.get(name, {})
        mine = by_device.get(name, [])
        recent = mine[-RECENT_WINDOW:]
        model = info.get("model") or (mine[-1][2] if mine else None)
        devices.append({
            "device": name, "model": model, "version": model_version(model),
            "accuracy_recent": mean([r[3] for r in recent]), "recent_window": len(recent),
            "labelled": len(mine), "processed": processed.get(name, 0),
            "served": info.get("served"), "produced": sum(info.get("produced", {}).values()),
            "delivered": sum(info.get("delivered", {}).values()), "pending": info.get("pending"),
            "last_seen": finite(info.get("t"), 3) if info else (finite(mine[-1][5], 3) if mine else None),
            "drift_at": finite(info.get("drift_at"), 3), "final": bool(info.get("final")),
        })
    alerts = [{"kind": kind, "ts": finite(ts, 3), "source_ts": finite(source_ts, 3), "device": device,
               "model": model, "score": finite(score), "detail": detail}
              for kind in ("drift", "anomaly") for ts, source_ts, device, model, score, detail in store.alerts(kind)]
    alerts.sort(key=lambda a: a["ts"] or 0, reverse=True)
    counts = Counter(a["kind"] for a in alerts)
    updates = [{"model": u.get("model"), "published_at": finite(u.get("published_at"), 3),
                "accuracy_before": finite(u.get("accuracy_before")), "accuracy_after": finite(u.get("accuracy_after")),
                "retrain_s": finite(u.get("retrain_s"), 2)} for u in scenario.updates() if isinstance(u, dict)]
    line = timeline(rows)
    drifts = sorted(d["drift_at"] for d in devices if d["drift_at"])
    markers = ([{"kind": "drift injected", "ts": t} for t in drifts[:1]]
               + [{"kind": "drift detected", "ts": a["ts"]} for a in alerts if a["kind"] == "drift"][-1:]
               + [{"kind": "update published", "ts": u["published_at"]} for u in updates if u["published_at"]])
    return {
        "folder": str(folder), "found": folder.is_dir(),
        "totals": {"devices": len(devices), "processed": store.total(), "labelled": len(rows),
                   "dead_letters": store.dead_letters(), "drift_alerts": counts["drift"],
                   "anomaly_alerts": counts["anomaly"], "updates": len(updates)},
        "devices": devices,
        "timeline": {**line, "markers": [m for m in markers if line["t0"] is not None and m["ts"] is not None]},
        "alerts": alerts[:LIST_LIMIT],
        "dead_letters": {
            "count": store.dead_letters(),
            "reasons": [{"reason": reason, "count": n} for reason, n in dead.reasons()],
            "recent": [{"topic": topic, "partition": partition, "offset": offset, "reason": reason, "size": size,
                        "processed_at": finite(at, 3)} for topic, partition, offset, reason, size, at in dead.recent()],
        },
        "updates": updates,
    }


def journal_paths(path: Path) -> list[Path]:
    """The round journals under a --fl path: the file itself, its folder's fl-metrics.json, or every one below it."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / METRICS_FILE).is_file():
        return [path / METRICS_FILE]
    return sorted(path.rglob(METRICS_FILE)) if path.is_dir() else []


def fl_round(entry: dict[str, Any], encrypted: bool) -> dict[str, Any]:
    """One journal round for the page: participants, their metrics, central metrics, bytes, dropouts."""
    train = sorted(entry.get("train", []), key=lambda r: r.get("partition_id", -1))
    central = entry.get("central") or {}
    return {
        "round": entry.get("round"),
        "participants": [r.get("partition_id") for r in train],
        "train": [{"partition_id": r.get("partition_id"), "num_examples": r.get("num_examples"),
                   "train_loss": finite(r.get("train_loss")), "received_accuracy": finite(r.get("received_accuracy")),
                   "epsilon": finite(r.get("epsilon"))} for r in train],
        "evaluate": [{"partition_id": r.get("partition_id"), "eval_accuracy": finite(r.get("eval_accuracy"))}
                     for r in sorted(entry.get("evaluate", []), key=lambda r: r.get("partition_id", -1))],
        "central_accuracy": finite(central.get("accuracy")), "central_loss": finite(central.get("loss")),
        "train_loss": finite(entry.get("train_loss")),
        "bytes_up": entry.get("bytes_up", 0), "bytes_down": entry.get("bytes_down", 0),
        "bytes_eval": entry.get("bytes_eval"), "encrypted": encrypted,
        "dropouts": [{"node_id": str(d.get("node_id")), "partition_id": d.get("partition_id"),
                      "reason": d.get("reason")} for d in entry.get("dropouts", [])],
        "refusals": [str(e.get("reason", "")) for e in entry.get("refusals", [])],
        "errors": len(entry.get("errors", [])),
        "seconds": finite(entry.get("seconds"), 2), "closed": "seconds" in entry,
    }


def fl_run(path: Path, label: str) -> dict[str, Any]:
    """One federated run's journal for the page, with ε per device and HE bytes when the run is private."""
    journal = read_json(path, None)
    if not isinstance(journal, dict):
        return {"label": label, "path": str(path), "status": "waiting for " + METRICS_FILE, "rounds": []}
    config = journal.get("config") or {}
    privacy = config.get("privacy")
    encrypted = bool(privacy and "he" in privacy)
    rounds = [fl_round(e, encrypted) for e in journal.get("rounds", []) if isinstance(e, dict)]
    epsilon: dict[str, float] = {}  # ε a device has spent so far: its ledger only grows
    for entry in rounds:
        for row in entry["train"]:
            if row["epsilon"] is not None:
                key = str(row["partition_id"])
                epsilon[key] = max(epsilon.get(key, 0.0), row["epsilon"])
    initial = journal.get("central_initial") or {}
    return {
        "label": label, "path": str(path), "run_id": str(journal.get("run_id")), "status": journal.get("status"),
        "error": journal.get("error"), "stopped": journal.get("stopped"), "privacy": privacy,
        "encrypted": encrypted, "num_rounds": config.get("num_server_rounds"),
        "he_public_context_bytes": journal.get("he_public_context_bytes"),
        "dp_budgets": config.get("dp_budgets"), "initial_accuracy": finite(initial.get("accuracy")),
        "epsilon": [{"partition_id": k, "epsilon": v} for k, v in sorted(epsilon.items(), key=lambda kv: kv[0])],
        "rounds": rounds,
    }


def fl_snapshot(paths: list[Path]) -> list[dict[str, Any]]:
    """Every federated run found under the --fl paths, in the order given."""
    runs = []
    for root in map(Path, paths):
        found = journal_paths(root)
        if not found:
            runs.append({"label": root.name or str(root), "path": str(root), "status": "waiting for " + METRICS_FILE,
                         "rounds": []})
        for path in found:
            below = root.is_dir() and path.parent != root  # one of several runs under a lab's folder
            runs.append(fl_run(path, str(path.parent.relative_to(root)) if below else path.parent.name))
    return runs


def snapshot(stream_folder: Path | None, fl_folders: list[Path]) -> dict[str, Any]:
    """The whole page's data: the streaming scenario (or None) and the federated runs."""
    return {"stream": stream_snapshot(stream_folder) if stream_folder is not None else None,
            "federated": fl_snapshot(fl_folders)}


def files_signature(stream_folder: Path | None, fl_folders: list[Path]) -> tuple:
    """(name, mtime, size) of every file a snapshot reads: equal signatures, equal snapshots."""
    paths: list[Path] = []
    if stream_folder is not None and Path(stream_folder).is_dir():
        paths += sorted(Path(stream_folder).glob("*.json")) + sorted(Path(stream_folder).glob("processed.db*"))
    for root in fl_folders:
        paths += journal_paths(Path(root))
    signature = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue  # replaced between the glob and the stat: the next look sees the new file
        signature.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(signature)


class Snapshotter:
    """Builds snapshots for every page and stream at once, re-reading the files only when one of them changed."""

    def __init__(self, stream_folder: Path | None, fl_folders: list[Path]) -> None:
        self.stream_folder = Path(stream_folder) if stream_folder is not None else None
        self.fl_folders = [Path(p) for p in fl_folders]
        self._lock = threading.Lock()
        self._signature: tuple | None = None
        self._data: dict[str, Any] | None = None
        self._built_at = 0.0

    def get(self, max_age_s: float = 5.0) -> dict[str, Any]:
        """The current snapshot, rebuilt when a file changed (and every ``max_age_s``, to be safe)."""
        with self._lock:
            signature = files_signature(self.stream_folder, self.fl_folders)
            stale = time.monotonic() - self._built_at > max_age_s
            if self._data is None or signature != self._signature or stale:
                self._data = snapshot(self.stream_folder, self.fl_folders)
                self._signature, self._built_at = signature, time.monotonic()
            return self._data
