"""A device on Kafka: a sink that streams predictions and telemetry, and a follower that takes model updates.

``KafkaSink`` batches events to the broker from a background thread, with the idempotent producer
(the broker deduplicates retried batches; Tansu 0.6 grants producer ids, so it is on), keeping a few
batches in flight and checking their acknowledgements as they arrive. If the broker cannot be
reached, events wait in a bounded local buffer, in order, and drain when it answers again; a log
line says when buffering starts and stops. ``ModelUpdateFollower`` reads the
``model-updates`` topic and hands each newer signed bundle to ``EdgeDevice.offer_bundle``, which
verifies it and swaps it in between two predictions.

Run a device as a process with ``python -m edge.streaming.device --bootstrap HOST:9092 --bundle ...``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.wire.events import MAX_NOTICE_BYTES, ModelUpdate, PredictionEvent, Telemetry, parse_event
from edge.wire.kafka import consumer_config, key_partition, producer_config
from edge.serving.sinks import Prediction
from edge.serving.sources import Reading

PREDICTIONS_TOPIC = "predictions"
TELEMETRY_TOPIC = "telemetry"
MODEL_UPDATES_TOPIC = "model-updates"


def _print(line: str) -> None:
    """Default log: one flushed line on stdout."""
    print(line, flush=True)


# ----------------------------------------------------------------------------- sources with drift and faults


def rotate_180(frame: np.ndarray) -> np.ndarray:
    """An 8x8 frame turned upside down (the camera was remounted): flat (64,) in, flat (64,) out."""
    return frame.reshape(8, 8)[::-1, ::-1].ravel().copy()


class DriftingCamera:
    """Wraps a source: from ``drift_at`` (epoch seconds) on, frames arrive upside down; some frames glitch.

    A glitch (probability ``glitch_rate``) over-exposes the frame, as a sensor fault would. The true
    label stays, so the cloud sees the edge model's error rate jump when the drift starts.

    Examples
    --------
    >>> import numpy as np
    >>> from edge.serving.sources import Reading
    >>> frames = [Reading(i, np.arange(64, dtype=np.float32) / 64, 0) for i in range(2)]
    >>> cam = DriftingCamera(frames, drift_at=0.0)
    >>> [float(r.features[0]) for r in cam]
    [0.984375, 0.984375]
    """

    def __init__(self, source: Iterable[Reading], drift_at: float | None = None, glitch_rate: float = 0.0,
                 seed: int = 0) -> None:
        self.source = source
        self.drift_at = drift_at
        self.glitch_rate = glitch_rate
        self.seed = seed
        self.last: Reading | None = None
        self._recent: dict[int, np.ndarray] = {}  # index -> frame, the last RECENT readings (a device may read ahead)

    RECENT = 256

    def frame(self, index: int) -> np.ndarray | None:
        """The frame this camera gave for reading ``index``, if it is among the last ``RECENT``."""
        return self._recent.get(index)

    def __iter__(self) -> Iterator[Reading]:
        rng = np.random.default_rng(self.seed + 7919)
        for reading in self.source:
            frame = reading.features
            if self.drift_at is not None and time.time() >= self.drift_at:
                frame = rotate_180(frame)
            if self.glitch_rate and rng.random() < self.glitch_rate:
                frame = np.clip(frame + 0.8, 0.0, 1.0).astype(np.float32)
            self.last = Reading(reading.index, frame, reading.label, reading.t)
            self._recent[reading.index] = frame
            if len(self._recent) > self.RECENT:
                del self._recent[next(iter(self._recent))]  # the oldest (dicts keep insertion order)
            yield self.last


def telemetry_of(features: np.ndarray) -> dict[str, float]:
    """Brightness (mean), contrast (std) and saturated fraction of a frame in [0, 1].

    One sum and one dot product instead of ``mean()`` and ``std()``: on a 64-pixel frame numpy's
    per-call overhead, not the arithmetic, is the cost (about 5 us instead of 17 us here).
    """
    values = features.astype(np.float64, copy=False).ravel()
    n = values.size
    mean = float(values.sum()) / n
    variance = max(float(values @ values) / n - mean * mean, 0.0)
    return {"brightness": mean, "contrast": math.sqrt(variance),
            "saturated": int(np.count_nonzero(values >= 0.999)) / n}


# ----------------------------------------------------------------------------- the Kafka sink


@dataclass
class _Flight:
    """One batch handed to the producer: its events in order, their futures, and when it was sent."""

    events: list[tuple[str, bytes]]
    futures: list[Any] = field(default_factory=list)  # kafka-python FutureRecordMetadata, one per event sent
    sent_at: float = 0.0
    checked: int = 0  # futures[:checked] are known to be done


class KafkaSink:
    """Streams each prediction (and a telemetry event) to Kafka from a background thread.

    Events wait in one ordered local queue. The sender thread hands them to the producer in batches and
    keeps up to ``max_in_flight`` batches unacknowledged at once, checking their futures as they complete
    instead of waiting for each batch, so the device never waits for a round trip. An event leaves the
    sink's books only once the broker acknowledged it; if any event fails (or a batch is unacknowledged
    after ``flush_timeout_s``), every unacknowledged event goes back to the front of the queue, in order,
    and is retried with backoff by a fresh producer.

    Parameters
    ----------
    bootstrap
        ``host:port`` of the broker (``KAFKA_BOOTSTRAP_SERVERS``).
    device_id
        The id every event carries; also the message key, so a device's events stay in order.
    camera
        The source the device reads (``DriftingCamera``): the sink takes each reading's frame from its ``frame(index)``.
    buffer_limit
        Events kept (queued and in flight) while the broker is unreachable; beyond it the oldest queued
        are dropped (and counted).
    batch
        Most events handed to the producer in one go.
    max_in_flight
        Most batches sent but not yet acknowledged (with ``batch``, bounds what the producer holds).
    """

    def __init__(self, bootstrap: str, device_id: str, camera: DriftingCamera | None = None, *,
                 buffer_limit: int = 100_000, batch: int = 2000, max_in_flight: int = 4,
                 flush_timeout_s: float = 5.0, backoff_s: tuple[float, float] = (0.2, 3.0),
                 send_features: bool = True, log: Callable[[str], None] = _print, **producer_overrides: Any) -> None:
        self.bootstrap = bootstrap
        self.device_id = device_id
        self.camera = camera
        self.buffer_limit = buffer_limit
        self.batch = batch
        self.max_in_flight = max_in_flight
        self.flush_timeout_s = flush_timeout_s
        self.backoff_s = backoff_s
        self.send_features = send_features
        self.log = log
        self.producer_overrides = producer_overrides
        self.produced: Counter[str] = Counter()  # events handed to the sink, by topic
        self.delivered: Counter[str] = Counter()  # events the broker acknowledged, by topic
        self.dropped = 0
        self.buffering = False
        self.outages = 0
        self._key = device_id.encode()
        # Event ids: a random 96-bit prefix per sink and a counter, 32 hex digits like uuid4().hex, unique
        # across devices and restarts, at a fraction of uuid4's cost (two ids per reading).
        self._id_prefix = os.urandom(12).hex()
        self._id_count = 0
        self._queue: deque[tuple[str, bytes]] = deque()  # waiting for the producer, oldest first
        self._in_flight: deque[_Flight] = deque()  # with the producer, unacknowledged, oldest first
        self._in_flight_events = 0
        self._cond = threading.Condition()
        self._closing = False
        self._close_deadline = float("inf")
        self._thread = threading.Thread(target=self._send_loop, name=f"kafka-sink-{device_id}", daemon=True)
        self._thread.start()

    # -- device side

    def write(self, prediction: Prediction) -> None:
        """Queue a prediction event and a telemetry event for the broker (never blocks on the network)."""
        features = self.camera.frame(prediction.index) if self.camera is not None else None
        confidence = min(1.0, max(0.0, prediction.confidence))
        # The device validates its own events with the same pydantic models the cloud uses. With pydantic 2
        # that costs about 5 us an event here, less than ``model_construct`` (which skips validation but
        # builds the model in Python, about 12 us), so there is nothing to gain by trusting our own values;
        # each event is serialised once, and the cloud validates again because bytes off the wire are untrusted.
        # Features are rounded as float64: float32 values rounded to 4 places print as 0.6370000243186951 in
        # JSON, 0.637 once widened first, which halves a prediction message (1460 -> 666 bytes) for the
        # producer, the broker and the cloud's parser.
        self._id_count += 2
        prediction_event = PredictionEvent(
            event_id=f"{self._id_prefix}{self._id_count:08x}",
            device_id=self.device_id, seq=prediction.index, ts=prediction.t, model=prediction.model,
            predicted=prediction.predicted, confidence=confidence, true_label=prediction.true_label,
            latency_us=prediction.latency_us,
            features=(np.round(features.astype(np.float64), 4).tolist()
                      if features is not None and self.send_features else []),
        )
        events = [(PREDICTIONS_TOPIC, prediction_event.to_bytes())]
        if features is not None:
            telemetry = Telemetry(event_id=f"{self._id_prefix}{self._id_count + 1:08x}",
                                  device_id=self.device_id, seq=prediction.index, ts=prediction.t,
                                  confidence=confidence, latency_us=prediction.latency_us, **telemetry_of(features))
            events.append((TELEMETRY_TOPIC, telemetry.to_bytes()))
        self.enqueue_many(events)

    def enqueue(self, topic: str, value: bytes) -> None:
        """Queue raw bytes for a topic (the bounded buffer drops its oldest entry when full)."""
        self.enqueue_many([(topic, value)])

    def enqueue_many(self, events: list[tuple[str, bytes]]) -> None:
        """Queue (topic, bytes) pairs in order, under one lock (the bounded buffer drops its oldest when full)."""
        with self._cond:
            for topic, value in events:
                if self._queue and len(self._queue) + self._in_flight_events >= self.buffer_limit:
                    self._queue.popleft()
                    self.dropped += 1
                    if self.dropped == 1:
                        self.log(f"{self.device_id}: local buffer full ({self.buffer_limit} events); "
                                 "dropping the oldest until the broker answers")
                self._queue.append((topic, value))
                self.produced[topic] += 1
            if len(self._queue) == len(events):  # the sender may be idle: wake it
                self._cond.notify()

    def pending(self) -> int:
        """Events not yet acknowledged by the broker (queued or in flight)."""
        with self._cond:
            return len(self._queue) + self._in_flight_events

    def close(self, timeout_s: float = 30.0) -> None:
        """Send what is buffered (waiting up to timeout_s for the broker), then stop the thread."""
        with self._cond:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout_s
            self._cond.notify()
        self._thread.join(timeout_s + self.flush_timeout_s + 5)
        if self.pending():
            self.log(f"{self.device_id}: closed with {self.pending()} events undelivered "
                     f"(broker unreachable for {timeout_s:.0f} s)")

    def stats(self) -> dict[str, Any]:
        """Counts for summaries: produced, delivered and dropped events, outages."""
        return {"produced": dict(self.produced), "delivered": dict(self.delivered), "dropped": self.dropped,
                "pending": self.pending(), "outages": self.outages}

    # -- sender thread

    def _take_batch(self) -> _Flight | None | bool:
        """Move up to ``batch`` queued events in flight, if a slot is free; False when it is time to stop."""
        with self._cond:
            while not self._queue and not self._in_flight and not self._closing:
                self._cond.wait(0.5)
            if not self._queue and not self._in_flight:
                return False  # closing, and everything is acknowledged
            if self._closing and time.monotonic() > self._close_deadline:
                return False  # closing, and the broker did not answer in time
            if not self._queue or len(self._in_flight) >= self.max_in_flight:
                return None
            count = min(self.batch, len(self._queue))
            flight = _Flight([self._queue.popleft() for _ in range(count)])
            self._in_flight.append(flight)
            self._in_flight_events += count
            return flight

    def _open_producer(self):
        """A producer and each topic's partition for our key, once the broker answers and has our topics."""
        from kafka import KafkaAdminClient, KafkaProducer

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        try:
            missing = {PREDICTIONS_TOPIC, TELEMETRY_TOPIC} - set(admin.list_topics())
        finally:
            admin.close()
        if missing:
            # Auto-creating them now could race the stack re-creating them (messages lost on Tansu).
            raise ConnectionError(f"broker has no topic(s) {sorted(missing)} yet")
        config = producer_config(self.bootstrap, enable_idempotence=True, max_block_ms=3000,
                                 allow_auto_create_topics=False, retries=5,
                                 request_timeout_ms=int(self.flush_timeout_s * 1000),
                                 delivery_timeout_ms=int(self.flush_timeout_s * 1000) + 2000)
        config["delivery_timeout_ms"] += config["linger_ms"]
        config.update(self.producer_overrides)
        producer = KafkaProducer(**config)
        try:
            # The partition the key hashes to, computed once per topic: same placement (and so the same
            # per-device order) as a keyed send, without hashing the key again for every message.
            partitions = {topic: key_partition(self._key, producer.partitions_for(topic))
                          for topic in (PREDICTIONS_TOPIC, TELEMETRY_TOPIC)}
        except Exception:
            _discard(producer)
            raise
        return producer, partitions

    def _send(self, producer, partitions: dict[str, int], flight: _Flight) -> None:
        """Hand a batch's events to the producer (which batches them further and sends them asynchronously)."""
        flight.sent_at = time.monotonic()
        send, key, futures = producer.send, self._key, flight.futures
        for topic, value in flight.events:
            futures.append(send(topic, key=key, value=value, partition=partitions[topic]))

    def _retire_acknowledged(self) -> int:
        """Drop the oldest batches the broker acknowledged from the books; raises if an event failed or stalled."""
        retired = 0
        while self._in_flight:
            flight = self._in_flight[0]
            futures = flight.futures
            while flight.checked < len(futures) and futures[flight.checked].is_done:
                if futures[flight.checked].failed():
                    raise futures[flight.checked].exception
                flight.checked += 1
            if flight.checked < len(flight.events):
                if time.monotonic() - flight.sent_at > self.flush_timeout_s:
                    raise TimeoutError(f"{len(flight.events) - flight.checked} events unacknowledged "
                                       f"after {self.flush_timeout_s:g} s")
                break
            with self._cond:
                self._in_flight.popleft()
                self._in_flight_events -= len(flight.events)
                self.delivered.update(topic for topic, _ in flight.events)
            retired += len(flight.events)
        return retired

    def _requeue_unacknowledged(self) -> int:
        """Put every in-flight event not acknowledged back at the front of the queue, in order; returns how many.

        Events the broker did acknowledge count as delivered and are not sent again (no duplicates). Within a
        partition the idempotent producer acknowledges in order, so an acknowledged event never follows one
        that failed, and the retried events keep the device's order.
        """
        retry: list[tuple[str, bytes]] = []
        with self._cond:
            for flight in self._in_flight:
                for i, event in enumerate(flight.events):
                    future = flight.futures[i] if i < len(flight.futures) else None
                    if future is not None and future.is_done and future.succeeded():
                        self.delivered[event[0]] += 1
                    else:
                        retry.append(event)
            self._in_flight.clear()
            self._in_flight_events = 0
            self._queue.extendleft(reversed(retry))
        return len(retry)

    def _send_loop(self) -> None:
        """Keep batches in flight in order; on any failure take back what is unacknowledged, back off, retry."""
        producer, partitions, backoff, outage_started = None, {}, self.backoff_s[0], 0.0
        while True:
            flight = self._take_batch()
            if flight is False:
                break
            try:
                if producer is None:
                    producer, partitions = self._open_producer()
                if flight is not None:
                    self._send(producer, partitions, flight)
                retired = self._retire_acknowledged()
            except Exception as exc:  # noqa: BLE001 - any failure: keep the events and retry them
                if producer is not None:
                    _discard(producer)
                    producer = None
                self._requeue_unacknowledged()
                if not self.buffering:
                    self.buffering, outage_started = True, time.monotonic()
                    self.outages += 1
                    self.log(f"{self.device_id}: broker {self.bootstrap} unreachable "
                             f"({type(exc).__name__}: {str(exc)[:100]}); buffering locally "
                             f"(up to {self.buffer_limit} events), retrying with backoff")
                with self._cond:
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, self.backoff_s[1])
                continue
            if retired and self.buffering:
                self.buffering, backoff = False, self.backoff_s[0]
                self.log(f"{self.device_id}: broker answers again after {time.monotonic() - outage_started:.1f} s; "
                         f"draining the buffer in order ({self.pending()} events)")
            if flight is None and not retired:
                time.sleep(0.002)  # nothing to send and nothing acknowledged yet: let events and acks accumulate
        if producer is not None:
            _discard(producer)


def _discard(producer) -> None:
    """Stop a producer now, abandoning what it still holds (the sink's own books keep those events)."""
    try:
        producer.close(timeout=0)
        return
    except Exception:  # noqa: BLE001 - see below
        pass
    # kafka-python's close() flushes first and, with records pending, raises before it stops its sender
    # thread, which would go on retrying them (and could deliver events the sink sends again). Stop it directly.
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(1.0)
    try:
        producer.close(timeout=0)
    except Exception:  # noqa: BLE001 - the sender is stopped; nothing more to release
        pass


# ----------------------------------------------------------------------------- model updates


def version_of(ref: str) -> int:
    """The version number in ``name@version`` (0 when there is none)."""
    _, _, version = ref.rpartition("@")
    return int(version) if version.isdigit() else 0


class ModelUpdateFollower:
    """Reads ``model-updates`` from the start and offers each newer bundle to the device.

    Every device reads every notice (no consumer group), so a device that starts late still
    takes the newest model; it takes only notices for the runtime it runs (ONNX or TFLite). The
    archive's sha256 is checked before the device verifies the signature.
    """

    def __init__(self, bootstrap: str, device, download_dir: Path, topic: str = MODEL_UPDATES_TOPIC,
                 log: Callable[[str], None] = _print) -> None:
        self.bootstrap = bootstrap
        self.device = device
        self.download_dir = Path(download_dir)
        self.topic = topic
        self.log = log
        self.applied: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="model-updates", daemon=True)

    def start(self) -> ModelUpdateFollower:
        """Start following in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following and wait for the thread."""
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        """Poll the topic, reconnecting after errors, until stopped."""
        from kafka import KafkaConsumer, TopicPartition

        while not self._stop.is_set():
            consumer = None
            try:
                consumer = KafkaConsumer(**consumer_config(self.bootstrap, None, fetch_max_bytes=MAX_NOTICE_BYTES * 2,
                                                           max_partition_fetch_bytes=MAX_NOTICE_BYTES * 2))
                partitions = consumer.partitions_for_topic(self.topic) or {0}
                consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
                consumer.seek_to_beginning()
                while not self._stop.is_set():
                    for records in consumer.poll(timeout_ms=300).values():
                        for record in records:
                            self.handle(record.value)
            except Exception as exc:  # noqa: BLE001 - a device keeps serving whatever happens here
                self.log(f"{self.device.name}: model-updates follower: {type(exc).__name__}: {exc}; retrying")
                self._stop.wait(1.0)
            finally:
                if consumer is not None:
                    consumer.close()

    def handle(self, raw: bytes) -> dict[str, Any] | None:
        """Take one notice: skip it if not newer, else fetch, check and offer the bundle; returns what happened."""
        parsed = parse_event(raw, max_bytes=MAX_NOTICE_BYTES, expect="model-update")
        if not parsed.ok:
            self.log(f"{self.device.name}: ignoring a model-updates message: {parsed.reason}")
            return None
        notice: ModelUpdate = parsed.event
        if notice.version <= version_of(self.device.model):
            return None
        running = getattr(self.device.runner, "runtime", notice.runtime)
        if notice.runtime != running:
            return None  # the same update for another runtime (an ONNX device skips the TFLite notice)
        try:
            archive = self.fetch(notice)
        except (OSError, ValueError) as exc:
            self.log(f"{self.device.name}: model update {notice.model} not taken: {exc}; keeping {self.device.model}")
            return None
        result = self.device.offer_bundle(archive)
        outcome = {"model": notice.model, "accepted": result.accepted, "message": result.message, "t": time.time()}
        self.applied.append(outcome)
        self.log(f"{self.device.name}: model update {notice.model}: {result.message}")
        return outcome

    def fetch(self, notice: ModelUpdate) -> Path:
        """The notice's bundle archive on local disk, after checking its sha256."""
        if notice.bundle_b64:
            data = base64.b64decode(notice.bundle_b64)
        elif notice.bundle_url:
            with urllib.request.urlopen(notice.bundle_url, timeout=10) as reply:
                data = reply.read()
        else:
            raise ValueError("notice carries neither bundle_b64 nor bundle_url")
        digest = hashlib.sha256(data).hexdigest()
        if digest != notice.archive_sha256:
            raise ValueError(f"archive sha256 mismatch (expected {notice.archive_sha256[:12]}..., got {digest[:12]}...)")
        self.download_dir.mkdir(parents=True, exist_ok=True)
        path = self.download_dir / f"{notice.model}.tar.gz"
        path.write_bytes(data)
        return path


# ----------------------------------------------------------------------------- a device process


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m edge.streaming.device``."""
    p = argparse.ArgumentParser(prog="python -m edge.streaming.device",
                                description="A simulated camera device streaming predictions to Kafka.")
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--bundle", required=True, help="signed bundle folder or archive to start with")
    p.add_argument("--key", required=True, help="the cloud's public key (public_key.pem)")
    p.add_argument("--frames", required=True, help="frames .npz (edge.serving.sources.save_frames)")
    p.add_argument("--name", default="cam-0", help="device id")
    p.add_argument("--fresh-id", action="store_true", help="append a random suffix to --name (a new identity)")
    p.add_argument("--rate", type=float, default=40.0, help="readings per second (0: as fast as possible)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run")
    p.add_argument("--count", type=int, default=None, help="stop after this many readings")
    p.add_argument("--drift-at", type=float, default=None, help="epoch seconds when the camera turns upside down")
    p.add_argument("--glitch-rate", type=float, default=0.0, help="fraction of over-exposed frames")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stats", help="write counts as JSON here every second and at exit")
    p.add_argument("--work-dir", default=None, help="where downloaded bundles go (default: a temp folder)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one streaming device until --duration/--count or SIGTERM; print and write its counts."""
    import tempfile

    from edge.serving.bundle import BundleError, load_bundle
    from edge.serving.device import EdgeDevice
    from edge.serving.keys import load_public_key
    from edge.serving.runners import open_runner
    from edge.serving.sources import DigitFrames

    args = build_parser().parse_args(argv)
    name = f"{args.name}-{os.urandom(3).hex()}" if args.fresh_id else args.name
    key = load_public_key(Path(args.key))
    try:
        runner = open_runner(load_bundle(Path(args.bundle), key), num_threads=1)
    except BundleError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    frames = DigitFrames.from_file(Path(args.frames), count=args.count, seed=args.seed, rate_hz=args.rate or None)
    camera = DriftingCamera(frames, drift_at=args.drift_at, glitch_rate=args.glitch_rate, seed=args.seed)
    sink = KafkaSink(args.bootstrap, name, camera)
    device = EdgeDevice(runner, camera, sink, name=name, public_key=key)
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix=f"edge-{name}-"))
    follower = ModelUpdateFollower(args.bootstrap, device, work / "downloads").start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    deadline = time.monotonic() + args.duration

    def write_stats(final: bool = False) -> dict[str, Any]:
        """The device's counts (also to --stats, atomically)."""
        stats = {"device": name, "served": device.served, "model": device.model, **sink.stats(),
                 "updates": follower.applied, "final": final, "t": time.time()}
        if args.stats:
            tmp = Path(args.stats + ".tmp")
            tmp.write_text(json.dumps(stats))
            os.replace(tmp, args.stats)
        return stats

    def watchdog() -> None:
        """Stop at the deadline; refresh the stats file every second."""
        while not stop.wait(1.0):
            write_stats()
            if time.monotonic() >= deadline:
                stop.set()

    threading.Thread(target=watchdog, daemon=True).start()
    print(f"{name}: streaming {device.model} to {args.bootstrap} at {args.rate:g} readings/s", flush=True)
    try:
        # As fast as possible (--rate 0) the recording is always ahead: predict 16 frames per runner call.
        device.run(stop=stop, batch=16 if args.rate <= 0 else 1)  # closes the sink, which drains the buffer
    except KeyboardInterrupt:
        sink.close()
    finally:
        stop.set()
        follower.stop()
    stats = write_stats(final=True)
    print(f"{name}: served {device.served}, produced {sum(sink.produced.values())}, "
          f"delivered {sum(sink.delivered.values())}, dropped {sink.dropped}, model {device.model}", flush=True)
    return 0 if stats["pending"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
