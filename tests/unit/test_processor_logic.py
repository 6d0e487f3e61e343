"""The processor's per-event logic without Kafka: de-duplication, drift on the error stream, anomalies."""

from __future__ import annotations

import numpy as np

from cloud.streaming.processor import StreamProcessor
from cloud.streaming.store import EventStore
from edge.wire.events import PredictionEvent, Telemetry

DRIFT_WITHIN = 150  # labelled events after the change (stated in lab 07's README)


def prediction(i: int, wrong: bool, model: str = "digits-cnn@1", device: str = "cam-0") -> PredictionEvent:
    """A labelled prediction that is right or wrong."""
    return PredictionEvent(device_id=device, seq=i, model=model, predicted=(3 if wrong else 4), confidence=0.9,
                           true_label=4, latency_us=20.0, features=[0.1] * 64)


def test_duplicates_are_dropped_and_counted_once(tmp_path):
    store = EventStore(tmp_path / "store.db")
    processor = StreamProcessor(store)
    events = [prediction(i, wrong=False) for i in range(50)]

    first = [processor.process(e).new for e in events]
    again = [processor.process(e).new for e in events[:20]]
    restarted = StreamProcessor(store)  # a new process with the same store
    replay = [restarted.process(e).new for e in events[30:]]

    assert all(first) and not any(again) and not any(replay)
    assert processor.duplicates == 20 and restarted.duplicates == 20
    assert store.counts() == {"cam-0": {"prediction": 50}}


def test_drift_is_detected_within_the_stated_events_and_only_on_a_rise():
    rng = np.random.default_rng(0)
    processor = StreamProcessor(EventStore(":memory:"))
    before = [prediction(i, wrong=rng.random() < 0.03) for i in range(1500)]
    after = [prediction(1500 + i, wrong=rng.random() < 0.6) for i in range(500)]

    alerts_before = [a for e in before for a in processor.process(e).alerts]
    first_alert = next(i for i, e in enumerate(after) if processor.process(e).alerts)
    # the error falls again with a new model version: its own detector, and no alert for a fall
    recovered = [prediction(3000 + i, wrong=rng.random() < 0.03, model="digits-cnn@2") for i in range(800)]
    alerts_recovered = [a for e in recovered for a in processor.process(e).alerts]

    assert alerts_before == []
    assert first_alert < DRIFT_WITHIN
    assert alerts_recovered == []


def test_overexposed_frames_score_as_anomalies():
    rng = np.random.default_rng(1)
    processor = StreamProcessor(EventStore(":memory:"), anomaly_warmup=300)

    def telemetry(i: int, glitch: bool) -> Telemetry:
        if glitch:
            return Telemetry(device_id="cam-0", seq=i, brightness=0.95, contrast=0.05, saturated=0.9,
                             confidence=0.3, latency_us=20.0)
        return Telemetry(device_id="cam-0", seq=i, brightness=rng.normal(0.3, 0.03), contrast=rng.normal(0.37, 0.02),
                         saturated=abs(rng.normal(0.1, 0.03)), confidence=min(1.0, rng.normal(0.97, 0.02)),
                         latency_us=20.0)

    glitches = set(range(7, 1000, 50))  # 2% of frames over-exposed, from the start
    outcomes = [processor.process(telemetry(i, i in glitches)) for i in range(1000)]
    flagged = {i for i, o in enumerate(outcomes) if o.alerts}

    after_warmup = {i for i in glitches if i > 300}
    assert after_warmup <= flagged
    assert flagged - glitches == set()  # no false alarm on the 686 normal readings after warm-up
