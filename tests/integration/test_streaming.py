"""Streaming through the real broker: dead letters, crashes, rebalancing, a broker restart, a device restart."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from cloud.stack.local import LocalStack
from cloud.stack.procs import stop_pid, wait_until
from cloud.streaming.clients import CLIENTS
from cloud.streaming.scenario import start_processor
from cloud.streaming.store import StoreReader
from edge.wire.events import PredictionEvent, Telemetry
from edge.wire.kafka import consumer_config, producer_config
from edge.wire.topics import ALERTS, DEAD_LETTER, PREDICTIONS, TELEMETRY, TOPICS


@pytest.fixture()
def broker(run_settings, tmp_path):
    """A real broker (with the kit's topics) for one test; stopped afterwards."""
    stack = LocalStack(run_settings, tmp_path / "stack")
    stack.up(["broker"])
    try:
        yield stack
    finally:
        stack.down()


def prediction(device: str, seq: int) -> PredictionEvent:
    """A labelled prediction event."""
    return PredictionEvent(device_id=device, seq=seq, model="digits-stream@1", predicted=seq % 10, confidence=0.9,
                           true_label=seq % 10, latency_us=20.0, features=[0.25] * 64)


def produce(bootstrap: str, items: list[tuple[str, bytes, bytes | None]]) -> None:
    """Send (topic, value, key) triples with a plain kafka-python producer and wait for the broker."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**producer_config(bootstrap))
    for topic, value, key in items:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list:
    """Every record of a topic from the beginning: waits for at least expect records, then reads on to each
    partition's high watermark, so a topic holding more than expect is read whole (stops early only at timeout)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**consumer_config(bootstrap, None))
    partitions = [TopicPartition(topic, p) for p in range(TOPICS[topic])]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    records, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=300).values():
            records += batch
        # The fetches' high watermarks, not end_offsets(): Tansu's ListOffsets answers the last batch's base offset + 1.
        if len(records) >= expect and all(consumer.highwater(tp) is not None
                                          and consumer.position(tp) >= consumer.highwater(tp) for tp in partitions):
            break
    consumer.close()
    return records


def start_ready(bootstrap, store, folder, name):
    """A processor process, once it has partitions."""
    proc, ready, log = start_processor(bootstrap, store, folder, name)
    wait_until(ready.exists, name, 60, proc, log)
    return proc, log


def test_bad_messages_go_to_dead_letter_with_their_bytes_and_the_consumer_carries_on(broker, run_settings, tmp_path):
    bootstrap = run_settings.kafka_bootstrap_servers
    proc, _ = start_ready(bootstrap, tmp_path / "store.db", tmp_path, "p-dl")
    try:
        bad = {b"{not json": "invalid JSON", b"x" * 70_000: "oversized",
               b'{"kind": "prediction", "schema_version": 9}': "unsupported schema_version 9",
               Telemetry(device_id="d", seq=0, brightness=0.1, contrast=0.1, saturated=0.0, confidence=0.5,
                         latency_us=1.0).to_bytes(): "wrong schema: kind 'telemetry'"}
        good = [prediction("cam-x", i) for i in range(20)]
        produce(bootstrap, [(PREDICTIONS, raw, b"k") for raw in bad]
                + [(PREDICTIONS, e.to_bytes(), b"cam-x") for e in good])
        store = StoreReader(tmp_path / "store.db")
        wait_until(lambda: store.total() == 20, "20 good events processed", 30, proc)
        letters = read_topic(bootstrap, DEAD_LETTER, len(bad))
    finally:
        stop_pid(proc.pid)

    from cloud.streaming.processor import read_dead_letter

    seen = {r.value: read_dead_letter(r) for r in letters}
    assert set(seen) == set(bad)  # original bytes, unchanged
    for raw, reason in bad.items():
        assert reason in seen[raw]["reason"]
        assert seen[raw]["topic"] == PREDICTIONS and seen[raw]["offset"] >= 0 and seen[raw]["partition"] >= 0
    assert store.dead_letters() == len(bad)
    assert store.counts() == {"cam-x": 20}


def test_a_killed_processor_restarts_and_every_event_counts_once(broker, run_settings, tmp_path):
    bootstrap = run_settings.kafka_bootstrap_servers
    events = [prediction(f"cam-{i % 4}", i) for i in range(4000)]
    produce(bootstrap, [(PREDICTIONS, e.to_bytes(), e.device_id.encode()) for e in events])
    store = StoreReader(tmp_path / "store.db")

    proc, _ = start_ready(bootstrap, tmp_path / "store.db", tmp_path, "p-first")
    wait_until(lambda: store.total() >= 300, "some events processed", 30, proc)
    os.kill(proc.pid, signal.SIGKILL)  # a crash: no clean shutdown, no final commit
    proc.wait()
    at_kill = store.total()
    again, _ = start_ready(bootstrap, tmp_path / "store.db", tmp_path, "p-second")
    try:
        wait_until(lambda: store.total() >= 4000, "all events processed", 60, again)
        time.sleep(0.5)  # let any replayed duplicates arrive (they must not be counted)
        total = store.total()
    finally:
        stop_pid(again.pid)

    assert 0 < at_kill < 4000
    assert total == 4000
    assert store.counts() == {f"cam-{i}": 1000 for i in range(4)}


def test_two_processors_split_partitions_and_one_takes_over_when_the_other_dies(broker, run_settings, tmp_path):
    bootstrap = run_settings.kafka_bootstrap_servers
    store_path = tmp_path / "store.db"
    store = StoreReader(store_path)
    first, log_a = start_ready(bootstrap, store_path, tmp_path, "p-a")
    second, log_b = start_ready(bootstrap, store_path, tmp_path, "p-b")
    try:
        wait_until(lambda: log_a.read_text().count("partitions assigned") >= 2, "rebalance to two members", 30, first)
        devices = [f"cam-{i}" for i in range(12)]
        batch1 = [prediction(d, s) for s in range(100) for d in devices]
        produce(bootstrap, [(PREDICTIONS, e.to_bytes(), e.device_id.encode()) for e in batch1])
        wait_until(lambda: store.total() >= len(batch1), "first batch", 30, first)
        by_processor = dict(store._query("SELECT processor, COUNT(DISTINCT partition) FROM events GROUP BY 1"))
        os.kill(second.pid, signal.SIGKILL)
        second.wait()
        batch2 = [prediction(d, s) for s in range(100, 200) for d in devices]
        produce(bootstrap, [(PREDICTIONS, e.to_bytes(), e.device_id.encode()) for e in batch2])
        wait_until(lambda: store.total() >= len(batch1) + len(batch2), "takeover", 60, first)
        after = store._query("SELECT processor, COUNT(DISTINCT partition) FROM events WHERE seq >= 100 GROUP BY 1")
    finally:
        stop_pid(first.pid)

    assert set(by_processor) == {"p-a", "p-b"}  # both had work: the partitions were split
    assert dict(after) == {"p-a": 3}  # the survivor took every partition over
    assert store.total() == 2400


@pytest.mark.parametrize("client", CLIENTS)
def test_the_responders_reader_starts_at_since_with_either_client(broker, run_settings, client):
    # Prepare: old predictions and an old alert, then (after `since`) new predictions only; alerts stay idle
    from cloud.streaming.clients import open_reader

    if client == "confluent":
        pytest.importorskip("confluent_kafka")
    bootstrap = run_settings.kafka_bootstrap_servers
    produce(bootstrap, [(PREDICTIONS, f"old-{i}".encode(), f"cam-{i}".encode()) for i in range(30)]
            + [(ALERTS, b"old-alert", None)])
    time.sleep(1.1)  # record timestamps are in ms: leave a clear gap on both sides of `since`
    since = time.time()
    time.sleep(0.1)
    new = [f"new-{i}" for i in range(30)]
    produce(bootstrap, [(PREDICTIONS, value.encode(), f"cam-{i}".encode()) for i, value in enumerate(new)])

    # Execute: the drift responder's reader (no group, every partition) from `since`
    reader = open_reader(client, bootstrap, [ALERTS, PREDICTIONS], since=since)
    got, deadline = [], time.monotonic() + 20
    try:
        while len(got) < len(new) and time.monotonic() < deadline:
            got += [record.value.decode() for record in reader.poll(0.2)]
        got += [record.value.decode() for record in reader.poll(1.0)]  # and nothing more arrives
    finally:
        reader.close()

    # Assert: exactly the events after `since`; the idle alerts partition replays nothing older
    assert sorted(got) == sorted(new)


def test_devices_buffer_while_the_broker_is_down_and_resume_after_it_restarts(broker, run_settings):
    from edge.streaming.kafka_sink import KafkaSink

    bootstrap = run_settings.kafka_bootstrap_servers
    lines: list[str] = []
    sink = KafkaSink(bootstrap, "cam-r", log=lines.append, flush_timeout_s=2.0)
    stop, sent = threading.Event(), []

    def device() -> None:
        """Write 200 events a second, remembering their ids in order."""
        seq = 0
        while not stop.is_set():
            event = prediction("cam-r", seq)
            sent.append(event.event_id)  # recorded first: an id at or after outage_from was enqueued after the kill
            sink.enqueue(PREDICTIONS, event.to_bytes())
            seq += 1
            time.sleep(0.005)

    thread = threading.Thread(target=device)
    thread.start()
    try:
        wait_until(lambda: sum(sink.delivered.values()) > 200, "first deliveries", 20)
        stop_pid(broker.pids()[0])  # memory storage: everything retained so far is gone
        outage_from = len(sent)
        wait_until(lambda: sink.buffering, "the sink to notice the outage", 30)
        time.sleep(2.0)  # a few seconds of outage while the device keeps writing
        broker.up(["broker"])  # same port; the stack re-creates the topics once healthy
        restarted_at = len(sent)
        wait_until(lambda: not sink.buffering, "the sink to drain", 30)
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join()
        sink.close()
    topics_now = read_topic(bootstrap, PREDICTIONS, len(sent) - outage_from)

    arrived = [r for r in topics_now]
    from edge.wire.events import parse_event

    ids = [parse_event(r.value).event.event_id for r in arrived]
    assert set(sent[restarted_at:]) <= set(ids)  # every event sent after the restart arrived
    assert set(sent[outage_from:]) <= set(ids)  # and so did those buffered during the outage
    order = [sent.index(i) for i in ids if i in set(sent[outage_from:])]
    assert order == sorted(order)  # in order (one partition per device key)
    assert sink.pending() == 0 and sink.outages == 1
    assert any("buffering locally" in line for line in lines)
    assert any("answers again" in line for line in lines)
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        assert set(TOPICS) <= set(admin.list_topics())
    finally:
        admin.close()


def test_a_killed_device_rejoins_under_its_old_id_without_corrupting_counts(broker, run_settings, tmp_path):
    from cloud.streaming.scenario import prepare_initial_model, read_json, start_device

    bootstrap = run_settings.kafka_bootstrap_servers
    model = prepare_initial_model(run_settings.artifacts_dir, seed=0, epochs=8)
    store = StoreReader(tmp_path / "store.db")
    proc, _ = start_ready(bootstrap, tmp_path / "store.db", tmp_path, "p-dev")
    device, stats, log = start_device(bootstrap, model, tmp_path, "cam-k", rate=200, duration=60, seed=1)
    try:
        wait_until(lambda: store.counts().get("cam-k", 0) > 200, "device streaming", 30, device)
        os.kill(device.pid, signal.SIGKILL)
        device.wait()
        again, stats2, _ = start_device(bootstrap, model, tmp_path / "second", "cam-k", rate=200, duration=60,
                                        seed=1, count=300)
        wait_until(lambda: again.poll() is not None, "second run to finish", 60)
        in_kafka = {r.value for t in (PREDICTIONS, TELEMETRY) for r in read_topic(bootstrap, t, 10**9, timeout=3)}
        wait_until(lambda: store.total() >= len(in_kafka), "processor to catch up", 30, proc)
        final = read_json(stats2, {})
    finally:
        stop_pid(proc.pid)

    assert again.returncode == 0 and final["produced"] == final["delivered"]
    assert store.counts() == {"cam-k": len(in_kafka)}  # every event in the topics, counted once
    assert sum(final["delivered"].values()) == 600  # the new run's 300 readings x 2 events


def test_a_private_device_sends_no_frame_and_keeps_its_labelled_window_on_disk(broker, run_settings, tmp_path):
    # Prepare: one device with --no-features and a window file, 300 readings as fast as it can
    import json

    import numpy as np

    from cloud.streaming.scenario import prepare_initial_model, start_device

    bootstrap = run_settings.kafka_bootstrap_servers
    model = prepare_initial_model(run_settings.artifacts_dir, seed=0, epochs=8)
    window = tmp_path / "cam-p" / "iid" / "device-0.npz"  # where a ClientApp with data-dir cam-p reads partition 0
    device, stats, log = start_device(bootstrap, model, tmp_path, "cam-p", rate=0, duration=60, count=300,
                                      extra=["--no-features", "--window-file", str(window), "--window", "250"])

    # Execute
    wait_until(lambda: device.poll() is not None, "the private device to finish its 300 readings", 60, device, log)

    # Assert: every prediction on Kafka carries no frame; the window holds the newest 250 labelled frames
    assert device.returncode == 0, log.read_text()[-2000:]
    events = [json.loads(r.value) for r in read_topic(bootstrap, PREDICTIONS, 300)]
    assert len(events) == 300 and all(e["features"] == [] for e in events)
    saved = np.load(window)
    assert len(saved["y_train"]) + len(saved["y_val"]) == 250 and len(saved["y_val"]) == 50
    assert saved["x_train"].shape[1] == 64 and saved["x_train"].dtype == np.float32
