"""Lab 00: bring up the local stack, round-trip events through the broker, ping the SuperLink."""

from __future__ import annotations

import json
import time
import uuid

from cloud.settings import split_host_port
from cloud.stack.broker import committed_offsets, create_topics
from cloud.stack.local import superlink_healthy, superlink_tls_files
from edge.wire.kafka import consumer_config, producer_config

# Imported inside the functions that use them, to keep this module quick to import: kafka.

TITLE = "Hello, stack: a real broker and a real SuperLink"
DEFAULTS = {"events": 1000, "partitions": 3, "seed": 0, "timeout": 60.0}
QUICK = {"events": 1000}


def produce_events(bootstrap: str, topic: str, count: int) -> float:
    """Send count small JSON events keyed by device; returns seconds taken."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**producer_config(bootstrap))
    start = time.perf_counter()
    for i in range(count):
        device = f"device-{i % 3}"
        event = {"seq": i, "device": device}
        producer.send(topic, key=device.encode(), value=json.dumps(event).encode())
    producer.flush()
    producer.close()
    return time.perf_counter() - start


def consume_events(bootstrap: str, topic: str, group: str, count: int,
                   timeout: float) -> tuple[list[dict], float, float]:
    """Read count events in a consumer group and commit; returns (events, first-record s, total s)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, **consumer_config(bootstrap, group))
    start = time.perf_counter()
    first = None
    events: list[dict] = []
    try:
        while len(events) < count and time.perf_counter() - start < timeout:
            for records in consumer.poll(timeout_ms=500).values():
                first = first or time.perf_counter() - start
                events.extend(json.loads(r.value) for r in records)
            consumer.commit()
    finally:
        consumer.close()
    return events, first or float("nan"), time.perf_counter() - start


def run(ctx) -> dict:
    """Start the stack, send and receive events, ping the SuperLink, stop everything."""
    n = ctx.args["events"]
    topic, group = "hello", f"hello-{uuid.uuid4().hex[:8]}"
    with ctx.stack() as stack:
        ctx.step("1. create a topic")
        create_topics(stack.bootstrap_servers, {topic: ctx.args["partitions"]})
        ctx.console.print(f"topic {topic!r} with {ctx.args['partitions']} partitions")

        ctx.step(f"2. produce {n} events")
        produce_s = produce_events(stack.bootstrap_servers, topic, n)
        ctx.console.print(f"sent {n} events in {produce_s:.2f} s")

        ctx.step("3. consume them in a consumer group and commit")
        events, first_s, consume_s = consume_events(stack.bootstrap_servers, topic, group, n,
                                                    ctx.args["timeout"])
        committed = sum(committed_offsets(stack.bootstrap_servers, group, topic).values())
        unique = len({e["seq"] for e in events})
        ctx.console.print(f"received {len(events)} events ({unique} distinct) in {consume_s:.2f} s; "
                          f"first after {first_s:.2f} s; committed offsets sum to {committed}")

        ctx.step("4. ping the SuperLink")
        host, port = split_host_port(stack.superlink_address)
        tls = superlink_tls_files(ctx.settings)
        superlink_ok = superlink_healthy(host, port, ca=tls.ca if tls else None)
        ctx.console.print(f"GET {'https' if tls else 'http'}://{stack.superlink_address}/health -> "
                          f"{'200 OK' if superlink_ok else 'no answer'}")

    ctx.table("lab-00 summary", ["check", "value"], [
        ("events sent", n), ("events received", len(events)), ("distinct received", unique),
        ("committed offsets", committed), ("first record after (s)", first_s),
        ("SuperLink healthy", superlink_ok),
    ])
    return {"stack_pids": stack.pids, "sent": n, "received": len(events), "distinct": unique, "committed": committed,
            "first_record_s": round(first_s, 2), "superlink_healthy": superlink_ok}
