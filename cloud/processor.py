"""The cloud's stream processor: online learning, drift and anomaly detection over the devices' events.

One process is one member of a Kafka consumer group over ``telemetry`` and ``predictions``; start
several and they split the partitions, kill one and the others take its partitions over.

For every event it reads, it:

* refuses malformed, oversized and wrong-schema messages to ``dead-letter`` (original bytes as the
  value; source topic, partition, offset and the reason as headers), and carries on;
* drops duplicates by event id (a shared SQLite store of processed events, ``EventStore``);
* predictions: the online model (River, StandardScaler | SoftmaxRegression on a 4x4 pooled frame)
  predicts then learns (progressive validation), and ADWIN watches the edge model's error stream,
  one detector per model version; a rise in error is a ``drift`` alert;
* telemetry: MinMax scaling then HalfSpaceTrees; a high score is an ``anomaly`` alert.

Processing is at-least-once with exactly-once counts: per polled batch it produces alerts and dead
letters, waits for the broker, commits the store's transaction, and only then commits the offsets.
A crash anywhere replays at most the uncommitted batch, whose events the store already knows.

Run it with ``python -m cloud.processor --bootstrap HOST:9092 --store stream.db``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloud.topics import ALERTS, DEAD_LETTER, PREDICTIONS, TELEMETRY
from edge.events import Alert, PredictionEvent, Telemetry, parse_event, stable_event_id

TOPIC_KINDS = {TELEMETRY: "telemetry", PREDICTIONS: "prediction"}
GROUP = "stream-processor"


# ----------------------------------------------------------------------------- the store of processed events


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

    def add_event(self, row: dict[str, Any]) -> bool:
        """Record a processed event; False when its id was already there."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO events VALUES (:event_id, :kind, :device_id, :seq, :ts, :topic, :partition, "
            ":offset, :model, :correct, :online_correct, :anomaly_score, :processor, :processed_at)", row)
        return cur.rowcount == 1

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


# ----------------------------------------------------------------------------- the processing logic (no Kafka)


def pooled_features(features: list[float]) -> dict[str, float]:
    """An 8x8 frame averaged over 2x2 blocks: 16 features (4x faster online learning than 64)."""
    x = np.asarray(features, dtype=np.float64).reshape(4, 2, 4, 2).mean(axis=(1, 3)).ravel()  # 16
    return {f"p{i}": float(v) for i, v in enumerate(x)}


@dataclass
class Outcome:
    """What processing one event produced."""

    new: bool
    alerts: list[Alert] = field(default_factory=list)
    row: dict[str, Any] = field(default_factory=dict)


class StreamProcessor:
    """The per-event work, independent of Kafka: dedupe, online model, drift and anomaly detectors.

    Examples
    --------
    >>> p = StreamProcessor(EventStore(":memory:"), name="doc")
    >>> from edge.events import Telemetry
    >>> t = Telemetry(device_id="cam-0", seq=0, brightness=0.3, contrast=0.3, saturated=0.1,
    ...               confidence=0.9, latency_us=20.0)
    >>> p.process(t).new, p.process(t).new, p.duplicates
    (True, False, 1)
    """

    def __init__(self, store: EventStore, name: str = "processor", seed: int = 0,
                 anomaly_threshold: float = 0.995, anomaly_warmup: int = 300,
                 adwin_delta: float = 0.002, min_drift_events: int = 30) -> None:
        from river import anomaly, compose, drift, linear_model, metrics, preprocessing

        self._adwin = drift.ADWIN
        self.store = store
        self.name = name
        self.online = compose.Pipeline(preprocessing.StandardScaler(), linear_model.SoftmaxRegression())
        self.online_accuracy = metrics.Accuracy()
        self.edge_accuracy = metrics.Accuracy()
        self.scaler = preprocessing.MinMaxScaler()
        self.hst = anomaly.HalfSpaceTrees(seed=seed)
        self.anomaly_threshold = anomaly_threshold
        self.anomaly_warmup = anomaly_warmup
        self.adwin_delta = adwin_delta
        self.min_drift_events = min_drift_events
        self.detectors: dict[str, Any] = {}  # model ref -> ADWIN on that model's error stream
        self.errors_seen: Counter[str] = Counter()
        self.telemetry_seen = 0
        self.duplicates = 0
        self.processed: Counter[str] = Counter()

    def process(self, event, topic: str = "", partition: int = -1, offset: int = -1) -> Outcome:
        """Process one parsed event unless it was seen before; returns the outcome."""
        if self.store.seen(event.event_id):
            self.duplicates += 1
            return Outcome(new=False)
        row = {"event_id": event.event_id, "kind": event.kind, "device_id": event.device_id,
               "seq": getattr(event, "seq", None), "ts": event.ts, "topic": topic, "partition": partition,
               "offset": offset, "model": None, "correct": None, "online_correct": None,
               "anomaly_score": None, "processor": self.name, "processed_at": time.time()}
        alerts: list[Alert] = []
        if isinstance(event, PredictionEvent):
            alerts += self._prediction(event, row)
        elif isinstance(event, Telemetry):
            alerts += self._telemetry(event, row)
        if not self.store.add_event(row):  # another processor got there first
            self.duplicates += 1
            return Outcome(new=False)
        for alert in alerts:
            self.store.add_alert(alert, event.ts)
        self.processed[event.kind] += 1
        return Outcome(True, alerts, row)

    def _prediction(self, event: PredictionEvent, row: dict[str, Any]) -> list[Alert]:
        """Online model (progressive validation) and the drift detector on the edge model's errors."""
        row["model"] = event.model
        if event.true_label is None:
            return []
        if len(event.features) == 64:
            x = pooled_features(event.features)
            guess = self.online.predict_one(x)
            self.online.learn_one(x, event.true_label)
            if guess is not None:
                self.online_accuracy.update(event.true_label, guess)
                row["online_correct"] = int(guess == event.true_label)
        error = int(event.predicted != event.true_label)
        row["correct"] = 1 - error
        self.edge_accuracy.update(event.true_label, event.predicted)
        detector = self.detectors.setdefault(event.model, self._adwin(delta=self.adwin_delta, clock=8))
        before = detector.estimation
        detector.update(error)
        self.errors_seen[event.model] += 1
        if detector.drift_detected and detector.estimation > before and self.errors_seen[event.model] >= self.min_drift_events:
            detail = (f"{event.model}: error rate rose from {before:.3f} to {detector.estimation:.3f} "
                      f"(ADWIN, delta={self.adwin_delta}) after {self.errors_seen[event.model]} labelled events")
            return [Alert(event_id=stable_event_id("drift", event.event_id), device_id=event.device_id,
                          alert="drift", model=event.model, score=float(detector.estimation),
                          source_event_id=event.event_id, detail=detail)]
        return []

    def _telemetry(self, event: Telemetry, row: dict[str, Any]) -> list[Alert]:
        """MinMax-scaled telemetry into HalfSpaceTrees; a high score after warm-up is an anomaly alert."""
        x = {"brightness": event.brightness, "contrast": event.contrast, "saturated": event.saturated,
             "confidence": event.confidence}
        self.scaler.learn_one(x)
        scaled = {k: min(1.0, max(0.0, v)) for k, v in self.scaler.transform_one(x).items()}
        score = float(self.hst.score_one(scaled))
        self.hst.learn_one(scaled)
        self.telemetry_seen += 1
        row["anomaly_score"] = score
        if self.telemetry_seen > self.anomaly_warmup and score >= self.anomaly_threshold:
            return [Alert(event_id=stable_event_id("anomaly", event.event_id), device_id=event.device_id,
                          alert="anomaly", score=score, source_event_id=event.event_id,
                          detail=f"HalfSpaceTrees score {score:.3f} >= {self.anomaly_threshold} on {x}")]
        return []


# ----------------------------------------------------------------------------- dead letters


def dead_letter_headers(topic: str, partition: int, offset: int, reason: str) -> list[tuple[str, bytes]]:
    """Kafka headers that say where a refused message came from and why."""
    return [("dl.reason", reason.encode()), ("dl.topic", topic.encode()),
            ("dl.partition", str(partition).encode()), ("dl.offset", str(offset).encode())]


def read_dead_letter(record) -> dict[str, Any]:
    """A dead-letter record as a dict: original bytes, source topic/partition/offset, reason."""
    headers = {k: v.decode() for k, v in (record.headers or [])}
    return {"value": record.value, "reason": headers.get("dl.reason", ""), "topic": headers.get("dl.topic", ""),
            "partition": int(headers.get("dl.partition", -1)), "offset": int(headers.get("dl.offset", -1))}


# ----------------------------------------------------------------------------- the Kafka loop


class ProcessorService:
    """A StreamProcessor in a consumer group: poll, process, produce alerts, commit the store, commit offsets."""

    def __init__(self, bootstrap: str, store_path: Path, group: str = GROUP, name: str | None = None,
                 seed: int = 0, log=print, ready_file: Path | None = None, status_every_s: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.store = EventStore(store_path)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.logic = StreamProcessor(self.store, name=self.name, seed=seed)
        self.group = group
        self.log = log
        self.ready_file = Path(ready_file) if ready_file else None
        self.status_every_s = status_every_s
        self.dead_letters = 0
        self.assigned: list[int] = []
        self.stop = threading.Event()

    def run(self, max_seconds: float | None = None) -> dict[str, Any]:
        """Consume until stopped (or max_seconds); returns the processor's stats."""
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener
        from kafka.errors import CommitFailedError, KafkaError

        from cloud.topics import ensure_topics
        from edge.kafka import consumer_config, producer_config

        ensure_topics(self.bootstrap)
        service = self

        class Listener(ConsumerRebalanceListener):
            """Log partition moves; the first assignment marks the processor ready."""

            def on_partitions_revoked(self, revoked):
                if revoked:
                    service.log(f"{service.name}: partitions revoked {sorted((t.topic, t.partition) for t in revoked)}")

            def on_partitions_assigned(self, assigned):
                service.assigned = sorted({t.partition for t in assigned})
                service.log(f"{service.name}: partitions assigned "
                            f"{sorted((t.topic, t.partition) for t in assigned)}")
                if service.ready_file is not None and not service.ready_file.exists():
                    service.ready_file.write_text(json.dumps({"pid": os.getpid(), "t": time.time()}))

        consumer = KafkaConsumer(**consumer_config(self.bootstrap, self.group, max_poll_records=1000,
                                                   session_timeout_ms=6000, heartbeat_interval_ms=1000))
        consumer.subscribe([TELEMETRY, PREDICTIONS], listener=Listener())
        producer = KafkaProducer(**producer_config(self.bootstrap, linger_ms=5))
        started = time.monotonic()
        next_status = started + self.status_every_s
        try:
            while not self.stop.is_set():
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
                batches = consumer.poll(timeout_ms=200)
                if batches:
                    offsets = self._process(batches, producer)
                    try:
                        consumer.commit(offsets)
                    except (CommitFailedError, KafkaError) as exc:
                        # The partitions moved on; their next owner replays them and the store drops repeats.
                        self.log(f"{self.name}: offset commit failed ({type(exc).__name__}); "
                                 "the new owner will replay, duplicates are dropped by event id")
                if time.monotonic() >= next_status:
                    next_status += self.status_every_s
                    self.log(self.status_line(time.monotonic() - started))
        finally:
            consumer.close()
            producer.close(timeout=5)
            self.store.close()
        return self.stats(time.monotonic() - started)

    def _process(self, batches, producer) -> dict:
        """Process one polled batch and return the offsets to commit (after the store commits)."""
        from kafka.structs import OffsetAndMetadata

        futures = []
        self.store.begin()
        try:
            for tp, records in batches.items():
                for record in records:
                    futures += self._one(record, producer)
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=0)
            self.store.commit()
        except BaseException:
            self.store.rollback()
            raise
        return {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1) for tp, records in batches.items()}

    def _one(self, record, producer) -> list:
        """Parse and process one record; returns the futures of what it produced."""
        parsed = parse_event(record.value, expect=TOPIC_KINDS.get(record.topic))
        if not parsed.ok:
            return [self._dead_letter(record, parsed.reason, producer)]
        try:
            outcome = self.logic.process(parsed.event, record.topic, record.partition, record.offset)
        except Exception as exc:  # noqa: BLE001 - a bad event must not stop the consumer
            return [self._dead_letter(record, f"processing error: {type(exc).__name__}: {exc}", producer)]
        futures = []
        for alert in outcome.alerts:
            if alert.alert == "drift":
                self.log(f"{self.name}: DRIFT {alert.detail}")
            futures.append(producer.send(ALERTS, key=alert.device_id.encode(), value=alert.to_bytes()))
        return futures

    def _dead_letter(self, record, reason: str, producer):
        """Send the original bytes to dead-letter with where they came from and why."""
        self.dead_letters += 1
        value = record.value if record.value is not None else b""
        self.store.add_dead_letter(record.topic, record.partition, record.offset, reason, len(value))
        return producer.send(DEAD_LETTER, key=record.key, value=value,
                             headers=dead_letter_headers(record.topic, record.partition, record.offset, reason))

    def status_line(self, seconds: float) -> str:
        """One line of progress."""
        n = sum(self.logic.processed.values())
        return (f"{self.name}: {n} processed ({n / max(seconds, 1e-9):.0f}/s), {self.logic.duplicates} duplicates "
                f"dropped, {self.dead_letters} dead letters, partitions {self.assigned}, online accuracy "
                f"{self.logic.online_accuracy.get():.3f}")

    def stats(self, seconds: float) -> dict[str, Any]:
        """Counts and rates for summaries."""
        return {"name": self.name, "processed": dict(self.logic.processed), "duplicates": self.logic.duplicates,
                "dead_letters": self.dead_letters, "seconds": round(seconds, 2),
                "online_accuracy": self.logic.online_accuracy.get(), "edge_accuracy": self.logic.edge_accuracy.get()}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m cloud.processor --bootstrap HOST:9092 --store PATH``."""
    parser = argparse.ArgumentParser(prog="python -m cloud.processor", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--store", default=os.environ.get("PROCESSOR_STORE", "runs/stream/processed.db"),
                        help="SQLite file of processed events (shared by the group's processors)")
    parser.add_argument("--group", default=GROUP)
    parser.add_argument("--name", default=None, help="this processor's name in logs and the store")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ready-file", default=None, help="written once partitions are assigned")
    parser.add_argument("--stats", default=None, help="write the final stats as JSON here")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    args = parser.parse_args(argv)
    log = lambda line: print(line, flush=True)  # noqa: E731
    service = ProcessorService(args.bootstrap, Path(args.store), args.group, args.name, args.seed, log,
                               Path(args.ready_file) if args.ready_file else None)
    signal.signal(signal.SIGTERM, lambda *_: service.stop.set())
    signal.signal(signal.SIGINT, lambda *_: service.stop.set())
    log(f"{service.name}: joining group {args.group!r} on {args.bootstrap}; store {args.store}")
    stats = service.run(args.duration)
    log(f"{service.name}: stopped; {json.dumps(stats)}")
    if args.stats:
        Path(args.stats).write_text(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
