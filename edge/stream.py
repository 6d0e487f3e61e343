"""A device on Kafka: a sink that streams predictions and telemetry, and a follower that takes model updates.

``KafkaSink`` batches events to the broker from a background thread, with the idempotent producer
(the broker deduplicates retried batches; Tansu 0.6 grants producer ids, so it is on). If the
broker cannot be reached, events wait in a bounded local buffer, in order, and drain when it
answers again; a log line says when buffering starts and stops. ``ModelUpdateFollower`` reads the
``model-updates`` topic and hands each newer signed bundle to ``EdgeDevice.offer_bundle``, which
verifies it and swaps it in between two predictions.

Run a device as a process with ``python -m edge.stream --bootstrap HOST:9092 --bundle ...``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge.events import MAX_NOTICE_BYTES, ModelUpdate, PredictionEvent, Telemetry, parse_event
from edge.kafka import consumer_config, producer_config
from edge.sinks import Prediction
from edge.sources import Reading

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
    >>> from edge.sources import Reading
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

    def __iter__(self) -> Iterator[Reading]:
        rng = np.random.default_rng(self.seed + 7919)
        for reading in self.source:
            frame = reading.features
            if self.drift_at is not None and time.time() >= self.drift_at:
                frame = rotate_180(frame)
            if self.glitch_rate and rng.random() < self.glitch_rate:
                frame = np.clip(frame + 0.8, 0.0, 1.0).astype(np.float32)
            self.last = Reading(reading.index, frame, reading.label, reading.t)
            yield self.last


def telemetry_of(features: np.ndarray) -> dict[str, float]:
    """Brightness (mean), contrast (std) and saturated fraction of a frame in [0, 1]."""
    return {"brightness": float(features.mean()), "contrast": float(features.std()),
            "saturated": float((features >= 0.999).mean())}


# ----------------------------------------------------------------------------- the Kafka sink


class KafkaSink:
    """Streams each prediction (and a telemetry event) to Kafka from a background thread.

    Parameters
    ----------
    bootstrap
        ``host:port`` of the broker (``KAFKA_BOOTSTRAP_SERVERS``).
    device_id
        The id every event carries; also the message key, so a device's events stay in order.
    camera
        The source the device reads (``DriftingCamera``): the sink takes the frame from its ``last``.
    buffer_limit
        Events kept while the broker is unreachable; beyond it the oldest are dropped (and counted).
    batch
        Events sent per round before waiting for the broker's acknowledgement.
    """

    def __init__(self, bootstrap: str, device_id: str, camera: DriftingCamera | None = None, *,
                 buffer_limit: int = 100_000, batch: int = 500, flush_timeout_s: float = 5.0,
                 backoff_s: tuple[float, float] = (0.2, 3.0), send_features: bool = True,
                 log: Callable[[str], None] = _print, **producer_overrides: Any) -> None:
        self.bootstrap = bootstrap
        self.device_id = device_id
        self.camera = camera
        self.buffer_limit = buffer_limit
        self.batch = batch
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
        self._queue: deque[tuple[int, str, bytes]] = deque()
        self._numbers = itertools.count()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._send_loop, name=f"kafka-sink-{device_id}", daemon=True)
        self._thread.start()

    # -- device side

    def write(self, prediction: Prediction) -> None:
        """Queue a prediction event and a telemetry event for the broker (never blocks on the network)."""
        reading = self.camera.last if self.camera is not None else None
        features = reading.features if reading is not None and reading.index == prediction.index else None
        prediction_event = PredictionEvent(
            device_id=self.device_id, seq=prediction.index, ts=prediction.t, model=prediction.model,
            predicted=prediction.predicted, confidence=min(1.0, max(0.0, prediction.confidence)),
            true_label=prediction.true_label, latency_us=prediction.latency_us,
            features=np.round(features, 4).tolist() if features is not None and self.send_features else [],
        )
        self.enqueue(PREDICTIONS_TOPIC, prediction_event.to_bytes())
        if features is not None:
            telemetry = Telemetry(device_id=self.device_id, seq=prediction.index, ts=prediction.t,
                                  confidence=prediction_event.confidence, latency_us=prediction.latency_us,
                                  **telemetry_of(features))
            self.enqueue(TELEMETRY_TOPIC, telemetry.to_bytes())

    def enqueue(self, topic: str, value: bytes) -> None:
        """Queue raw bytes for a topic (the bounded buffer drops its oldest entry when full)."""
        with self._cond:
            if len(self._queue) >= self.buffer_limit:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped == 1:
                    self.log(f"{self.device_id}: local buffer full ({self.buffer_limit} events); "
                             "dropping the oldest until the broker answers")
            self._queue.append((next(self._numbers), topic, value))
            self.produced[topic] += 1
            self._cond.notify()

    def pending(self) -> int:
        """Events not yet acknowledged by the broker."""
        with self._cond:
            return len(self._queue)

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

    def _next_batch(self) -> list[tuple[int, str, bytes]] | None:
        """Wait for events; the first ``batch`` queued (left in place until acknowledged), or None to stop."""
        with self._cond:
            while not self._queue and not self._closing:
                self._cond.wait(0.5)
            if not self._queue or (self._closing and time.monotonic() > self._close_deadline):
                return None
            return list(itertools.islice(self._queue, self.batch))

    def _open_producer(self):
        """A producer, once the broker answers and already has our topics (never auto-create them)."""
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
        return KafkaProducer(**config)

    def _send_loop(self) -> None:
        """Send batches in order; on failure keep them, back off, and retry the same batch."""
        producer, backoff, outage_started = None, self.backoff_s[0], 0.0
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            try:
                if producer is None:
                    producer = self._open_producer()
                futures = [producer.send(topic, key=self.device_id.encode(), value=value)
                           for _, topic, value in batch]
                producer.flush(timeout=self.flush_timeout_s)
                for future in futures:
                    future.get(timeout=0)
            except Exception as exc:  # noqa: BLE001 - any failure: keep the batch and retry it
                if producer is not None:
                    _discard(producer)
                    producer = None
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
            with self._cond:
                last = batch[-1][0]
                while self._queue and self._queue[0][0] <= last:
                    _, topic, _ = self._queue.popleft()
                    self.delivered[topic] += 1
                waiting = len(self._queue)
            if self.buffering:
                self.buffering, backoff = False, self.backoff_s[0]
                self.log(f"{self.device_id}: broker answers again after {time.monotonic() - outage_started:.1f} s; "
                         f"draining the buffer in order ({waiting + len(batch)} events)")
        if producer is not None:
            _discard(producer)


def _discard(producer) -> None:
    """Close a producer without waiting for what it still holds (the sink's own buffer keeps those events)."""
    try:
        producer.close(timeout=0)
    except Exception:  # noqa: BLE001 - kafka-python's close may raise its flush timeout; the producer is gone anyway
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
    """Arguments of ``python -m edge.stream``."""
    p = argparse.ArgumentParser(prog="python -m edge.stream",
                                description="A simulated camera device streaming predictions to Kafka.")
    p.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--bundle", required=True, help="signed bundle folder or archive to start with")
    p.add_argument("--key", required=True, help="the cloud's public key (public_key.pem)")
    p.add_argument("--frames", required=True, help="frames .npz (edge.sources.save_frames)")
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

    from edge.bundle import BundleError, load_bundle
    from edge.device import EdgeDevice
    from edge.keys import load_public_key
    from edge.runners import open_runner
    from edge.sources import DigitFrames

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
        device.run(stop=stop)  # closes the sink, which drains the buffer
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
