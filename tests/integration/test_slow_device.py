"""A device held to a quarter of one core (a Raspberry Pi 3 or Zero 2) still completes lab 07's story."""

from __future__ import annotations

import pytest

from cloud.labkit.runner import run_lab
from cloud.stack.cpu_limit import CpuLimit, CpuLimitUnavailable


def cpu_limit_or_skip() -> None:
    """Skip, saying why, where this machine cannot make a CPU-limited cgroup."""
    try:
        CpuLimit(0.25).close()
    except CpuLimitUnavailable as exc:
        pytest.skip(f"no CPU limit here: {exc}")


def test_a_quarter_core_device_passes_every_lab07_milestone(run_settings):
    cpu_limit_or_skip()
    metrics, _ = run_lab("07", ["slow_device_cpu=0.25"], quick=True, settings=run_settings)

    assert metrics["milestones"][-1] == "counts settled" and len(metrics["milestones"]) == 7
    slow = metrics["devices"]["cam-0"]
    assert slow["model"] == metrics["new_model"] == "digits-stream@2"
    assert slow["produced"] == slow["acknowledged"] == slow["processed"] > 0
    assert metrics["labelled_on_update_min"] >= 200
    assert metrics["slow_device_throttled_s"] > 0  # the limit really held cam-0 back
