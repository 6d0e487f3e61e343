"""bench-privacy's measures from a made-up result: ids, the kit's preset row, DP-SGD at the target ε."""

from cloud.bench.privacy import DP_EPSILON, TARGETS, dp_at_target, measures
from edge.private.he import DEFAULT_PRESET


def ckks_row(setup, preset, ratio, encrypt_s, error=1e-6):
    return {"setup": setup, "preset": preset, "params": "N=4096 [..]", "mb": ratio * 0.4, "bytes_ratio": ratio,
            "encrypt_s": encrypt_s, "max_error": error, "ciphertexts": 49, "security_bits": 128}


def dp_row(epsilon, mode, ratio, accuracy):
    return {"setup": f"DP-SGD ε={epsilon:g}, {mode}", "mode": mode, "target_epsilon": epsilon,
            "s_per_epoch": 0.1 * ratio, "ratio": ratio, "accuracy": accuracy, "gap_pt": (0.98 - accuracy) * 100,
            "epsilon": epsilon, "delta": 1e-5, "noise_multiplier": 3.0}


def sample_result():
    return {
        "ckks": [ckks_row("old", "8192", 14.7, 0.2), ckks_row("kit", DEFAULT_PRESET, 9.9, 0.15),
                 ckks_row("depth 0", "4096-preweighted", 6.8, 0.14)],
        "dp": [{"setup": "no DP", "s_per_epoch": 0.1, "ratio": 1.0, "accuracy": 0.98, "epsilon": None},
               dp_row(DP_EPSILON, "hooks", 3.0, 0.90), dp_row(DP_EPSILON, "ghost", 2.0, 0.90),
               dp_row(8.0, "ghost", 2.1, 0.93), dp_row(30.0, "ghost", 2.1, 0.96)],
    }


def test_measures_keep_their_ids_and_targets():
    by_id = {m.id: m for m in measures(sample_result())}
    assert list(by_id) == ["P5-size", "P5-enc", "P6-time", "P6-acc"]
    assert by_id["P5-size"].target == TARGETS["bytes_ratio"] == 10.0
    assert by_id["P5-enc"].target == TARGETS["encrypt_s"] == 0.3
    assert by_id["P6-time"].target == TARGETS["dp_epoch_ratio"] == 2.5
    assert by_id["P6-acc"].target == -TARGETS["dp_accuracy_gap_pt"] == -3.0


def test_p5_reports_the_default_preset_and_p6_the_fastest_run_at_the_target_epsilon():
    by_id = {m.id: m for m in measures(sample_result())}
    assert round(by_id["P5-size"].ratio, 6) == 9.9 and by_id["P5-size"].met
    assert by_id["P5-enc"].value == 0.15 and DEFAULT_PRESET in by_id["P5-enc"].note
    assert round(by_id["P6-time"].ratio, 6) == 2.0 and "ghost" in by_id["P6-time"].note
    assert round(by_id["P6-acc"].ratio, 6) == -8.0 and not by_id["P6-acc"].met
    assert "within 3 points from ε = 30" in by_id["P6-acc"].note


def test_dp_at_target_says_when_no_epsilon_closes_the_gap():
    result = sample_result()
    result["dp"][-1]["gap_pt"] = 4.0
    fastest, within = dp_at_target(result["dp"])
    assert fastest["mode"] == "ghost" and within is None
    assert "not within 3 points up to ε = 30" in measures(result)[3].note
