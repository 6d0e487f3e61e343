"""The cloud's stream processor: online learning, drift and anomaly detection over the devices' events.

One process is one member of a Kafka consumer group over ``telemetry`` and ``predictions``; start
several and they split the partitions, kill one and the others take its partitions over.

For every event it reads, it:

* refuses malformed, oversized and wrong-schema messages to ``dead-letter`` (original bytes as the
  value; source topic, partition, offset and the reason as headers), and carries on;
* drops duplicates by event id (a shared SQLite store of processed events, ``store.EventStore``);
* predictions: the online model (River, StandardScaler | SoftmaxRegression on a 4x4 pooled frame)
  predicts then learns (progressive validation), and ADWIN watches the edge model's error stream,
  one detector per model version; a rise in error is a ``drift`` alert;
* telemetry: MinMax scaling then HalfSpaceTrees; a high score is an ``anomaly`` alert.

The River parts are built by ``online.build_online_model``: change the models there.

Processing is at-least-once with exactly-once counts: per polled batch it produces alerts and dead
letters, waits for the broker, commits the store's transaction, and only then commits the offsets.
A crash anywhere replays at most the uncommitted batch, whose events the store already knows.

Run it with ``python -m cloud.streaming.processor --bootstrap HOST:9092 --store stream.db``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud.settings import load_settings
from cloud.stack.broker import ensure_topics
from cloud.streaming.clients import CLIENTS, CommitFailed, open_group
from cloud.streaming.online import build_online_model
from cloud.streaming.store import EventStore
from edge.log import log_line
from edge.wire.events import Alert, PredictionEvent, Telemetry, parse_events, stable_event_id
from edge.wire.topics import ALERTS, DEAD_LETTER, PREDICTIONS, TELEMETRY

# Imported inside the functions that use them, to keep this module quick to import: river.

TOPIC_KINDS = {TELEMETRY: "telemetry", PREDICTIONS: "prediction"}
GROUP = "stream-processor"


# ----------------------------------------------------------------------------- the processing logic (no Kafka)


_POOL_NAMES = tuple(f"p{i}" for i in range(16))
_POOL_CORNERS = tuple(16 * row + 2 * col for row in range(4) for col in range(4))  # top-left pixel of each 2x2 block


def pooled_features(features: list[float]) -> dict[str, float]:
    """An 8x8 frame averaged over 2x2 blocks: 16 features (4x faster online learning than 64).

    Plain Python over the event's list of floats: for 64 numbers, numpy's conversion and per-call overhead
    cost more than the arithmetic (about 9 us against 3 us here), and this runs for every prediction.
    """
    f = features
    return {name: (f[i] + f[i + 1] + f[i + 8] + f[i + 9]) * 0.25 for name, i in zip(_POOL_NAMES, _POOL_CORNERS)}


@dataclass(slots=True)
class Outcome:
    """What processing one event produced."""
    new: bool
    alerts: list[Alert] = field(default_factory=list)
    row: list[Any] | None = None  # the stored row, in EventStore.EVENT_COLUMNS order
    error: str = ""  # why processing failed (the event goes to dead-letter)


_DUPLICATE = Outcome(new=False, alerts=[])  # shared by every duplicate: outcomes are read, never changed


class StreamProcessor:
    """The per-event work, independent of Kafka: dedupe, online model, drift and anomaly detectors.

    Examples
    --------
    >>> p = StreamProcessor(EventStore(":memory:"), name="doc")
    >>> from edge.wire.events import Telemetry
    >>> t = Telemetry(device_id="cam-0", seq=0, brightness=0.3, contrast=0.3, saturated=0.1,
    ...               confidence=0.9, latency_us=20.0)
    >>> p.process(t).new, p.process(t).new, p.duplicates
    (True, False, 1)
    """
    def __init__(self, store: EventStore, name: str = "processor", seed: int = 0,
                 anomaly_threshold: float = 0.995, anomaly_warmup: int = 300,
                 adwin_delta: float = 0.002, min_drift_events: int = 30) -> None:
        # River is heavy (about 2 s): imported when a processor is built, not on import
        from river import metrics

        self.store = store
        self.name = name
        self.online = build_online_model(seed=seed, adwin_delta=adwin_delta)
        self.online_accuracy = metrics.Accuracy()
        self.edge_accuracy = metrics.Accuracy()
        self.anomaly_threshold = anomaly_threshold
        self.anomaly_warmup = anomaly_warmup
        self.adwin_delta = adwin_delta
        self.min_drift_events = min_drift_events
        self.detectors: dict[str, Any] = {}  # model ref -> drift detector (ADWIN) on that model's error stream
        self.errors_seen: Counter[str] = Counter()
        self.telemetry_seen = 0
        self.duplicates = 0
        self.processed: Counter[str] = Counter()

    def process(self, event, topic: str = "", partition: int = -1, offset: int = -1) -> Outcome:
        """Process one parsed event unless it was seen before; returns the outcome."""
        return self.process_batch([(event, topic, partition, offset)])[0]

    def process_batch(self, items: list[tuple[Any, str, int, int]]) -> list[Outcome]:
        """Process (event, topic, partition, offset) items in order, skipping ids seen before; one outcome each.

        The store is asked once which ids it knows and written once, so a polled batch costs two
        SQLite statements instead of two per event. Call it inside the store's transaction
        (``EventStore.begin``): that holds the write lock, so no other processor adds ids meanwhile.
        """
        seen = self.store.known([event.event_id for event, *_ in items])
        outcomes, rows, now, name = [], [], time.time(), self.name
        no_alerts: list[Alert] = []
        for event, topic, partition, offset in items:
            if event.event_id in seen:  # processed before, or earlier in this batch
                self.duplicates += 1
                outcomes.append(_DUPLICATE)
                continue
            # The stored row, in EventStore.EVENT_COLUMNS order; _prediction and _telemetry fill slots 8-11.
            row = [event.event_id, event.kind, event.device_id, getattr(event, "seq", None), event.ts, topic,
                   partition, offset, None, None, None, None, name, now]
            try:
                if isinstance(event, PredictionEvent):
                    alerts = self._prediction(event, row)
                elif isinstance(event, Telemetry):
                    alerts = self._telemetry(event, row)
                else:
                    alerts = no_alerts
            except Exception as exc:  # noqa: BLE001 - one bad event must not stop the batch
                outcomes.append(Outcome(new=False, error=f"processing error: {type(exc).__name__}: {exc}"))
                continue
            seen.add(event.event_id)
            rows.append(row)
            for alert in alerts:
                self.store.add_alert(alert, event.ts)
            self.processed[event.kind] += 1
            outcomes.append(Outcome(True, alerts, row))
        self.store.add_events(rows)
        return outcomes

    # Slots of the stored row that the per-kind work fills (EventStore.EVENT_COLUMNS).
    MODEL, CORRECT, ONLINE_CORRECT, ANOMALY_SCORE = 8, 9, 10, 11

    def _prediction(self, event: PredictionEvent, row: list[Any]) -> list[Alert]:
        """Online model (progressive validation) and the drift detector on the edge model's errors."""
        row[self.MODEL] = event.model
        if event.true_label is None:
            return []
        if len(event.features) == 64:
            x = pooled_features(event.features)
            guess = self.online.classifier.predict_one(x)
            self.online.classifier.learn_one(x, event.true_label)
            if guess is not None:
                self.online_accuracy.update(event.true_label, guess)
                row[self.ONLINE_CORRECT] = int(guess == event.true_label)
        error = int(event.predicted != event.true_label)
        row[self.CORRECT] = 1 - error
        self.edge_accuracy.update(event.true_label, event.predicted)
        detector = self.detectors.get(event.model)
        if detector is None:
            detector = self.detectors[event.model] = self.online.new_drift_detector()
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

    def _telemetry(self, event: Telemetry, row: list[Any]) -> list[Alert]:
        """MinMax-scaled telemetry into HalfSpaceTrees; a high score after warm-up is an anomaly alert."""
        x = {"brightness": event.brightness, "contrast": event.contrast, "saturated": event.saturated,
             "confidence": event.confidence}
        self.online.scaler.learn_one(x)
        scaled = {k: min(1.0, max(0.0, v)) for k, v in self.online.scaler.transform_one(x).items()}
        score = float(self.online.anomaly.score_one(scaled))
        self.online.anomaly.learn_one(scaled)
        self.telemetry_seen += 1
        row[self.ANOMALY_SCORE] = score
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
    """A StreamProcessor in a consumer group: poll, process, produce alerts, commit the store, commit offsets.

    ``client`` picks the Kafka client (``cloud/streaming/clients.py``): ``kafka-python`` (the kit's named client)
    or ``confluent``. River's import (about 2 s) runs in a thread while the group join waits on the broker.
    """
    # Tansu holds a new group's first join for a time that grows with the session timeout: 3 s gave
    # the first records 1-2 s after start (6 s gave 3 s), and a dead processor's partitions move after
    # 3 s. 2 s joined no faster and, on a loaded 2-core machine, missed heartbeats and lost the group.
    # A longer max poll interval lets the first batch wait for River's import without leaving the group.
    SESSION_TIMEOUT_MS = 3000
    HEARTBEAT_INTERVAL_MS = 500
    MAX_POLL_INTERVAL_MS = 10_000

    def __init__(self, bootstrap: str, store_path: Path, group: str = GROUP, name: str | None = None,
                 seed: int = 0, log=print, ready_file: Path | None = None, status_every_s: float = 5.0,
                 client: str = "kafka-python", max_records: int = 1000) -> None:
        self.bootstrap = bootstrap
        self.store = EventStore(store_path)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.seed = seed
        self.group = group
        self.client = client
        self.max_records = max_records
        self.log = log
        self.ready_file = Path(ready_file) if ready_file else None
        self.status_every_s = status_every_s
        self.dead_letters = 0
        self.assigned: list[int] = []
        self.stop = threading.Event()
        self._logic: StreamProcessor | None = None
        self._logic_error: BaseException | None = None
        self._logic_thread = threading.Thread(target=self._build_logic, name="import-river", daemon=True)
        self._logic_thread.start()

    def _build_logic(self) -> None:
        """Import River and build the per-event logic (in a thread, overlapping the group join)."""
        try:
            self._logic = StreamProcessor(self.store, name=self.name, seed=self.seed)
        except BaseException as exc:  # noqa: BLE001 - re-raised where the logic is first used
            self._logic_error = exc

    @property
    def logic(self) -> StreamProcessor:
        """The per-event logic, once River is imported."""
        self._logic_thread.join()
        if self._logic_error is not None:
            raise RuntimeError(f"{self.name}: could not build the stream processor: {self._logic_error}") \
                from self._logic_error
        return self._logic

    def _assigned(self, partitions: list[tuple[str, int]]) -> None:
        """Log partition moves; the first assignment marks the processor ready."""
        self.assigned = sorted({p for _, p in partitions})
        self.log(f"{self.name}: partitions assigned {partitions}")
        if self.ready_file is not None and not self.ready_file.exists():
            self.ready_file.write_text(json.dumps({"pid": os.getpid(), "t": time.time()}))

    def _revoked(self, partitions: list[tuple[str, int]]) -> None:
        """Log partitions taken away."""
        if partitions:
            self.log(f"{self.name}: partitions revoked {partitions}")

    def run(self, max_seconds: float | None = None) -> dict[str, Any]:
        """Consume until stopped (or max_seconds); returns the processor's stats."""
        ensure_topics(self.bootstrap)
        group = open_group(self.client, self.bootstrap, self.group, [TELEMETRY, PREDICTIONS], self._assigned,
                           self._revoked, max_records=self.max_records,
                           session_timeout_ms=self.SESSION_TIMEOUT_MS, heartbeat_interval_ms=self.HEARTBEAT_INTERVAL_MS,
                           max_poll_interval_ms=self.MAX_POLL_INTERVAL_MS)
        started = time.monotonic()
        next_status = started + self.status_every_s
        try:
            while not self.stop.is_set():
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
                records = group.poll(0.2)
                if records:
                    offsets = self._process(records, group)
                    try:
                        group.commit(offsets)
                    except CommitFailed as exc:
                        # The partitions moved on; their next owner replays them and the store drops repeats.
                        self.log(f"{self.name}: offset commit failed ({exc}); "
                                 "the new owner will replay, duplicates are dropped by event id")
                if time.monotonic() >= next_status:
                    next_status += self.status_every_s
                    self.log(self.status_line(time.monotonic() - started))
        finally:
            group.close()
            self.store.close()
        return self.stats(time.monotonic() - started)

    def _process(self, records: list, group) -> dict[tuple[str, int], int]:
        """Process one polled batch and return the offsets to commit (after the store commits)."""
        logic = self.logic
        self.store.begin()
        try:
            items, sources = [], []
            kinds = [TOPIC_KINDS.get(record.topic) for record in records]
            for record, parsed in zip(records, parse_events([record.value for record in records], kinds)):
                if not parsed.ok:
                    self._dead_letter(record, parsed.reason, group)
                    continue
                items.append((parsed.event, record.topic, record.partition, record.offset))
                sources.append(record)
            for record, outcome in zip(sources, logic.process_batch(items)):
                if outcome.error:
                    self._dead_letter(record, outcome.error, group)
                for alert in outcome.alerts:
                    if alert.alert == "drift":
                        self.log(f"{self.name}: DRIFT {alert.detail}")
                    group.send(ALERTS, alert.to_bytes(), key=alert.device_id.encode())
            group.flush(30)
            self.store.commit()
        except BaseException:
            self.store.rollback()
            raise
        offsets: dict[tuple[str, int], int] = {}
        for record in records:  # in partition order, so the last record of each partition has its highest offset
            offsets[(record.topic, record.partition)] = record.offset + 1
        return offsets

    def _dead_letter(self, record, reason: str, group) -> None:
        """Send the original bytes to dead-letter with where they came from and why."""
        self.dead_letters += 1
        value = record.value if record.value is not None else b""
        self.store.add_dead_letter(record.topic, record.partition, record.offset, reason, len(value))
        group.send(DEAD_LETTER, value, key=record.key,
                   headers=dead_letter_headers(record.topic, record.partition, record.offset, reason))

    def status_line(self, seconds: float) -> str:
        """One line of progress."""
        n = sum(self.logic.processed.values())
        return (f"{self.name}: {n} processed ({n / max(seconds, 1e-9):.0f}/s), {self.logic.duplicates} duplicates "
                f"dropped, {self.dead_letters} dead letters, partitions {self.assigned}, online accuracy "
                f"{self.logic.online_accuracy.get():.3f}")

    def stats(self, seconds: float) -> dict[str, Any]:
        """Counts and rates for summaries."""
        return {"name": self.name, "client": self.client, "processed": dict(self.logic.processed),
                "duplicates": self.logic.duplicates, "dead_letters": self.dead_letters, "seconds": round(seconds, 2),
                "online_accuracy": self.logic.online_accuracy.get(), "edge_accuracy": self.logic.edge_accuracy.get()}


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m cloud.streaming.processor --bootstrap HOST:9092 --store PATH``."""
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m cloud.streaming.processor", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=settings.kafka_bootstrap_servers,
                        help="broker host:port (default: KAFKA_BOOTSTRAP_SERVERS, else %(default)s)")
    parser.add_argument("--store", default=str(settings.processor_store),
                        help="SQLite file of processed events, shared by the group's processors (PROCESSOR_STORE)")
    parser.add_argument("--group", default=GROUP)
    parser.add_argument("--name", default=None, help="this processor's name in logs and the store")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ready-file", default=None, help="written once partitions are assigned")
    parser.add_argument("--stats", default=None, help="write the final stats as JSON here")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--client", choices=CLIENTS, default=settings.processor_kafka_client,
                        help="Kafka client library, PROCESSOR_KAFKA_CLIENT (make bench-stream compares them)")
    args = parser.parse_args(argv)
    log = log_line
    service = ProcessorService(args.bootstrap, Path(args.store), args.group, args.name, args.seed, log,
                               Path(args.ready_file) if args.ready_file else None, client=args.client)
    signal.signal(signal.SIGTERM, lambda *_: service.stop.set())
    signal.signal(signal.SIGINT, lambda *_: service.stop.set())
    log(f"{service.name}: joining group {args.group!r} on {args.bootstrap} with {args.client}; store {args.store}")
    stats = service.run(args.duration)
    log(f"{service.name}: stopped; {json.dumps(stats)}")
    if args.stats:
        Path(args.stats).write_text(json.dumps(stats, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
