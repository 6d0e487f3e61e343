"""Lab 11 in quick mode: the numbers its README promises, a budget refusal in the real federation, nothing left running."""

from cloud.labkit.runner import run_lab
from cloud.stack.procs import pid_alive


def test_lab11_private_fl_accuracy_budgets_refusal_and_he_equals_plain(lab_settings):
    # Execute: 3 devices, 2 rounds, four settings side by side on real SuperNodes
    metrics, run_path = run_lab("11", quick=True, settings=lab_settings)

    # Assert: accuracy (README: plain and HE >= 0.85, DP >= 0.70 on the central test split; DP+HE as DP)
    accuracy = metrics["accuracy"]
    assert accuracy["plain"] >= 0.85 and accuracy["he"] >= 0.85
    assert accuracy["dp"] >= 0.70 and abs(accuracy["dp+he"] - accuracy["dp"]) <= 0.01  # CKKS adds ~1e-7, no accuracy
    assert min(metrics["held_out_accuracy"].values()) >= 0.65
    # Encrypted FedAvg gives plain FedAvg's model: same client updates, CKKS error only
    assert metrics["he_vs_plain_max_diff"] < 1e-5
    assert metrics["server_decrypt_refused"] is True
    # ε accumulates across rounds on each device's ledger and never passes its budget (8, 8, 4):
    # devices 0 and 1 trained both rounds; device 2 trained round 1 (ε 3.37) and refused round 2 (would be 4.38)
    for setting in ("dp", "dp+he"):
        eps = metrics["epsilon"][setting]
        assert all(e <= b for e, b in zip(eps, metrics["budgets"]))
        assert eps[0] > eps[2] > 3.0
        assert metrics["refusals"][setting] == "2:2"
        assert metrics["rounds_aggregated"][setting] == 2  # the run went on with the two others
    assert metrics["refusals"]["plain"] == "" and metrics["refusals"]["he"] == ""
    # Ciphertexts cost bytes: HE rounds carry over 10x the plaintext bytes
    assert metrics["bytes_per_round"]["he"] > 10 * metrics["bytes_per_round"]["plain"]
    # Milestones, not stopwatches: both rounds' replies arrived in all four runs, in order, then the runs finished
    names = [name for name, _ in metrics["milestones"]]
    assert names == ["round 1's replies", "round 2's replies", "runs finished"]
    seconds = [t for _, t in metrics["milestones"]]
    assert seconds == sorted(seconds) and seconds[0] > 0
    assert (run_path / "private_fl.png").exists()
    pids = metrics["stack_pids"] + metrics["supernode_pids"]
    assert len(metrics["supernode_pids"]) == 3
    assert not any(pid_alive(pid) for pid in pids)
