"""Lab 06: Kafka for ML: topics, partitions, keys, groups, offsets, delivery guarantees and dead letters."""

from __future__ import annotations

import threading
import time
import uuid

from cloud.labkit.milestones import Milestones
from cloud.stack.broker import committed_offsets, create_topics
from cloud.streaming.processor import ProcessorService, read_dead_letter
from edge.streaming.kafka_sink import KafkaSink
from edge.wire.events import PredictionEvent
from edge.wire.kafka import consumer_config, producer_config
from edge.wire.topics import DEAD_LETTER, PREDICTIONS, TOPICS

TITLE = "Kafka for ML: partitions, keys, groups, offsets and dead letters"
DEFAULTS = {
    "events": 600, "devices": 3, "partitions": 3, "crash_after": 100, "seed": 0,
    "cap": 180.0,  # seconds the six experiments may take; past it the lab names the read that did not finish
}
QUICK = {"events": 300}
# A group join or rebalance has its own deadline inside the cap: the kit's consumers time out a silent member after
# 10 s (session_timeout_ms) and Tansu holds a new group's first join for about 5 s (max_poll_interval_ms); 30 s
# leaves room for a busy machine, and a join that takes longer is broken rather than slow.
JOIN_DEADLINE_S = 30.0


def read_all(consumer, want: int, what: str, milestones: Milestones) -> list:
    """Poll until want records have arrived, as the milestone ``what``; past the cap MilestoneMissed names it."""
    got: list = []

    def arrived() -> bool:
        """Poll once; true once want records are in."""
        for batch in consumer.poll(timeout_ms=200).values():
            got.extend(batch)
        return len(got) >= want

    milestones.wait(what, arrived, status=lambda: f"{len(got)} of {want} records")
    return got


def within(deadline_s: float, what: str):
    """A ``failed`` check for Milestones.wait: the reason to give up once deadline_s have passed since this call."""
    began = time.monotonic()
    return lambda: (f"{what} takes under {deadline_s:.0f} s, even on a busy machine"
                    if time.monotonic() - began > deadline_s else None)


def broker_log(ctx, stack) -> str:
    """Where to read the broker's log for this run's stack."""
    if stack.runtime == "docker":
        return "`docker compose logs broker`"
    if stack.runtime == "external":
        return "the log of the broker at " + stack.bootstrap_servers
    return str((ctx.settings.stack_dir if stack.reused else ctx.run.path / "stack") / "logs" / "broker.log")


def run(ctx) -> dict:
    """Six small experiments against a real broker, each read and group join a milestone under one cap."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # kafka inside: lab modules import quickly

    n, parts, devices = ctx.args["events"], ctx.args["partitions"], ctx.args["devices"]
    topic = f"lab06-readings-{uuid.uuid4().hex[:6]}"
    results: dict = {}
    with ctx.stack(services=("broker",)) as stack:
        bootstrap = stack.bootstrap_servers
        milestones = Milestones(ctx.args["cap"], progress=lambda line: ctx.console.print(line, highlight=False),
                                interval_s=0.05)

        ctx.step("1. a topic is split into partitions")
        create_topics(bootstrap, {topic: parts})
        ctx.console.print(f"created {topic!r} with {parts} partitions; the kit's topics: "
                          + ", ".join(f"{t} ({p})" for t, p in TOPICS.items()))

        ctx.step("2. keys choose the partition, so one device's events stay in order")
        producer = KafkaProducer(**producer_config(bootstrap))
        for i in range(n):
            device = f"cam-{i % devices}"
            producer.send(topic, key=device.encode(), value=f"{device}:{i // devices}".encode())
        producer.flush()
        reader = KafkaConsumer(**consumer_config(bootstrap, None))
        reader.assign([TopicPartition(topic, p) for p in range(parts)])
        records = read_all(reader, n, f"{n} keyed records read back", milestones)
        reader.close()
        placement: dict[str, set[int]] = {}
        in_order = True
        last: dict[str, int] = {}
        for r in sorted(records, key=lambda r: (r.partition, r.offset)):
            device, seq = r.value.decode().split(":")
            placement.setdefault(device, set()).add(r.partition)
            in_order &= int(seq) > last.get(device, -1)
            last[device] = int(seq)
        ctx.table("where each device's events went", ["device", "partitions", "events"],
                  [(d, sorted(p), sum(1 for r in records if r.key.decode() == d))
                   for d, p in sorted(placement.items())])
        ctx.console.print(f"each device on one partition: {all(len(p) == 1 for p in placement.values())}; "
                          f"per-device order kept: {in_order}")
        results.update(keyed_single_partition=all(len(p) == 1 for p in placement.values()), in_order=in_order)

        ctx.step("3. a consumer group splits the partitions; when one member leaves, the other takes them")
        group = f"lab06-group-{uuid.uuid4().hex[:6]}"
        assignments: dict[str, list[int]] = {}
        stop_b = threading.Event()

        def member(name: str, stop: threading.Event) -> None:
            """Join the group and poll until stopped, recording the partitions held."""
            consumer = KafkaConsumer(topic, **consumer_config(bootstrap, group))
            try:
                while not stop.is_set():
                    consumer.poll(timeout_ms=200)
                    assignments[name] = sorted(tp.partition for tp in consumer.assignment())
            finally:
                consumer.close()  # leaving the group makes the broker rebalance at once

        def held() -> str:
            """What each member holds now, for the progress line."""
            return ", ".join(f"{name} holds {assignments.get(name, [])}" for name in ("A", "B"))

        stop_a = threading.Event()
        threads = [threading.Thread(target=member, args=(name, ev)) for name, ev in (("A", stop_a), ("B", stop_b))]
        for t in threads:
            t.start()
        try:
            split_s = milestones.wait(
                f"members A and B share the {parts} partitions",
                lambda: sorted(assignments.get("A", []) + assignments.get("B", [])) == list(range(parts))
                and bool(assignments.get("A")) and bool(assignments.get("B")),
                log=broker_log(ctx, stack), status=held, failed=within(JOIN_DEADLINE_S, "joining a group"))
            split = dict(assignments)
            ctx.console.print(f"after {split_s:.1f} s: member A holds {split['A']}, member B holds {split['B']}")
            stop_b.set()
            threads[1].join()
            takeover_s = milestones.wait(
                f"member A holds all {parts} partitions after B left",
                lambda: assignments.get("A") == list(range(parts)),
                log=broker_log(ctx, stack), status=held, failed=within(JOIN_DEADLINE_S, "a rebalance"))
            ctx.console.print(f"B left; {takeover_s:.1f} s later A holds {assignments['A']}")
        finally:
            stop_a.set()
            stop_b.set()
            for t in threads:
                t.join()
        results.update(split=split, takeover=assignments["A"], takeover_s=round(takeover_s, 2))

        ctx.step("4. offsets: commit after the work (at-least-once) or before it (at-most-once)")
        crash = ctx.args["crash_after"]
        guarantees = {}
        for mode in ("at-least-once", "at-most-once"):
            g = f"lab06-{mode}-{uuid.uuid4().hex[:4]}"
            done: list[bytes] = []
            tps = [TopicPartition(topic, p) for p in range(parts)]
            first = KafkaConsumer(**consumer_config(bootstrap, g, max_poll_records=crash))
            first.assign(tps)
            batch = read_all(first, 1, f"{mode}: a first batch (at most {crash})", milestones)
            if mode == "at-most-once":
                first.commit()  # commit first...
                done += [r.value for r in batch[: len(batch) // 2]]  # ...then crash halfway through the work
            else:
                done += [r.value for r in batch[: len(batch) // 2]]  # work halfway, crash before committing
            first.close(autocommit=False)
            second = KafkaConsumer(**consumer_config(bootstrap, g))
            second.assign(tps)
            rest = read_all(second, n - (len(batch) if mode == "at-most-once" else 0),
                            f"{mode}: the rest read after the crash", milestones)
            done += [r.value for r in rest]
            second.commit()
            second.close()
            guarantees[mode] = {"first_batch": len(batch), "processed": len(done), "distinct": len(set(done)),
                                "lost": n - len(set(done)), "duplicates": len(done) - len(set(done))}
        ctx.table("a crash in the middle of a batch", ["mode", "first batch", "processed", "distinct", "lost",
                                                       "duplicates"],
                  [(m, v["first_batch"], v["processed"], v["distinct"], v["lost"], v["duplicates"])
                   for m, v in guarantees.items()])
        results["guarantees"] = guarantees

        ctx.step("5. the dead-letter topic: bad events are set aside with the reason; the consumer carries on")
        store = ctx.run.path / "processed.db"
        service = ProcessorService(bootstrap, store, group=f"lab06-proc-{uuid.uuid4().hex[:4]}",
                                   name="lab06", log=lambda line: None)
        worker = threading.Thread(target=service.run)
        worker.start()
        try:
            sink = KafkaSink(bootstrap, "cam-bad", log=lambda line: None)
            sink.enqueue(PREDICTIONS, b'{"kind": "prediction", "schema_version": 1}')  # the kit's producer, bad event
            sink.close()
            plain = KafkaProducer(bootstrap_servers=bootstrap)  # a plain client, no kit settings
            plain.send(PREDICTIONS, b"temperature=21.5")
            plain.send(PREDICTIONS, b"{" * 70_000)
            good = PredictionEvent(device_id="cam-ok", seq=0, model="m@1", predicted=1, confidence=0.9,
                                   true_label=1, latency_us=10.0)
            plain.send(PREDICTIONS, good.to_bytes())
            plain.flush()
            plain.close()
            dl = KafkaConsumer(**consumer_config(bootstrap, None))
            dl.assign([TopicPartition(DEAD_LETTER, 0)])
            letters = [read_dead_letter(r) for r in read_all(dl, 3, "3 dead letters read back", milestones)]
            dl.close()
            milestones.wait("the good event after them processed",
                            lambda: service.logic.processed.get("prediction", 0) >= 1,
                            failed=lambda: None if worker.is_alive() else "the processor thread stopped")
        finally:
            service.stop.set()
            worker.join()
        ctx.table("dead letters", ["from", "bytes", "reason"],
                  [(f"{d['topic']}[{d['partition']}]@{d['offset']}", len(d["value"]), d["reason"][:70])
                   for d in letters])
        results.update(dead_letters=len(letters), good_after_bad=service.logic.processed.get("prediction", 0))
        ctx.console.print(f"the good event after them was processed: {results['good_after_bad'] == 1}")

        ctx.step("6. two groups read the same stream, each at its own pace")
        counts = {}
        for g in ("training-set-writer", "dashboard"):
            name = f"lab06-{g}-{uuid.uuid4().hex[:4]}"
            c = KafkaConsumer(**consumer_config(bootstrap, name))
            c.assign([TopicPartition(topic, p) for p in range(parts)])
            counts[g] = len(read_all(c, n, f"{g}: {n} records read", milestones))
            c.commit()
            c.close()
            counts[g + " committed"] = sum(committed_offsets(bootstrap, name, topic).values())
        ctx.table("the same events, twice", ["group", "events read / offsets committed"], list(counts.items()))
        results["two_groups"] = counts
        results["milestones"] = [name for name, _ in milestones.reached]
        results["milestone_s"] = dict(milestones.reached)  # reported, not a promise: a busy machine takes longer
    return results
