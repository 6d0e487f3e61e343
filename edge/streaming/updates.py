"""Model updates on a device: follow ``model-updates`` and offer each newer signed bundle to the device.

``ModelUpdateFollower`` reads the topic from the start and hands each newer bundle, after checking the
archive's sha256, to ``EdgeDevice.offer_bundle``, which verifies its signature and swaps it in between
two predictions.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.log import log_line
from edge.wire.events import MAX_NOTICE_BYTES, ModelUpdate, parse_event
from edge.wire.kafka import consumer_config
from edge.wire.topics import MODEL_UPDATES

# Imported inside the functions that use them, to keep this module quick to import: kafka.



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
    def __init__(self, bootstrap: str, device, download_dir: Path, topic: str = MODEL_UPDATES,
                 log: Callable[[str], None] = log_line) -> None:
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
        # kafka-python: imported in the follower thread, off import time
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
