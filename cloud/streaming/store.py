"""The processor's SQLite store: the one schema, the writer the processors share (EventStore) and its read-only reader (StoreReader).

Several processors share one file (WAL mode): it is both the de-duplication memory that survives a
restart and the place labs, benchmarks and tests read results from, while processors write.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from edge.wire.events import Alert


class EventStore:
    """Every processed event once (keyed by event id), dead letters and alerts, in one SQLite file.

    Several processors may share the file (WAL mode): it is both the de-duplication memory that
    survives a restart and the place a lab reads its results from.
    """
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS events (
        event_id TEXT PRIMARY KEY, kind TEXT, device_id TEXT, seq INTEGER, ts REAL,
        topic TEXT, partition INTEGER, "offset" INTEGER, model TEXT, correct INTEGER,
        online_correct INTEGER, anomaly_score REAL, processor TEXT, processed_at REAL);
    CREATE TABLE IF NOT EXISTS dead_letters (
        topic TEXT, partition INTEGER, "offset" INTEGER, reason TEXT, size INTEGER, processed_at REAL,
        PRIMARY KEY (topic, partition, "offset"));
    CREATE TABLE IF NOT EXISTS alerts (
        event_id TEXT PRIMARY KEY, alert TEXT, device_id TEXT, model TEXT, score REAL,
        source_event_id TEXT, source_ts REAL, detail TEXT, ts REAL);
    """
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(self.SCHEMA)
        self._in_tx = False

    def begin(self) -> None:
        """Start a transaction (one per polled batch)."""
        if not self._in_tx:
            self.db.execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def commit(self) -> None:
        """Make the batch durable."""
        if self._in_tx:
            self.db.execute("COMMIT")
            self._in_tx = False

    def rollback(self) -> None:
        """Forget the batch."""
        if self._in_tx:
            self.db.execute("ROLLBACK")
            self._in_tx = False

    def seen(self, event_id: str) -> bool:
        """True when this event id was processed before (by any processor)."""
        return self.db.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone() is not None

    def known(self, event_ids: list[str]) -> set[str]:
        """Which of these event ids were processed before (one query per 500 ids)."""
        found: set[str] = set()
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.db.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk))
        return found

    # Positional parameters, one list per row in EVENT_COLUMNS order: binding a list is cheaper than
    # binding a dict by name, and the processor writes a row for every event.
    EVENT_COLUMNS = ("event_id", "kind", "device_id", "seq", "ts", "topic", "partition", "offset", "model",
                     "correct", "online_correct", "anomaly_score", "processor", "processed_at")
    INSERT_EVENT = f"INSERT OR IGNORE INTO events VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"

    def add_event(self, row: list[Any]) -> bool:
        """Record a processed event (values in EVENT_COLUMNS order); False when its id was already there."""
        return self.db.execute(self.INSERT_EVENT, row).rowcount == 1

    def add_events(self, rows: list[list[Any]]) -> None:
        """Record a batch of processed events (ids already checked with ``known``) in one statement."""
        self.db.executemany(self.INSERT_EVENT, rows)

    def add_dead_letter(self, topic: str, partition: int, offset: int, reason: str, size: int) -> None:
        """Record a refused message (once per source position)."""
        self.db.execute("INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?)",
                        (topic, partition, offset, reason, size, time.time()))

    def add_alert(self, alert: Alert, source_ts: float) -> None:
        """Record an alert the processor raised (once per alert id)."""
        self.db.execute("INSERT OR IGNORE INTO alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (alert.event_id, alert.alert, alert.device_id, alert.model, alert.score,
                         alert.source_event_id, source_ts, alert.detail, alert.ts))

    def counts(self) -> dict[str, dict[str, int]]:
        """Processed events per device and kind."""
        out: dict[str, dict[str, int]] = {}
        for device, kind, n in self.db.execute("SELECT device_id, kind, COUNT(*) FROM events GROUP BY 1, 2"):
            out.setdefault(device, {})[kind] = n
        return out

    def total(self) -> int:
        """Processed events, all devices."""
        return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def close(self) -> None:
        """Close the connection."""
        self.rollback()
        self.db.close()


class StoreReader:
    """Read-only queries over the processor's SQLite store (safe while processors write)."""
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Rows of a query, or [] when the store does not exist yet."""
        if not self.path.exists():
            return []
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []
        finally:
            db.close()

    def counts(self) -> dict[str, int]:
        """Processed events per device (all kinds)."""
        return dict(self._query("SELECT device_id, COUNT(*) FROM events GROUP BY 1"))

    def total(self) -> int:
        """Processed events."""
        rows = self._query("SELECT COUNT(*) FROM events")
        return rows[0][0] if rows else 0

    def predictions(self) -> list[tuple]:
        """(ts, device, model, correct, online_correct, processed_at) of every labelled prediction, by ts."""
        return self._query("SELECT ts, device_id, model, correct, online_correct, processed_at FROM events "
                           "WHERE kind = 'prediction' AND correct IS NOT NULL ORDER BY ts")

    def alerts(self, kind: str) -> list[tuple]:
        """(ts, source_ts, device, model, score, detail) of alerts of one kind, by time."""
        return self._query("SELECT ts, source_ts, device_id, model, score, detail FROM alerts WHERE alert = ? "
                           "ORDER BY ts", (kind,))

    def labelled_on(self, model: str) -> dict[str, tuple[int, float]]:
        """Per device: labelled predictions made with ``model`` and the time of its first one."""
        rows = self._query("SELECT device_id, COUNT(*), MIN(ts) FROM events WHERE kind = 'prediction' AND model = ? "
                           "AND correct IS NOT NULL GROUP BY 1", (model,))
        return {device: (count, first) for device, count, first in rows}

    def dead_letters(self) -> int:
        """Messages refused to dead-letter."""
        rows = self._query("SELECT COUNT(*) FROM dead_letters")
        return rows[0][0] if rows else 0

    def first_processed_at(self) -> float | None:
        """Wall time the first prediction was processed."""
        rows = self._query("SELECT MIN(processed_at) FROM events WHERE kind = 'prediction'")
        return rows[0][0] if rows else None
