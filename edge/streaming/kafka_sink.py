"""The device's Kafka sink: predictions and telemetry to the broker, batched, idempotent, buffered while it is away.

``KafkaSink`` batches events to the broker from a background thread, with the idempotent producer
(the broker deduplicates retried batches; Tansu 0.6 grants producer ids, so it is on), keeping a few
batches in flight and checking their acknowledgements as they arrive. If the broker cannot be
reached, events wait in a bounded local buffer, in order, and drain when it answers again; a log
line says when buffering starts and stops.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.log import log_line
from edge.serving.sinks import Prediction
from edge.serving.sources import DriftingCamera
from edge.wire.events import PredictionEvent, Telemetry
from edge.wire.kafka import key_partition, producer_config
from edge.wire.topics import PREDICTIONS, TELEMETRY

# Imported inside the functions that use them, to keep this module quick to import: kafka.



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
                 send_features: bool = True, log: Callable[[str], None] = log_line, **producer_overrides: Any) -> None:
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
        events = [(PREDICTIONS, prediction_event.to_bytes())]
        if features is not None:
            telemetry = Telemetry(event_id=f"{self._id_prefix}{self._id_count + 1:08x}",
                                  device_id=self.device_id, seq=prediction.index, ts=prediction.t,
                                  confidence=confidence, latency_us=prediction.latency_us, **telemetry_of(features))
            events.append((TELEMETRY, telemetry.to_bytes()))
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
        # kafka-python: imported by the sender thread, off import time
        from kafka import KafkaAdminClient, KafkaProducer

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        try:
            missing = {PREDICTIONS, TELEMETRY} - set(admin.list_topics())
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
                          for topic in (PREDICTIONS, TELEMETRY)}
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
