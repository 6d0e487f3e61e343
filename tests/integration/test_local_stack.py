"""The local stack through its real parts: Tansu broker, Flower SuperLink, the cloud CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cloud.settings import split_host_port
from cloud.stack.broker import committed_offsets, create_topics
from cloud.stack.local import LocalStack, superlink_healthy
from cloud.stack.procs import PortInUseError, group_members, pid_alive, wait_until
from edge.wire.kafka import consumer_config, producer_config

ROOT = Path(__file__).resolve().parents[2]


def stack_env(settings) -> dict[str, str]:
    """Environment that points a `cloud` subprocess at the test's ports and folders."""
    env = dict(os.environ)
    env.update(KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
               SUPERLINK_ADDRESS=settings.superlink_address, RUNS_DIR=str(settings.runs_dir),
               STACK_DIR=str(settings.stack_dir), RUNTIME="local")
    return env


def test_ten_thousand_events_round_trip_through_a_consumer_group(run_settings, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer

    # Prepare: a real stack, a topic with 3 partitions.
    stack = LocalStack(run_settings, tmp_path / "stack")
    stack.up()
    try:
        bootstrap, topic, group = run_settings.kafka_bootstrap_servers, "events", "counter"
        create_topics(bootstrap, {topic: 3})
        members = {pid: group_members(pid) for pid in stack.pids()}

        # Execute: produce 10,000 keyed events, consume them in a group, commit.
        producer = KafkaProducer(**producer_config(bootstrap))
        for i in range(10_000):
            producer.send(topic, key=str(i % 7).encode(), value=str(i).encode())
        producer.flush()
        producer.close()
        consumer = KafkaConsumer(topic, **consumer_config(bootstrap, group))
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while len(seen) < 10_000 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen += [int(r.value) for r in records]
            consumer.commit()
        consumer.close()
        link_host, link_port = split_host_port(run_settings.superlink_address)
        link_ok = superlink_healthy(link_host, link_port)
        committed = committed_offsets(bootstrap, group, topic)
    finally:
        stack.down()

    # Assert: all events once, offsets committed, SuperLink answered, nothing left running.
    assert sorted(seen) == list(range(10_000))
    assert sum(committed.values()) == 10_000 and len(committed) == 3
    assert link_ok
    leftovers = [p for pids in members.values() for p in pids if pid_alive(p)]
    assert leftovers == []
    assert all(len(pids) >= 1 for pids in members.values())


def test_services_starting_together_each_create_the_kits_topics_once(run_settings, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from kafka import KafkaAdminClient

    # Prepare: a real broker, five topics it lacks, six starters released at once (lab 12
    # starts the processor and the drift job together, and both ensure the kit's topics).
    stack = LocalStack(run_settings, tmp_path / "stack")
    stack.up()
    try:
        bootstrap, starters = run_settings.kafka_bootstrap_servers, 6
        topics = {f"raced-{i}": 1 + i % 3 for i in range(5)}
        barrier = Barrier(starters)

        def start_a_service(_: int) -> list[str]:
            barrier.wait(timeout=30)
            return create_topics(bootstrap, topics)

        # Execute
        with ThreadPoolExecutor(starters) as pool:
            created = list(pool.map(start_a_service, range(starters)))
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        listed = set(admin.list_topics())
        admin.close()
    finally:
        stack.down()

    # Assert: no starter failed, each topic was created by exactly one of them, all exist.
    names = [name for one in created for name in one]
    assert sorted(names) == sorted(topics)
    assert set(topics) <= listed


def test_a_taken_port_is_refused_naming_the_port_and_variable(run_settings, tmp_path):
    host, port = split_host_port(run_settings.kafka_bootstrap_servers)
    with socket.socket() as squatter:
        squatter.bind((host, port))
        squatter.listen()
        with pytest.raises(PortInUseError) as error:
            LocalStack(run_settings, tmp_path / "stack").up()
    assert f"port {port}" in str(error.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(error.value)


def test_cloud_up_status_down_through_the_cli(run_settings):
    env = stack_env(run_settings)
    cloud = [sys.executable, "-m", "cloud.cli"]

    up = subprocess.run(cloud + ["up"], env=env, capture_output=True, text=True, cwd=ROOT)
    state = json.loads((run_settings.stack_dir / "stack.json").read_text())
    pids = [info["pid"] for info in state["services"].values()]
    status = subprocess.run(cloud + ["status"], env=env, capture_output=True, text=True, cwd=ROOT)
    down = subprocess.run(cloud + ["down"], env=env, capture_output=True, text=True, cwd=ROOT)

    assert up.returncode == 0, up.stdout + up.stderr
    assert status.returncode == 0 and status.stdout.count("True") == 4, status.stdout
    assert down.returncode == 0 and "stopped: superlink, broker" in down.stdout
    assert len(pids) == 2 and not any(pid_alive(p) for p in pids)


def test_sigint_to_a_lab_run_stops_every_child(run_settings):
    # Prepare: lab 00 as a real process; wait until its stack is recorded.
    env = stack_env(run_settings)
    runner = subprocess.Popen([sys.executable, "-m", "cloud.cli", "lab", "00", "--quick",
                               "events=1000"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def recorded_state() -> dict | None:
        """The lab's stack state once both services are recorded and the broker is up."""
        for path in run_settings.runs_dir.glob("lab-00/*/stack/stack.json"):
            state = json.loads(path.read_text())
            if len(state["services"]) == 2:
                return state
        return None

    wait_until(lambda: recorded_state() is not None, "lab 00 stack", 30, runner)
    pids = [i["pid"] for i in recorded_state()["services"].values()]
    family = [p for pid in pids for p in group_members(pid)]

    # Execute: Ctrl-C.
    runner.send_signal(signal.SIGINT)
    output = runner.communicate(timeout=60)[0].decode()

    # Assert: the runner reports the interrupt and no child survives.
    assert runner.returncode == 130, output
    assert "interrupted" in output
    assert family and not [p for p in family if pid_alive(p)]
