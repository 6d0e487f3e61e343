"""Lab 01 in quick mode prints the numbers its README promises."""

from __future__ import annotations

import pytest

from cloud.labkit.runner import run_lab


@pytest.fixture(scope="module")
def lab01(tmp_path_factory):
    """One quick run of lab 01 shared by the checks below."""
    from cloud.settings import StackSettings

    root = tmp_path_factory.mktemp("lab01")
    settings = StackSettings(runs_dir=root / "runs", artifacts_dir=root / "artifacts", runtime="local")
    return run_lab("01", quick=True, settings=settings)


def test_gradients_agree_to_1e6(lab01):
    # Execute (fixture) / Assert
    metrics, _ = lab01
    for key in ("grad_linear_vs_autograd", "grad_linear_vs_fd",
                "grad_logistic_vs_autograd", "grad_logistic_vs_fd"):
        assert metrics[key] < 1e-6, key


def test_gradient_descent_lowers_the_loss(lab01):
    # Execute (fixture) / Assert: README promises linear within 0.01 of least squares, logistic < 0.1
    metrics, _ = lab01
    assert metrics["gd_linear_last_loss"] < metrics["gd_linear_first_loss"]
    assert metrics["gd_linear_last_loss"] - metrics["least_squares_loss"] < 0.01
    assert metrics["gd_logistic_last_loss"] < 0.1
    assert metrics["gd_logistic_train_accuracy"] >= 0.97


def test_lifecycle_model_scores_and_reloads(lab01):
    # Execute (fixture) / Assert
    metrics, path = lab01
    assert metrics["missing_cells"] > 500
    assert metrics["lifecycle_accuracy"] >= 0.95
    assert metrics["lifecycle_roc_auc"] >= 0.98
    assert metrics["reload_agrees"] is True
    assert (path / "model" / "breast_cancer_logreg.joblib").exists()
    for plot in ("digits_grid", "feature_histograms", "correlation_heatmap", "loss_curve"):
        assert (path / f"{plot}.png").stat().st_size > 5_000, plot


def test_same_seed_same_numbers(lab01, run_settings):
    # Prepare
    metrics, _ = lab01
    # Execute: a second run with the same seed
    again, _ = run_lab("01", quick=True, settings=run_settings)
    # Assert
    for key in ("gd_linear_last_loss", "gd_logistic_last_loss", "lifecycle_accuracy", "lifecycle_roc_auc"):
        assert again[key] == metrics[key], key
