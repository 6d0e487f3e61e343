"""Two Kafka clients behind one small interface for the cloud's consumer-group services.

The stream processor needs five things from Kafka: join a group over some topics, poll records,
commit offsets it names, send a few messages (alerts, dead letters) and wait until they are
acknowledged. ``KafkaPythonGroup`` does it with kafka-python, the kit's named client (pure Python,
installs anywhere, and the devices use it too); ``ConfluentGroup`` with confluent-kafka (librdkafka, C).
Both take their numbers from ``edge/wire/kafka.py``, so a setting changes in one place.

``make bench-stream`` runs the processor with each client side by side; see lab 07's README for
which one the kit picks and why.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

CLIENTS = ("kafka-python", "confluent")

# edge/wire/kafka.py's kafka-python names -> librdkafka's names, for the settings both clients share.
_LIBRDKAFKA_NAMES = {
    "bootstrap_servers": "bootstrap.servers", "group_id": "group.id", "auto_offset_reset": "auto.offset.reset",
    "enable_auto_commit": "enable.auto.commit", "max_poll_interval_ms": "max.poll.interval.ms",
    "session_timeout_ms": "session.timeout.ms", "heartbeat_interval_ms": "heartbeat.interval.ms",
    "acks": "acks", "linger_ms": "linger.ms", "batch_size": "batch.size", "retries": "retries",
    "retry_backoff_ms": "retry.backoff.ms",
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


class KafkaPythonGroup:
    """A consumer-group member and a producer with kafka-python."""

    name = "kafka-python"

    def __init__(self, bootstrap: str, group: str, topics: Iterable[str], on_assign: OnPartitions,
                 on_revoke: OnPartitions, max_records: int = 1000, **consumer_overrides: Any) -> None:
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.consumer.subscription_state import ConsumerRebalanceListener

        from edge.wire.kafka import consumer_config, producer_config

        class Listener(ConsumerRebalanceListener):
            """Pass partition moves on as (topic, partition) pairs."""

            def on_partitions_revoked(self, revoked):
                on_revoke(sorted((t.topic, t.partition) for t in revoked))

            def on_partitions_assigned(self, assigned):
                on_assign(sorted((t.topic, t.partition) for t in assigned))

        self.consumer = KafkaConsumer(**consumer_config(bootstrap, group, max_poll_records=max_records,
                                                        **consumer_overrides))
        self.consumer.subscribe(list(topics), listener=Listener())
        self.producer = KafkaProducer(**producer_config(bootstrap, linger_ms=5))
        self._futures: list = []

    def poll(self, timeout_s: float) -> list[Record]:
        """Records that arrived (up to max_records), in partition order."""
        return [Record(r.topic, r.partition, r.offset, r.key, r.value, r.headers or [])
                for records in self.consumer.poll(timeout_ms=int(timeout_s * 1000)).values() for r in records]

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
    """A consumer-group member and a producer with confluent-kafka (librdkafka)."""

    name = "confluent"

    def __init__(self, bootstrap: str, group: str, topics: Iterable[str], on_assign: OnPartitions,
                 on_revoke: OnPartitions, max_records: int = 1000, **consumer_overrides: Any) -> None:
        try:
            from confluent_kafka import Consumer, Producer
        except ImportError:
            raise ImportError("--client confluent needs confluent-kafka: pip install confluent-kafka==2.16.1 "
                              "(or use --client kafka-python)") from None
        from edge.wire.kafka import consumer_config, producer_config

        self.consumer = Consumer(librdkafka_config(consumer_config(bootstrap, group, **consumer_overrides)))
        self.consumer.subscribe(
            list(topics),
            on_assign=lambda _, parts: on_assign(sorted((p.topic, p.partition) for p in parts)),
            on_revoke=lambda _, parts: on_revoke(sorted((p.topic, p.partition) for p in parts)))
        self.producer = Producer(librdkafka_config(producer_config(bootstrap, linger_ms=5)))
        self.max_records = max_records
        self._pending = 0
        self._errors: list[str] = []

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
            out.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.headers() or []))
        return out

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


def open_group(client: str, bootstrap: str, group: str, topics: Iterable[str], on_assign: OnPartitions,
               on_revoke: OnPartitions, **settings: Any):
    """A group member with the named client: ``kafka-python`` (the kit's default) or ``confluent``."""
    if client == "kafka-python":
        return KafkaPythonGroup(bootstrap, group, topics, on_assign, on_revoke, **settings)
    if client == "confluent":
        return ConfluentGroup(bootstrap, group, topics, on_assign, on_revoke, **settings)
    raise ValueError(f"unknown Kafka client {client!r}; use one of {', '.join(CLIENTS)}")
