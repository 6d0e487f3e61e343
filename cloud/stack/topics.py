"""The kit's Kafka topics and their partition counts, and creating them on a broker."""

from __future__ import annotations

TELEMETRY = "telemetry"
PREDICTIONS = "predictions"
ALERTS = "alerts"
MODEL_UPDATES = "model-updates"
DEAD_LETTER = "dead-letter"

# Device events are keyed by device id, so one device's events stay in order on one partition;
# three partitions let up to three processors share the work. Notices and alerts are few: one
# partition keeps them in a single order every reader agrees on.
TOPICS: dict[str, int] = {
    TELEMETRY: 3,
    PREDICTIONS: 3,
    ALERTS: 1,
    MODEL_UPDATES: 1,
    DEAD_LETTER: 1,
}


def ensure_topics(bootstrap: str, topics: dict[str, int] | None = None) -> list[str]:
    """Create whichever of the kit's topics do not exist yet; returns the names created."""
    from cloud.stack.broker import create_topics

    return create_topics(bootstrap, dict(topics or TOPICS))
