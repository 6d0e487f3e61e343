"""Lab 10 in quick mode: the numbers its README promises."""

from cloud.labkit.runner import run_lab


def test_lab10_quick(run_settings):
    metrics, path = run_lab("10", quick=True, settings=run_settings)
    assert metrics["inference_error_8192"] < 1e-4 and metrics["inference_error_4096"] < 5e-3
    assert metrics["inference_agreement_8192"] == 1.0 and metrics["inference_agreement_4096"] == 1.0
    assert metrics["aggregation_error_8192"] < 1e-6 and metrics["aggregation_error_4096"] < 1e-3
    assert metrics["aggregation_accuracy_8192"] > 0.85
    assert metrics["single_error"] < 1e-4
    assert (path / "ckks_error.png").exists()
