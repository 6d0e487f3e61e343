"""Two Kafka clients behind one small interface for the cloud's stream services (processor, drift responder).

The stream processor needs five things from Kafka: join a group over some topics, poll records,
commit offsets it names, send a few messages (alerts, dead letters) and wait until they are
acknowledged (``open_group``). The drift responder needs the same without a group: every partition
of its topics, read from a point in time or from now on, and nothing committed (``open_reader``).
``KafkaPythonGroup`` does both with kafka-python, the kit's named client (pure Python, installs
anywhere, and the devices use it too); ``ConfluentGroup`` with confluent-kafka (librdkafka, C).
Both take their numbers from ``edge/wire/kafka.py``, so a setting changes in one place.

``make bench-stream`` runs the processor with each client side by side; see lab 07's README for
which one the kit picks and why.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from edge.wire.kafka import consumer_config, producer_config

# Imported inside the functions that use them, to keep this module quick to import: confluent_kafka, kafka.

CLIENTS = ("kafka-python", "confluent")

# edge/wire/kafka.py's kafka-python names -> librdkafka's names, for the settings both clients share.
_LIBRDKAFKA_NAMES = {
    "bootstrap_servers": "bootstrap.servers", "group_id": "group.id", "auto_offset_reset": "auto.offset.reset",
    "enable_auto_commit": "enable.auto.commit", "max_poll_interval_ms": "max.poll.interval.ms",
    "session_timeout_ms": "session.timeout.ms", "heartbeat_interval_ms": "heartbeat.interval.ms",
    "acks": "acks", "linger_ms": "linger.ms", "batch_size": "batch.size", "retries": "retries",
    "retry_backoff_ms": "retry.backoff.ms", "max_request_size": "message.max.bytes",
}


class Record(NamedTuple):
    """One Kafka message as the processor sees it, whichever client read it.

    A NamedTuple rather than a frozen dataclass: one is built per message, and a tuple is about
    twice as fast to build (a frozen dataclass sets each field through ``object.__setattr__``).
    """
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class CommitFailed(RuntimeError):
    """The group moved the partitions on before the commit; their next owner replays them."""


OnPartitions = Callable[[list[tuple[str, int]]], None]


def librdkafka_config(config: dict[str, Any]) -> dict[str, Any]:
    """kafka-python style settings (edge/wire/kafka.py) in librdkafka's names; unknown names are an error."""
    unknown = sorted(set(config) - set(_LIBRDKAFKA_NAMES))
    if unknown:
        raise ValueError(f"no librdkafka name for {unknown}; add them to cloud/streaming/clients.py _LIBRDKAFKA_NAMES")
    out = {_LIBRDKAFKA_NAMES[k]: v for k, v in config.items() if v is not None}
    if out.get("acks") == "all":
        out["acks"] = -1
    if "session.timeout.ms" in out and out.get("max.poll.interval.ms", 300_000) < out["session.timeout.ms"]:
        out["max.poll.interval.ms"] = out["session.timeout.ms"]  # librdkafka refuses a shorter poll interval
    return out


class OffsetGaps:
    """Holds back records that skip offsets on a partition, so the consumer reads the skipped ones first.

    On the kit's topics (no compaction, no transactions) a partition's offsets have no holes. Tansu
    (the embedded broker) can answer a fetch with a later batch while an earlier one, already
    acknowledged to its producer, is not yet readable: seen here once in 15,802 events on a 2-core
    machine under load (two telemetry events of one device skipped, the next batch read). So when a
    record's offset is past the next one expected, the consumer goes back (``rewind``) and reads
    again; a hole that is still there after ``patience_s`` is accepted, and said so (``log``).

    >>> gaps = OffsetGaps(patience_s=60)
    >>> r = lambda offset: Record("t", 0, offset, None, b"", [])
    >>> kept, rewind = gaps.check([r(0), r(1), r(4), r(5)])
    >>> [x.offset for x in kept], rewind
    ([0, 1], {('t', 0): 2})
    >>> kept, rewind = gaps.check([r(2), r(3), r(4)])  # read again from 2: nothing skipped now
    >>> [x.offset for x in kept], rewind
    ([2, 3, 4], {})
    """

    def __init__(self, patience_s: float = 5.0, log: Callable[[str], None] = print) -> None:
        self.patience_s = patience_s
        self.log = log
        self.next: dict[tuple[str, int], int] = {}  # (topic, partition) -> the next offset expected
        self.waiting_since: dict[tuple[str, int], float] = {}
        self.accepted = 0  # offsets given up on

    def check(self, records: list[Record]) -> tuple[list[Record], dict[tuple[str, int], int]]:
        """The records to process, and the partitions to read again from an offset (the rest of their records held)."""
        import time

        kept, rewind = [], {}
        for record in records:
            where = (record.topic, record.partition)
            if where in rewind:
                continue
            expected = self.next.get(where)
            if expected is not None and record.offset > expected:
                began = self.waiting_since.setdefault(where, time.monotonic())
                if time.monotonic() - began < self.patience_s:
                    rewind[where] = expected
                    continue
                self.accepted += record.offset - expected
                self.log(f"{where[0]}[{where[1]}]: offsets {expected}-{record.offset - 1} never became readable "
                         f"within {self.patience_s:g} s; going on from {record.offset}")
            self.waiting_since.pop(where, None)
            self.next[where] = max(record.offset + 1, expected or 0)
            kept.append(record)
        return kept, rewind

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions that moved: their next offset comes from the group's commit again."""
        for where in partitions:
            self.next.pop(where, None)
            self.waiting_since.pop(where, None)


def _noop(partitions: list[tuple[str, int]]) -> None:
    """A partition callback that does nothing (a reader's partitions never move)."""


class KafkaPythonGroup:
    """A consumer-group member (or, with ``group=None``, a reader of every partition) and a producer with kafka-python.

    Without a group the consumer is assigned every partition of ``topics`` and positioned at ``since``
    (epoch seconds) or, when that is None or later than every record, at the current end; it commits nothing.
    """
    name = "kafka-python"

    def __init__(self, bootstrap: str, group: str | None, topics: Iterable[str], on_assign: OnPartitions,
                 on_revoke: OnPartitions, max_records: int = 1000, since: float | None = None,
                 producer_overrides: dict[str, Any] | None = None, **consumer_overrides: Any) -> None:
        # kafka-python is imported when a client is opened, as the confluent client is (only the chosen one loads).
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        gaps = self.gaps = OffsetGaps()

        class Listener(ConsumerRebalanceListener):
            """Pass partition moves on as (topic, partition) pairs."""
            def on_partitions_revoked(self, revoked):
                gaps.forget((t.topic, t.partition) for t in revoked)
                on_revoke(sorted((t.topic, t.partition) for t in revoked))

            def on_partitions_assigned(self, assigned):
                gaps.forget((t.topic, t.partition) for t in assigned)
                on_assign(sorted((t.topic, t.partition) for t in assigned))

        self.consumer = KafkaConsumer(**consumer_config(bootstrap, group, max_poll_records=max_records,
                                                        **consumer_overrides))
        if group is None:
            on_assign(self._assign_all(list(topics), since))
        else:
            self.consumer.subscribe(list(topics), listener=Listener())
        self.producer = KafkaProducer(**producer_config(bootstrap, **{"linger_ms": 5, **(producer_overrides or {})}))
        self._futures: list = []

    def _assign_all(self, topics: list[str], since: float | None) -> list[tuple[str, int]]:
        """Take every partition of the topics, positioned at ``since`` or the end; returns them."""
        from kafka import TopicPartition

        parts = [TopicPartition(t, p) for t in topics for p in sorted(self.consumer.partitions_for_topic(t) or {0})]
        self.consumer.assign(parts)
        self.consumer.seek_to_end()
        if since is not None:
            found = self.consumer.offsets_for_times({tp: int(since * 1000) for tp in parts})
            for tp, at in found.items():
                if at is not None and at.timestamp >= 0:  # Tansu answers timestamp -1 for "nothing that late"
                    self.consumer.seek(tp, at.offset)
        for tp in parts:
            self.consumer.position(tp)  # resolve "end" now, so events from here on are all read
        return sorted((tp.topic, tp.partition) for tp in parts)

    def poll(self, timeout_s: float) -> list[Record]:
        """Records that arrived (up to max_records), in partition order, none past a skipped offset (OffsetGaps)."""
        from kafka import TopicPartition

        records = [Record(r.topic, r.partition, r.offset, r.key, r.value, r.headers or [])
                   for records in self.consumer.poll(timeout_ms=int(timeout_s * 1000)).values() for r in records]
        kept, rewind = self.gaps.check(records)
        for (topic, partition), offset in rewind.items():
            self.consumer.seek(TopicPartition(topic, partition), offset)
        return kept

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit the next offset to read per (topic, partition); raise CommitFailed if the group moved on."""
        from kafka.errors import CommitFailedError, KafkaError
        from kafka.structs import OffsetAndMetadata, TopicPartition

        try:
            self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
        except (CommitFailedError, KafkaError) as exc:
            raise CommitFailed(f"{type(exc).__name__}: {exc}") from exc

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        """Queue a message; ``flush`` waits for it."""
        self._futures.append(self.producer.send(topic, key=key, value=value, headers=headers))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything sent is acknowledged; raise if any message failed."""
        if not self._futures:
            return
        self.producer.flush(timeout=timeout_s)
        futures, self._futures = self._futures, []
        for future in futures:
            future.get(timeout=0)

    def close(self) -> None:
        """Leave the group and close both connections."""
        self.consumer.close()
        self.producer.close(timeout=5)


class ConfluentGroup:
    """A consumer-group member (or, with ``group=None``, a reader of every partition) and a producer with confluent-kafka.

    Without a group it behaves as ``KafkaPythonGroup`` does; librdkafka insists on a group id even then,
    so it gets a throwaway one that never joins (``assign`` takes partitions without the group protocol).
    """
    name = "confluent"

    def __init__(self, bootstrap: str, group: str | None, topics: Iterable[str], on_assign: OnPartitions,
                 on_revoke: OnPartitions, max_records: int = 1000, since: float | None = None,
                 producer_overrides: dict[str, Any] | None = None, **consumer_overrides: Any) -> None:
        try:
            # librdkafka: loaded only when this client is chosen
            from confluent_kafka import Consumer, Producer
        except ImportError:
            raise ImportError("--client confluent needs confluent-kafka: pip install confluent-kafka==2.16.1 "
                              "(or use --client kafka-python)") from None

        group_id = group if group is not None else f"reader-{uuid.uuid4().hex[:12]}"
        self._skip_before: dict[tuple[str, int], int] = {}  # reader partitions still checked against ``since`` (ms)
        gaps = self.gaps = OffsetGaps()

        def moved(callback: OnPartitions, parts) -> None:
            """A rebalance: forget the moved partitions' next offsets, then tell the caller."""
            pairs = sorted((p.topic, p.partition) for p in parts)
            gaps.forget(pairs)
            callback(pairs)

        self.consumer = Consumer(librdkafka_config(consumer_config(bootstrap, group_id, **consumer_overrides)))
        if group is None:
            on_assign(self._assign_all(list(topics), since))
        else:
            self.consumer.subscribe(
                list(topics),
                on_assign=lambda _, parts: moved(on_assign, parts),
                on_revoke=lambda _, parts: moved(on_revoke, parts))
        self.producer = Producer(librdkafka_config(producer_config(
            bootstrap, **{"linger_ms": 5, **(producer_overrides or {})})))
        self.max_records = max_records
        self._pending = 0
        self._errors: list[str] = []

    def _assign_all(self, topics: list[str], since: float | None, timeout_s: float = 10.0) -> list[tuple[str, int]]:
        """Take every partition of the topics, positioned at ``since`` or the end; returns them."""
        from confluent_kafka import TopicPartition

        metadata = self.consumer.list_topics(timeout=timeout_s).topics
        parts = []
        for topic in topics:
            for partition in sorted(metadata[topic].partitions) if topic in metadata else [0]:
                _, end = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                parts.append(TopicPartition(topic, partition, end))  # the end resolved now, as kafka-python's reader
        if since is not None:
            since_ms = int(since * 1000)
            wanted = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in parts]
            for tp, at in zip(parts, self.consumer.offsets_for_times(wanted, timeout=timeout_s)):
                if 0 <= at.offset < tp.offset:  # negative: nothing that late, stay at the end
                    tp.offset = at.offset
                    # Tansu answers "nothing that late" with an early offset and timestamp -1, and librdkafka
                    # hides the timestamp (kafka-python's reader checks it): poll drops what is older than since.
                    self._skip_before[(tp.topic, tp.partition)] = since_ms
        self.consumer.assign(parts)
        return sorted((tp.topic, tp.partition) for tp in parts)

    def poll(self, timeout_s: float) -> list[Record]:
        """Records that arrived (up to max_records); client-side errors are raised, end-of-partition skipped."""
        from confluent_kafka import KafkaError, KafkaException

        out = []
        for m in self.consumer.consume(num_messages=self.max_records, timeout=timeout_s):
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise KafkaException(error)
                continue  # transient (a broker reconnecting): librdkafka retries by itself
            if self._skip_before and self._too_early(m):
                continue
            out.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers() or []))
        kept, rewind = self.gaps.check(out)
        if rewind:
            from confluent_kafka import TopicPartition

            for (topic, partition), offset in rewind.items():
                self.consumer.seek(TopicPartition(topic, partition, offset))
        return kept

    def _too_early(self, message) -> bool:
        """True for a reader's record older than ``since``; the first one that is not ends the check there."""
        where = (message.topic(), message.partition())
        since_ms = self._skip_before.get(where)
        if since_ms is None:
            return False
        if message.timestamp()[1] < since_ms:
            return True
        del self._skip_before[where]
        return False

    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit the next offset to read per (topic, partition); raise CommitFailed if the group moved on."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                 asynchronous=False)
        except KafkaException as exc:
            raise CommitFailed(str(exc)) from exc

    def send(self, topic: str, value: bytes, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        """Queue a message; ``flush`` waits for it."""
        self._pending += 1
        self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=self._delivered)

    def _delivered(self, error, message) -> None:
        """librdkafka's delivery report: remember failures for flush."""
        if error is not None:
            self._errors.append(f"{message.topic()}: {error}")

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until everything sent is acknowledged; raise if any message failed."""
        if not self._pending:
            return
        left = self.producer.flush(timeout_s)
        self._pending = 0
        errors, self._errors = self._errors, []
        if left or errors:
            raise RuntimeError(f"{left} message(s) not acknowledged after {timeout_s} s; failures: {errors[:3]}")

    def close(self) -> None:
        """Leave the group and close both connections."""
        self.consumer.close()
        self.producer.flush(5)


def open_group(client: str, bootstrap: str, group: str | None, topics: Iterable[str], on_assign: OnPartitions,
               on_revoke: OnPartitions, **settings: Any):
    """A group member with the named client: ``kafka-python`` (the kit's default) or ``confluent``."""
    if client == "kafka-python":
        return KafkaPythonGroup(bootstrap, group, topics, on_assign, on_revoke, **settings)
    if client == "confluent":
        return ConfluentGroup(bootstrap, group, topics, on_assign, on_revoke, **settings)
    raise ValueError(f"unknown Kafka client {client!r}; use one of {', '.join(CLIENTS)}")


def open_reader(client: str, bootstrap: str, topics: Iterable[str], since: float | None = None,
                on_assign: OnPartitions = _noop, **settings: Any):
    """Every partition of the topics with no group, from ``since`` (epoch seconds) or from now on, and a producer."""
    return open_group(client, bootstrap, None, topics, on_assign, _noop, since=since, **settings)
