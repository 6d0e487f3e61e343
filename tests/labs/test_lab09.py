"""Lab 09 in quick mode: the numbers its README promises."""

from cloud.labkit.runner import run_lab


def test_lab09_quick(run_settings):
    metrics, path = run_lab("09", quick=True, settings=run_settings)
    assert all(e <= t for e, t in zip(metrics["epsilon_prv"], metrics["targets"]))
    assert all(r >= p for r, p in zip(metrics["epsilon_rdp"], metrics["epsilon_prv"]))
    assert metrics["accuracy_nonprivate"] > 0.93
    assert all(a <= metrics["accuracy_nonprivate"] for a in metrics["accuracy_dp"])
    assert metrics["accuracy_dp"][-1] > 0.7  # ε = 8
    assert metrics["overfit_attack_auc"] >= 0.58
    assert all(abs(auc - 0.5) <= 0.05 for auc in metrics["attack_auc_dp"])
    assert metrics["refused_at_round"] == 4 and metrics["device_epsilon_spent"] <= 1.5
    assert (path / "privacy_utility.png").exists()
