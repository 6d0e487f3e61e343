"""Lab 08 in quick mode: the numbers its README promises, and nothing left running."""

import os
import time

from cloud.labkit.runner import run_lab
from cloud.stack.procs import pid_alive


def process_group_empty(pgid: int, within_s: float = 10.0) -> bool:
    """True when no process is left in a process group (a SuperNode and the ClientApps it started) within a few seconds."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_lab08_federates_iid_better_than_non_iid_deploys_a_verified_bundle_and_leaves_no_orphans(lab_settings):
    metrics, run_path = run_lab("08", quick=True, settings=lab_settings)

    accuracy = metrics["accuracy"]
    assert metrics["centralized_accuracy"] > 0.94
    assert accuracy["fedavg/iid"] >= 0.90  # README: 3 devices, 3 rounds of FedAvg on IID data reach >= 0.90
    assert accuracy["fedavg/dir0.1"] < accuracy["fedavg/iid"] - 0.03  # label skew costs accuracy
    assert metrics["rounds_to_90pct"]["fedavg/iid"] <= 3
    assert set(accuracy) == {"fedavg/iid", "fedavg/dir0.1", "fedadam/dir0.1"}
    # 3 devices x (model down + model up); each model: 2,410 float32 as four .npy arrays (128-byte headers)
    assert metrics["bytes_per_round"]["fedavg/iid"] == 3 * 2 * ((64 * 32 + 32 + 32 * 10 + 10) * 4 + 4 * 128)
    assert metrics["bundle_verified"] is True
    assert min(metrics["device_accuracy"]) > 0.85
    # Milestones, not stopwatches: every round's replies arrived in every run, in order, then the runs finished
    names = [name for name, _ in metrics["milestones"]]
    assert names == ["round 1's replies", "round 2's replies", "round 3's replies", "runs finished"]
    seconds = [t for _, t in metrics["milestones"]]
    assert seconds == sorted(seconds) and seconds[0] > 0
    assert (run_path / "accuracy_per_round.png").exists() and (run_path / "class_histograms.png").exists()
    pids = metrics["stack_pids"] + metrics["supernode_pids"]
    assert len(metrics["supernode_pids"]) == 3  # host processes in both runtimes
    assert not any(pid_alive(pid) for pid in pids)
    assert all(process_group_empty(pid) for pid in pids)
