"""A real SuperLink over TLS and three real SuperNodes: client errors fail the run, a killed node is survived."""

from __future__ import annotations

import os

import pytest

from cloud.federated.config import FederationError, FlConfig
from cloud.federated.federation import Federation, NodeDropout
from cloud.federated.partition import write_digits_federation
from cloud.settings import StackSettings
from cloud.stack.certs import certificate_names, make_certs
from cloud.stack.local import LocalStack, superlink_healthy
from cloud.stack.procs import free_port, pid_alive

DEVICES = 3


@pytest.fixture(scope="module")
def tls_federation(tmp_path_factory):
    """SuperLink with `make certs`-style certificates, and 3 SuperNodes trusting the CA (IID digits)."""
    root = tmp_path_factory.mktemp("federation")
    certs = make_certs(root / "certs")
    _, test_path = write_digits_federation(root / "data", DEVICES, [("iid", None)], seed=0)
    settings = StackSettings(superlink_address=f"127.0.0.1:{free_port()}", stack_dir=root / "stack",
                             superlink_tls=True, certs_dir=root / "certs", runtime="local")
    stack = LocalStack(settings, root / "stack")
    stack.up(["superlink"])
    federation = Federation(settings.superlink_address, root / "fed", DEVICES, root / "data", ca=certs.ca,
                            health_timeout_s=120)
    try:
        federation.start()
        yield {"federation": federation, "settings": settings, "certs": certs, "test_path": str(test_path),
               "root": root, "stack": stack}
    finally:
        federation.stop()
        stack.down()


def test_superlink_speaks_only_tls_with_a_certificate_for_this_host(tls_federation):
    host, port = tls_federation["settings"].superlink()
    certs = tls_federation["certs"]
    dns, ips = certificate_names(certs.cert)
    assert "127.0.0.1" in ips and "localhost" in dns and "superlink" in dns
    assert superlink_healthy(host, port, ca=certs.ca)
    assert not superlink_healthy(host, port)  # plain HTTP gets no answer
    assert oct(os.stat(certs.key).st_mode & 0o777) == "0o600"


def test_failing_clients_make_the_run_fail_with_their_own_error(tls_federation):
    # Prepare: a partition set no device holds, so every ClientApp raises FileNotFoundError
    config = FlConfig(num_server_rounds=2, min_nodes=DEVICES, test_path=tls_federation["test_path"],
                      partition_set="no-such-set", evaluate_every=-1)
    # Execute / Assert: `flwr run` itself exits 0; the kit reads the run and raises with the clients' message
    with pytest.raises(FederationError) as failure:
        tls_federation["federation"].run(config, tls_federation["root"] / "out-failing", timeout=180)
    message = str(failure.value)
    assert "finished:failed" in message
    assert "FileNotFoundError" in message and "no partition file at" in message and "no-such-set" in message


def test_a_supernode_killed_mid_round_is_survived_and_rejoins(tls_federation):
    # Prepare: kill device 2's SuperNode as round 2's training starts, restart it when round 2 ends
    federation = tls_federation["federation"]
    old_pid = federation.nodes[2].pid
    plan = NodeDropout(federation, partition_id=2, round=2)
    # Round timeouts follow the machine: round 1 waits up to the cap (120 s), later rounds 3 x the slowest reply
    # so far, at least 10 s, so a loaded machine's slow ClientApp starts are not mistaken for a dead node.
    config = FlConfig(num_server_rounds=4, min_nodes=2, timeout_margin=3.0, timeout_floor=10.0,
                      test_path=tls_federation["test_path"], evaluate_every=-1)
    # Execute
    result = federation.run(config, tls_federation["root"] / "out-dropout", timeout=400, during=plan)
    # Assert: round 2 finished with devices 0 and 1 after its timeout; device 2 trained again later
    by_round = {r["round"]: sorted(t["partition_id"] for t in r["train"]) for r in result.rounds}
    assert by_round[1] == [0, 1, 2]
    assert by_round[2] == [0, 1]
    assert any(2 in by_round[r] for r in (3, 4)), by_round
    first, second = (result.rounds[i]["waiting"]["train"] for i in (0, 1))
    assert first["timeout_s"] == 120.0
    assert second["timeout_s"] == pytest.approx(max(10.0, 3.0 * max(first["reply_s"].values())), abs=0.01)
    assert [m["partition_id"] for m in second["missing"]] == [2] and second["answered"] == 2
    assert second["elapsed_s"] >= second["timeout_s"]  # it waited the whole timeout for the killed node
    assert [d["reason"] for d in result.rounds[1]["dropouts"]] == [
        f"no reply within the round timeout of {second['timeout_s']:.1f} s"]
    assert not pid_alive(old_pid) and federation.nodes[2].pid != old_pid
    assert result.rounds[-1]["central"]["accuracy"] > 0.85
    assert result.status == "finished:completed"


def test_a_device_joins_with_edge_join_over_tls(tls_federation):
    # Prepare: what a Raspberry Pi runs, with the cloud's CA and its own data folder
    import sys

    from cloud.stack.procs import start_process, stop_pid, wait_until

    federation, root = tls_federation["federation"], tls_federation["root"]
    host, port = tls_federation["settings"].superlink()
    # Node ids, not a count: a SuperNode SIGKILLed by an earlier test stays listed online until its heartbeat
    # expires (up to 2 x 30 s), and its expiring while this device registers would cancel the +1 out.
    before = set(federation.online_nodes())
    cmd = [sys.executable, "-m", "edge.cli", "join", "--cloud", host, "--superlink-port", str(port), "--supernode",
           "--partition-id", "0", "--data-dir", str(root / "data"), "--root-certificates", str(tls_federation["certs"].ca),
           "--supernode-port", str(free_port()), "--flwr-home", str(root / "pi-home")]
    # Execute: `edge join --supernode` becomes a SuperNode (exec), which registers with the SuperLink
    proc = start_process(cmd, root / "pi.log")
    try:
        wait_until(lambda: bool(set(federation.online_nodes()) - before), "the joined device online", 90, proc,
                   root / "pi.log", interval=1.0)
        log = (root / "pi.log").read_text()
    finally:
        stop_pid(proc.pid)
    # Assert
    # The command it became speaks TLS to the SuperLink (the warm SuperNode's SuperExec reaches the Runtime API
    # on 127.0.0.1 inside the device, as Flower's own subprocess isolation does)
    started = next(line for line in log.splitlines() if line.startswith("starting: "))
    assert "edge.federated.warm_supernode --root-certificates" in started and "--insecure" not in started
    assert not pid_alive(proc.pid)
