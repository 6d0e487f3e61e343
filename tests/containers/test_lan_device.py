"""A Raspberry Pi on the LAN, simulated: a second host in its own network namespace dials the compose stack
at the host's LAN address, through the listener Kafka advertises there (where people get stuck)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from cloud.settings import KIT_ROOT, StackSettings
from cloud.stack.compose import ComposeStack
from cloud.stack.lan import lan_address
from cloud.stack.procs import wait_until

NS, HOST_END, PI_END = "kit-pi", "kit-pi0", "kit-pi1"
HOST_NET, PI_ADDRESS = "10.231.0.1/24", "10.231.0.2/24"
EVENTS = 300


def sh(*argv: str) -> None:
    """Run an iproute2 command, failing with its output."""
    done = subprocess.run(list(argv), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"


@pytest.fixture()
def pi_namespace():
    """A network namespace with its own address, routed to this host over a veth pair; removed after."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("a network namespace needs root and iproute2")
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    sh("ip", "netns", "add", NS)
    try:
        sh("ip", "link", "add", HOST_END, "type", "veth", "peer", "name", PI_END)
        sh("ip", "link", "set", PI_END, "netns", NS)
        sh("ip", "addr", "add", HOST_NET, "dev", HOST_END)
        sh("ip", "link", "set", HOST_END, "up")
        for argv in (["ip", "addr", "add", PI_ADDRESS, "dev", PI_END], ["ip", "link", "set", PI_END, "up"],
                     ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", "default", "via", HOST_NET[:-3]]):
            sh("ip", "netns", "exec", NS, *argv)
        yield ["ip", "netns", "exec", NS]
    finally:
        subprocess.run(["ip", "link", "del", HOST_END], capture_output=True)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


def test_a_lan_device_joins_and_streams_through_the_advertised_listener(container_stack, pi_namespace, tmp_path):
    from cloud.streaming.scenario import prepare_initial_model, start_processor, wait_ready
    from cloud.streaming.store import StoreReader

    host = lan_address()
    assert host and not host.startswith("127."), f"no LAN address to advertise: {host!r}"
    settings = StackSettings(runs_dir=tmp_path / "runs", runtime="docker", superlink_tls=False)
    compose = ComposeStack(settings)
    compose.up()
    try:
        # edge join from the Pi: broker and SuperLink answer at the host's LAN address
        join = subprocess.run(pi_namespace + [sys.executable, "-m", "edge.cli", "join", "--cloud", host],
                              capture_output=True, text=True, timeout=120, cwd=KIT_ROOT)
        assert join.returncode == 0, join.stdout + join.stderr
        assert "9092" in join.stdout and "8000" in join.stdout

        # a lab 07 device on the Pi streams; a processor on the host processes every event once
        model = prepare_initial_model(tmp_path / "artifacts", epochs=3)
        store = tmp_path / "processed.db"
        processor, ready, log = start_processor("127.0.0.1:9092", store, tmp_path, "processor-0")
        try:
            wait_ready(ready, processor, log, "the processor's ready file")
            stats = tmp_path / "pi-cam.json"
            device = subprocess.run(pi_namespace + [
                sys.executable, "-m", "edge.streaming", "--bootstrap", f"{host}:9092", "--bundle", str(model.bundle),
                "--key", str(model.public_key), "--frames", str(model.frames), "--name", "pi-cam", "--rate", "0",
                "--count", str(EVENTS), "--duration", "120", "--stats", str(stats), "--work-dir", str(tmp_path / "pi")],
                capture_output=True, text=True, timeout=300, cwd=KIT_ROOT)
            assert device.returncode == 0, device.stdout[-2000:] + device.stderr[-2000:]
            counts = json.loads(stats.read_text())
            produced, delivered = sum(counts["produced"].values()), sum(counts["delivered"].values())
            assert produced == delivered >= EVENTS and counts["pending"] == 0
            wait_until(lambda: StoreReader(store).counts().get("pi-cam", 0) >= produced,
                       f"the processor's count for pi-cam to reach {produced}", 60, processor, log)
            assert StoreReader(store).counts()["pi-cam"] == produced  # each event processed once
        finally:
            processor.terminate()
            processor.wait(timeout=30)
    finally:
        compose.down()


def test_a_lan_supernode_takes_part_in_a_federated_round(container_stack, pi_namespace, tmp_path):
    from cloud.federated.partition import main as partition

    host = lan_address()
    runs = tmp_path / "runs"  # the compose ServerApp mounts the runs folder at the same path (KIT_RUNS_DIR)
    data = runs / "fl-data"
    assert partition(["--devices", "1", "--out", str(data)]) == 0
    compose = ComposeStack(StackSettings(runs_dir=runs, runtime="docker", superlink_tls=False))
    compose.up()
    supernode = None
    try:
        # the Pi joins as a SuperNode: it dials the SuperLink at the host's LAN address, port 8000
        log = (tmp_path / "pi-supernode.log").open("w")
        supernode = subprocess.Popen(pi_namespace + [
            sys.executable, "-m", "edge.cli", "join", "--cloud", host, "--supernode", "--partition-id", "0",
            "--data-dir", str(data), "--flwr-home", str(tmp_path / "flwr-home")],
            stdout=log, stderr=subprocess.STDOUT, cwd=KIT_ROOT, start_new_session=True)
        out = runs / "lan-fl"
        fl_run = subprocess.run([sys.executable, "-m", "cloud.federated.federation", "--superlink", "127.0.0.1:8000",
                                 "--nodes", "1", "--out", str(out), "--test-path", str(data / "central_test.npz"),
                                 "--work-dir", str(tmp_path / "fl-cli"), "--run-config", "num-server-rounds=2"],
                                capture_output=True, text=True, timeout=900, cwd=KIT_ROOT)
        assert fl_run.returncode == 0, fl_run.stdout[-3000:] + fl_run.stderr[-3000:] + (
            tmp_path / "pi-supernode.log").read_text()[-3000:]
        journal = json.loads((out / "fl-metrics.json").read_text())
        assert journal["status"] == "completed"
        assert [len(r["train"]) for r in journal["rounds"]] == [1, 1]  # the Pi trained in both rounds
        assert journal["rounds"][-1]["central"]["accuracy"] >= 0.85  # one device holding all the training data
    finally:
        if supernode is not None:
            os.killpg(supernode.pid, 15)
            supernode.wait(timeout=30)
        compose.down()
