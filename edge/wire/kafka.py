"""Kafka client settings shared by devices and cloud services (kafka-python).

Speed depends on one optional package: kafka-python computes the CRC32C checksum of every record
batch it produces and checks it on every batch it reads. Without the ``crc32c`` package
(``pip install 'kafka-python[crc32c]'``) it does so in pure Python, which limited this kit to about
2-9k produced and 4k consumed 700-byte messages per second on a 2-core VM; with it, 45k and 160k.
"""

from __future__ import annotations

from typing import Any

# Imported inside the functions that use them, to keep this module quick to import: kafka.

# Where a broker listens when KAFKA_BOOTSTRAP_SERVERS is unset: the local stack's (`make up`).
DEFAULT_BOOTSTRAP_SERVERS = "127.0.0.1:9092"

# Tansu, the embedded broker, holds a group's first join for the rebalance timeout,
# which kafka-python derives from max_poll_interval_ms: 5 s gives the first record in
# about 3 s instead of minutes. A real Kafka broker is fine with it too.
MAX_POLL_INTERVAL_MS = 5_000


def crc32c_accelerated() -> bool:
    """True when kafka-python checksums record batches with the native ``crc32c`` package (fast)."""
    from kafka.record import util

    return getattr(util, "crc32c_c", None) is not None


def producer_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    """Settings for a batching producer that waits for the broker's acknowledgement."""
    config = {
        "bootstrap_servers": bootstrap_servers,
        "acks": "all",
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "retries": 5,
        "retry_backoff_ms": 200,
    }
    config.update(overrides)
    return config


def key_partition(key: bytes, partitions: set[int] | list[int]) -> int:
    """The partition kafka-python's default partitioner picks for a key (murmur2, as the Java client).

    A producer that sends many messages under one key can compute this once and pass ``partition=``:
    the messages land where keyed sends would, and the producer skips a pure-Python hash per message
    (about 40% of kafka-python's per-message send cost here).

    Examples
    --------
    >>> key_partition(b"cam-0", {0, 1, 2}) in {0, 1, 2}
    True
    >>> key_partition(b"cam-0", [0, 1, 2]) == key_partition(b"cam-0", {2, 1, 0})
    True
    """
    from kafka.partitioner.default import murmur2

    ordered = sorted(partitions)
    return ordered[(murmur2(key) & 0x7FFFFFFF) % len(ordered)]


def consumer_config(bootstrap_servers: str, group_id: str | None, **overrides: Any) -> dict[str, Any]:
    """Settings for a consumer in a group that commits offsets itself, after the work."""
    config = {
        "bootstrap_servers": bootstrap_servers,
        "group_id": group_id,
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        "max_poll_interval_ms": MAX_POLL_INTERVAL_MS,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1_000,
    }
    config.update(overrides)
    return config
