"""Streaming benchmark: broker rates, the device pipeline, the cloud processor against bare River, lab-07 start-up.

``main(run, console, *args)`` is what ``cloud bench stream`` / ``make bench-stream`` calls; args are
``key=value`` (``events=20000 readings=5000 repeats=3 lab=1``). Everything runs on this machine in one go,
with the kit's own client settings (``edge/wire/kafka.py``); the broker's consume rate and the processor run with
kafka-python (the kit's client) and confluent-kafka side by side, and the table is written to the run folder.

Measurements that are compared (raw produce against the device pipeline; each client's processor against
the bare River loop) alternate within each of ``repeats`` rounds and the table shows medians, so a
change in the machine's load (other jobs on a shared VM) moves both sides of a ratio alike.
"""

from __future__ import annotations

import importlib.util
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

from cloud.bench.report import Measure
from cloud.bench.tables import bench_table
from cloud.labkit.runner import parse_args, run_lab
from cloud.settings import StackSettings
from cloud.stack.broker import create_topics
from cloud.stack.local import LocalStack
from cloud.stack.procs import free_port
from cloud.streaming.clients import open_group
from cloud.streaming.online import build_online_model
from cloud.streaming.processor import ProcessorService, pooled_features
from cloud.streaming.scenario import prepare_initial_model
from edge.machine import machine_name
from edge.serving.bundle import load_bundle
from edge.serving.device import EdgeDevice
from edge.serving.keys import load_public_key
from edge.serving.runners import open_runner
from edge.serving.sources import DigitFrames, DriftingCamera
from edge.streaming.kafka_sink import KafkaSink
from edge.wire.events import PredictionEvent, parse_event
from edge.wire.kafka import consumer_config, crc32c_accelerated, producer_config
from edge.wire.topics import PREDICTIONS, TELEMETRY

# Imported inside the functions that use them, to keep this module quick to import: kafka, river.

DEFAULTS = {"events": 20000, "readings": 5000, "repeats": 3, "lab": 1, "seed": 0}
# Issue 14's targets: device pipeline against raw produce, processor (default client) against bare River,
# lab 07 start to its first processed prediction.
TARGETS = {"device_vs_raw_produce": 0.70, "processor_vs_bare_river": 0.80, "lab07_first_prediction_s": 4.0}


def parse(args: tuple[str, ...]) -> dict[str, int]:
    """key=value arguments over DEFAULTS (integers); a misspelt key names the right one."""
    return parse_args(args, DEFAULTS)


def bench_value() -> bytes:
    """A prediction-sized message (64 features), as devices send."""
    return PredictionEvent(device_id="cam-0", seq=0, model="m@1", predicted=1, confidence=0.9, true_label=1,
                           latency_us=20.0, features=[0.1234] * 64).to_bytes()


def produce_rate(bootstrap: str, topic: str, events: int) -> float:
    """Messages per second the kit's producer sends (keyed, as devices are) until the broker acknowledged them all."""
    from kafka import KafkaProducer

    value = bench_value()
    producer = KafkaProducer(**producer_config(bootstrap))
    start = time.perf_counter()
    for i in range(events):
        producer.send(topic, key=f"cam-{i % 3}".encode(), value=value)
    producer.flush()
    seconds = time.perf_counter() - start
    producer.close()
    return events / seconds


def consume_rates(bootstrap: str, topic: str, events: int) -> dict[str, float]:
    """Each client's group-member read rate over a topic holding ``events`` messages."""
    return {f"consume_per_s_{client}": group_consume_rate(client, bootstrap, topic, events)
            for client in available_clients()}


def available_clients() -> list[str]:
    """The Kafka clients installed here, kafka-python first."""
    return ["kafka-python"] + (["confluent"] if importlib.util.find_spec("confluent_kafka") else [])


def group_consume_rate(client: str, bootstrap: str, topic: str, events: int) -> float:
    """Messages per second one fresh group member reads with a client, from its first record to the last."""
    group = open_group(client, bootstrap, f"bench-{uuid.uuid4().hex[:6]}", [topic], lambda p: None, lambda p: None,
                       max_records=2000)
    seen, first = 0, None
    deadline = time.monotonic() + 120
    try:
        while seen < events and time.monotonic() < deadline:
            records = group.poll(0.2)
            if records and first is None:
                first = time.perf_counter()
            seen += len(records)
        seconds = time.perf_counter() - (first or time.perf_counter())
    finally:
        group.close()
    return seen / seconds if seconds > 0 else float("nan")


def device_pipeline(bootstrap: str, model, readings: int, seed: int, name: str) -> dict[str, float]:
    """One device as fast as it goes: frames -> ONNX Runtime -> two events -> Kafka, until all acknowledged."""
    key = load_public_key(model.public_key)
    runner = open_runner(load_bundle(model.bundle, key), num_threads=1)
    camera = DriftingCamera(DigitFrames.from_file(model.frames, count=readings, seed=seed), glitch_rate=0.01, seed=seed)
    sink = KafkaSink(bootstrap, name, camera, log=lambda line: None)
    start = time.perf_counter()
    # The recording is ahead of the device, as with ``python -m edge.streaming --rate 0``: 16 frames per runner call.
    EdgeDevice(runner, camera, sink, name="bench-cam").run(batch=16)  # closes the sink: waits for every acknowledgement
    seconds = time.perf_counter() - start
    events = sum(sink.delivered.values())
    if events != sum(sink.produced.values()):
        raise RuntimeError(f"device pipeline: {sum(sink.produced.values())} events produced, {events} acknowledged")
    return {"readings_per_s": readings / seconds, "events_per_s": events / seconds, "events": events}


def produce_vs_device(bootstrap: str, artifacts_dir: Path, events: int, readings: int, seed: int,
                      repeats: int) -> dict[str, Any]:
    """Raw produce and the device pipeline, alternating for ``repeats`` rounds: medians and the ratio of medians."""
    model = prepare_initial_model(artifacts_dir, seed=seed, epochs=8)
    topic = f"bench-raw-{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, {topic: 3})
    produce, device = [], []
    for round_ in range(repeats):
        produce.append(produce_rate(bootstrap, topic, events))
        device.append(device_pipeline(bootstrap, model, readings, seed, f"bench-cam-{round_}"))
    out: dict[str, Any] = {"message_bytes": len(bench_value()), "produce_per_s": statistics.median(produce),
                           "produce_runs": produce, "raw_topic": topic,
                           "device_events": device[0]["events"], "device_events_total": sum(d["events"] for d in device)}
    for measure in ("readings_per_s", "events_per_s"):
        out[f"device_{measure}"] = statistics.median(d[measure] for d in device)
    out["device_events_runs"] = [d["events_per_s"] for d in device]
    out["device_vs_raw_produce"] = out["device_events_per_s"] / out["produce_per_s"]
    return out


def processor_rate(bootstrap: str, events: int, store: Path, client: str) -> dict[str, float]:
    """The processor (a fresh group) over the events in the topics with one client: events/s and seconds to the first."""
    service = ProcessorService(bootstrap, store, group=f"bench-{uuid.uuid4().hex[:6]}", name=f"bench-{client}",
                               log=lambda line: None, client=client)
    marks: dict[str, float] = {"start": time.perf_counter()}

    def watch() -> None:
        """Time from the first processed event to the last."""
        logic = service.logic
        while not service.stop.is_set():
            done = sum(logic.processed.values())
            if done and "first" not in marks:
                marks["first"], marks["first_n"] = time.perf_counter(), done
            if done >= events:
                marks["last"] = time.perf_counter()
                service.stop.set()
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    service.run(max_seconds=180)
    service.stop.set()
    watcher.join()
    processed = sum(service.logic.processed.values())
    rate = (processed - marks.get("first_n", 0)) / (marks.get("last", time.perf_counter()) - marks["first"])
    return {"per_s": rate, "processed": processed, "first_s": marks["first"] - marks["start"]}


def river_inputs(bootstrap: str, events: int) -> list[tuple]:
    """The ``events`` events in the topics (all the devices sent), parsed and featurised as the processor does."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**consumer_config(bootstrap, None, max_poll_records=5000))
    consumer.assign([TopicPartition(t, p) for t in (TELEMETRY, PREDICTIONS) for p in range(3)])
    consumer.seek_to_beginning()
    parsed = []
    deadline = time.monotonic() + 60
    while len(parsed) < events and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            parsed += [parse_event(r.value).event for r in records]
    consumer.close()
    inputs = []
    for e in parsed[:events]:
        if e.kind == "prediction":
            inputs.append(("p", pooled_features(e.features), e.true_label, int(e.predicted != e.true_label), e.model))
        else:
            inputs.append(("t", {"brightness": e.brightness, "contrast": e.contrast, "saturated": e.saturated,
                                 "confidence": e.confidence}, None, None, None))
    return inputs


def bare_river_rate(inputs: list[tuple]) -> float:
    """The processor's River work over the same events, parsed and featurised beforehand, in memory."""
    # River is heavy: only this measurement imports it
    from river import metrics

    bare = build_online_model()  # the processor's River parts, fresh, as a processor builds them
    accuracy = metrics.Accuracy()
    detectors: dict[str, Any] = {}
    start = time.perf_counter()
    for kind, x, y, error, model in inputs:
        if kind == "p":
            guess = bare.classifier.predict_one(x)
            bare.classifier.learn_one(x, y)
            if guess is not None:
                accuracy.update(y, guess)
            if model not in detectors:
                detectors[model] = bare.new_drift_detector()
            detectors[model].update(error)
        else:
            bare.scaler.learn_one(x)
            scaled = bare.scaler.transform_one(x)
            bare.anomaly.score_one(scaled)
            bare.anomaly.learn_one(scaled)
    return len(inputs) / (time.perf_counter() - start)


def processor_vs_river(bootstrap: str, events: int, folder: Path, repeats: int) -> dict[str, Any]:
    """Each client's processor and the bare River loop over every device event, alternating for ``repeats`` rounds.

    Medians per measure, and each client's ratio of medians to bare River. Each round's processors use a
    fresh group and store, so they redo all the work; the client that goes first alternates too.
    """
    inputs = river_inputs(bootstrap, events)
    clients = available_clients()
    runs: dict[str, list[float]] = {}
    first_s: dict[str, list[float]] = {}
    for round_ in range(repeats):
        order = clients if round_ % 2 == 0 else clients[::-1]
        for client in order:
            result = processor_rate(bootstrap, events, folder / f"processed-{client}-{round_}.db", client)
            runs.setdefault(client, []).append(result["per_s"])
            first_s.setdefault(client, []).append(result["first_s"])
        runs.setdefault("bare", []).append(bare_river_rate(inputs))
    out: dict[str, Any] = {"bare_river_per_s": statistics.median(runs["bare"]), "bare_river_runs": runs["bare"]}
    for client in clients:
        out[f"processor_per_s_{client}"] = statistics.median(runs[client])
        out[f"processor_runs_{client}"] = runs[client]
        out[f"processor_first_s_{client}"] = statistics.median(first_s[client])
        out[f"processor_vs_bare_river_{client}"] = out[f"processor_per_s_{client}"] / out["bare_river_per_s"]
    return out


def main(run, console, *args: str) -> dict[str, Any]:
    """Run every measurement against a fresh local broker and print one table."""
    opts = parse(args)
    settings = StackSettings()
    machine = machine_name()
    console.print(f"machine: {machine}")
    results: dict[str, Any] = {"machine": machine}

    bench_settings = settings.model_copy(update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"})
    stack = LocalStack(bench_settings, run.path / "stack", console=console)
    stack.up(["broker"])
    try:
        bootstrap = bench_settings.kafka_bootstrap_servers
        repeats = max(1, opts["repeats"])
        console.print(f"raw produce ({opts['events']} messages) and the device pipeline ({opts['readings']} readings), "
                      f"alternating, {repeats} rounds ...")
        results.update(produce_vs_device(bootstrap, settings.artifacts_dir, opts["events"], opts["readings"],
                                         opts["seed"], repeats))
        console.print("broker consume rate, each client ...")
        results.update(consume_rates(bootstrap, results["raw_topic"], opts["events"] * repeats))
        console.print(f"cloud processor (each client) and bare River on the same events, alternating, {repeats} rounds ...")
        results.update(processor_vs_river(bootstrap, results["device_events_total"], run.path, repeats))
    finally:
        stack.down()
    if opts["lab"]:
        # Lab 07 runs to its milestones (drift, update, every device swapped); only its start-up is measured here,
        # with local processes like the rest of this benchmark (auto would pick Docker wherever an engine answers).
        console.print("lab 07 (quick, local processes, drift at 6 s, to its milestones) for the start-up time ...")
        try:
            metrics, _ = run_lab("07", ["drift_at=6"], quick=True, console=Console(quiet=True), runtime="local",
                                 settings=settings.model_copy(update={"runs_dir": run.path / "lab"}))
            results["lab07_first_prediction_s"] = metrics["first_prediction_s"]
            results["lab07_startup"] = metrics.get("startup", {})
        except Exception as error:  # noqa: BLE001 - the rates above are measured; say why the start-up is not
            results["lab07_error"] = f"{type(error).__name__}: {error}"
            console.print(f"[yellow]lab 07 did not finish:[/] {results['lab07_error']}", highlight=False)

    results["crc32c_native"] = crc32c_accelerated()
    crc = "native crc32c" if results["crc32c_native"] else "pure-Python CRC32C: pip install crc32c"
    rows = [
        ("broker produce (kit producer, kafka-python)", f"{results['produce_per_s']:,.0f} msg/s",
         f"{results['message_bytes']} B keyed messages; {crc}; median of {repeats}"),
    ]
    for client in available_clients():
        rows.append((f"broker consume, group member ({client})", f"{results[f'consume_per_s_{client}']:,.0f} msg/s", ""))
    rows.append(("device: frame -> ONNX -> Kafka", f"{results['device_events_per_s']:,.0f} events/s",
                 f"{results['device_readings_per_s']:,.0f} readings/s; {results['device_vs_raw_produce']:.0%} of raw "
                 f"produce (target >= {TARGETS['device_vs_raw_produce']:.0%}); median of {repeats}, "
                 "alternating with produce"))
    for client in available_clients():
        ratio = results[f"processor_vs_bare_river_{client}"]
        rows.append((f"cloud processor ({client})", f"{results[f'processor_per_s_{client}']:,.0f} events/s",
                     f"{ratio:.0%} of bare River (target >= {TARGETS['processor_vs_bare_river']:.0%}); "
                     f"median of {repeats}; "
                     "Kafka + JSON schema + SQLite dedupe + River"))
    rows.append(("bare River loop, same events in memory", f"{results['bare_river_per_s']:,.0f} events/s",
                 f"SoftmaxRegression on 16 features + ADWIN; MinMax + HalfSpaceTrees; median of {repeats}"))
    if "lab07_first_prediction_s" in results:
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in results["lab07_startup"].items())
        rows.append(("lab 07 start to first processed prediction", f"{results['lab07_first_prediction_s']:.1f} s",
                     f"target <= {TARGETS['lab07_first_prediction_s']:g} s (model cached); {phases}"))

    table = bench_table(f"bench-stream on {machine}", [("measure", "text"), ("value", "number"), ("note", "text")])
    for row in rows:
        table.add_row(*row)
    console.print(table)
    (run.path / "table.txt").write_text("\n".join(" | ".join(r) for r in [("measure", "value", "note"), *rows]) + "\n")
    return results


def measures(result: dict[str, Any]) -> list[Measure]:
    """P2, P3 and P7 of issue 14 from a main() result (P3's target is on the processor's default client)."""
    default = StackSettings().processor_kafka_client
    rounds = len(result["produce_runs"])
    out = [Measure("P2", "device pipeline rate", result["device_events_per_s"], "events/s",
                   baseline=result["produce_per_s"], baseline_name="raw produce", compare="percent", op=">=",
                   target=TARGETS["device_vs_raw_produce"],
                   note=f"frame -> ONNX -> Kafka, {result['device_readings_per_s']:,.0f} readings/s; medians of "
                        f"{rounds} rounds alternating with the kit producer's raw rate "
                        f"({result['message_bytes']} B messages)")]
    clients = sorted((c for c in available_clients() if f"processor_per_s_{c}" in result), key=lambda c: c != default)
    for client in clients:
        is_default = client == default
        out.append(Measure("P3" if is_default else "P3-alt", f"cloud processor rate, {client}",
                           result[f"processor_per_s_{client}"], "events/s", baseline=result["bare_river_per_s"],
                           baseline_name="bare River loop", compare="percent", op=">=",
                           target=TARGETS["processor_vs_bare_river"] if is_default else None,
                           note=f"Kafka + schema + SQLite dedupe + River over {result['device_events_total']:,} "
                                f"events; median of {rounds} rounds"
                                + ("" if is_default else f"; not the default client ({default}), no target")))
    if "lab07_first_prediction_s" in result:
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.get("lab07_startup", {}).items())
        out.append(Measure("P7", "lab 07 start to first processed prediction", result["lab07_first_prediction_s"],
                           "s", target=TARGETS["lab07_first_prediction_s"],
                           note=f"quick mode, local processes; {phases}" if phases else "quick mode, local processes"))
    else:
        why = f"lab 07 failed: {result['lab07_error']}" if "lab07_error" in result else "bench-stream ran with lab=0"
        out.append(Measure("P7", "lab 07 start to first processed prediction", None, "s",
                           target=TARGETS["lab07_first_prediction_s"], note=f"not measured: {why}"))
    return out
