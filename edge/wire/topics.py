"""The kit's Kafka topics and their partition counts: the one list devices and cloud services share."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

TELEMETRY = "telemetry"
PREDICTIONS = "predictions"
ALERTS = "alerts"
MODEL_UPDATES = "model-updates"
DEAD_LETTER = "dead-letter"

# Device events are keyed by device id, so one device's events stay in order on one partition;
# three partitions let up to three processors share the work. Notices and alerts are few: one
# partition keeps them in a single order every reader agrees on.
TOPICS: Mapping[str, int] = MappingProxyType({
    TELEMETRY: 3,
    PREDICTIONS: 3,
    ALERTS: 1,
    MODEL_UPDATES: 1,
    DEAD_LETTER: 1,
})
