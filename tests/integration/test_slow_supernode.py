"""A SuperNode held to a quarter of one core (a Raspberry Pi 3 or Zero 2) still answers every round: timeouts follow it."""

from __future__ import annotations

import pytest

from cloud.federated.config import FlConfig
from cloud.federated.federation import Federation
from cloud.federated.partition import write_digits_federation
from cloud.settings import StackSettings
from cloud.stack.cpu_limit import CpuLimit, CpuLimitUnavailable
from cloud.stack.local import LocalStack
from cloud.stack.procs import free_port, group_members

DEVICES = 3


def test_a_quarter_core_supernode_has_its_replies_aggregated_in_every_round(tmp_path):
    # Prepare: a quarter-core cgroup must be possible here (root or a delegated cgroup), else say why not
    try:
        CpuLimit(0.25).close()
    except CpuLimitUnavailable as exc:
        pytest.skip(f"no CPU limit on this machine: {exc}")
    _, test_path = write_digits_federation(tmp_path / "data", DEVICES, [("iid", None)], seed=0)
    settings = StackSettings(superlink_address=f"127.0.0.1:{free_port()}", stack_dir=tmp_path / "stack",
                             runtime="local")
    stack = LocalStack(settings, tmp_path / "stack")
    stack.up(["superlink"])
    try:
        federation = Federation(settings.superlink_address, tmp_path / "fed", DEVICES, tmp_path / "data",
                                health_timeout_s=240, cpu_limits={0: 0.25})
        with federation:
            limit = federation.limits[0]
            node_processes = group_members(federation.nodes[0].pid)  # SuperNode, SuperExec, warm ClientApp process
            in_limit = set(limit.pids())
            config = FlConfig(num_server_rounds=2, min_nodes=DEVICES, test_path=str(test_path), evaluate_every=-1)
            # Execute: 2 rounds of FedAvg where every device must answer (min-nodes = 3)
            result = federation.run(config, tmp_path / "out", timeout=600)
            throttled_s = limit.throttled_s()
    finally:
        stack.down()
    # Assert: all three devices' replies were aggregated in both rounds, none dropped
    assert [sorted(t["partition_id"] for t in r["train"]) for r in result.rounds] == [[0, 1, 2], [0, 1, 2]]
    assert [r["dropouts"] for r in result.rounds] == [[], []]
    assert result.rounds[-1]["central"]["accuracy"] > 0.8
    # The limit held the device's every process and the ClientApps they started: the node's start-up imports and
    # its rounds cost seconds of CPU, so a quarter core throttles them for seconds
    assert len(node_processes) >= 3 and set(node_processes) <= in_limit, (node_processes, in_limit)
    assert throttled_s > 1.0, throttled_s
    # Round 2 waited as long as round 1's slowest reply said (3 x, at least 10 s), not a constant
    first, second = (r["waiting"]["train"] for r in result.rounds)
    assert second["timeout_s"] == pytest.approx(min(120.0, max(10.0, 3.0 * max(first["reply_s"].values()))), abs=0.01)
    assert result.status == "finished:completed"
