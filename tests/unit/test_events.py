"""Event schemas: round trips, refusals with reasons, and a fuzzed parser that never raises."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.wire.events import (
    MAX_EVENT_BYTES,
    Alert,
    ModelUpdate,
    Parsed,
    PredictionEvent,
    Telemetry,
    parse_event,
    parse_events,
    stable_event_id,
)


def telemetry(**overrides) -> Telemetry:
    """A valid telemetry event."""
    values = dict(device_id="cam-0", seq=3, brightness=0.3, contrast=0.25, saturated=0.1,
                  confidence=0.97, latency_us=21.5)
    values.update(overrides)
    return Telemetry(**values)


def test_every_kind_round_trips_through_json_bytes():
    events = [
        telemetry(),
        PredictionEvent(device_id="cam-1", seq=0, model="digits-cnn@1", predicted=7, confidence=0.8,
                        true_label=7, features=[0.0, 0.5, 1.0], latency_us=30.0),
        Alert(device_id="cam-1", alert="drift", model="digits-cnn@1", score=0.4),
        ModelUpdate(device_id="cloud", model="digits-cnn@2", version=2, archive_sha256="a" * 64,
                    bundle_url="file:///tmp/x.tar.gz"),
    ]

    parsed = [parse_event(e.to_bytes()) for e in events]

    assert [p.event for p in parsed] == events
    assert all(p.ok and p.reason == "" for p in parsed)
    assert len({e.event_id for e in events}) == 4
    assert all(e.schema_version == 1 and e.ts > 0 for e in events)


def test_refusals_say_what_was_wrong():
    good = json.loads(telemetry().to_bytes())
    cases = {
        b"\xff\xfe": "invalid JSON",
        b"[1, 2]": "expected a JSON object, got list",
        json.dumps({**good, "schema_version": 2}).encode(): "unsupported schema_version 2",
        json.dumps({**good, "kind": "weather"}).encode(): "unknown kind 'weather'",
        json.dumps({**good, "confidence": 3}).encode(): "field 'confidence'",
        json.dumps({**good, "extra": 1}).encode(): "field 'extra'",
        b" " * (MAX_EVENT_BYTES + 1): "oversized",
    }

    results = {raw: parse_event(raw) for raw in cases}

    for raw, expected in cases.items():
        assert results[raw].event is None
        assert expected in results[raw].reason, results[raw].reason
    assert "wrong schema" in parse_event(telemetry().to_bytes(), expect="prediction").reason
    assert parse_event(None).reason.startswith("empty message")


def test_batch_parser_gives_what_the_single_parser_gives():
    good = telemetry().to_bytes()
    raws = [good, b"\xff", None, good + b"x", json.dumps({**json.loads(good), "confidence": 3}).encode(),
            b" " * (MAX_EVENT_BYTES + 1), good, good[:-1] + b"},{" + good[1:]]
    expects = ["telemetry", "telemetry", "telemetry", "telemetry", None, None, "prediction", "telemetry"]

    batch = parse_events(raws, expects)

    assert batch == [parse_event(raw, expect=kind) for raw, kind in zip(raws, expects)]
    assert [p.ok for p in batch] == [True, False, False, False, False, False, False, False]


def test_stable_ids_repeat_for_the_same_cause():
    assert stable_event_id("anomaly", "abc") == stable_event_id("anomaly", "abc")
    assert stable_event_id("anomaly", "abc") != stable_event_id("anomaly", "abd")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_give_an_event_or_a_reason(raw):
    parsed = parse_event(raw)

    assert isinstance(parsed, Parsed)
    assert parsed.ok != bool(parsed.reason)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["kind", "schema_version", "device_id", "seq", "ts", "event_id",
                                        "brightness", "contrast", "saturated", "confidence", "latency_us",
                                        "model", "predicted", "features", "alert", "version"]),
                       json_values, max_size=12),
       st.sampled_from(["telemetry", "prediction", "alert", "model-update", None]))
def test_fuzz_near_valid_objects_give_an_event_or_a_reason(fields, kind):
    base = json.loads(telemetry().to_bytes())
    if kind is not None:
        base["kind"] = kind
    base.update(fields)
    raw = json.dumps(base, allow_nan=True).encode()

    parsed = parse_event(raw)

    assert parsed.ok != bool(parsed.reason)
    if parsed.ok:
        assert parse_event(parsed.event.to_bytes()).event == parsed.event


class _Cluster:
    """Just enough cluster metadata for kafka-python's DefaultPartitioner: one topic of three partitions."""

    def topics(self):
        """The topics it knows: one, unnamed."""
        return {None}

    def partitions_for_topic(self, topic):
        """Every partition of the topic."""
        return {0, 1, 2}

    def available_partitions_for_topic(self, topic):
        """Partitions with a leader: all of them."""
        return {0, 1, 2}


def test_device_telemetry_and_key_partition_agree_with_their_references():
    import numpy as np
    from kafka.partitioner.default import DefaultPartitioner

    from edge.streaming.kafka_sink import telemetry_of
    from edge.wire.kafka import key_partition

    frames = np.random.default_rng(0).random((50, 64)).astype(np.float32)
    frames[:, :5] = 1.0  # some saturated pixels

    measured = [telemetry_of(f) for f in frames]
    picked = {name: key_partition(name.encode(), {0, 1, 2}) for name in (f"cam-{i}" for i in range(20))}

    for frame, m in zip(frames, measured):  # same numbers as numpy's mean and std (the slow path)
        assert abs(m["brightness"] - float(frame.astype(np.float64).mean())) < 1e-12
        assert abs(m["contrast"] - float(frame.astype(np.float64).std())) < 1e-9
        assert m["saturated"] == float((frame >= 0.999).mean())
    for name, partition in picked.items():  # the partition a keyed send would land on
        assert partition == DefaultPartitioner().partition(None, None, name.encode(), None, None, _Cluster())
