"""Lab 02 in quick mode prints the numbers its README promises."""

from __future__ import annotations

import pytest

from cloud.labkit.runner import run_lab


@pytest.fixture(scope="module")
def lab02(tmp_path_factory):
    """One quick run of lab 02 shared by the checks below."""
    from cloud.settings import StackSettings

    root = tmp_path_factory.mktemp("lab02")
    settings = StackSettings(runs_dir=root / "runs", artifacts_dir=root / "artifacts", runtime="local")
    return run_lab("02", quick=True, settings=settings)


def test_regression_errors_and_bias_variance(lab02):
    # Execute (fixture) / Assert
    metrics, path = lab02
    assert 50 < metrics["rmse_linear"] < 60  # diabetes: about 55 in target units
    assert metrics["rmse_polynomial"] > metrics["rmse_ridge"]  # unregularised degree 2 overfits
    assert 2 <= metrics["best_degree"] <= 7
    assert metrics["wave_rmse_degree1"] > 1.5 * metrics["wave_rmse_best"]  # bias
    assert metrics["wave_rmse_degree12"] > 1.5 * metrics["wave_rmse_best"]  # variance
    assert (path / "validation_curve.png").exists()


def test_classifiers_on_digits(lab02):
    # Execute (fixture) / Assert
    metrics, path = lab02
    assert metrics["acc_logistic_regression"] >= 0.95
    assert metrics["acc_svm"] >= 0.98
    assert metrics["acc_knn"] >= 0.97
    assert metrics["acc_random_forest"] >= 0.94
    assert metrics["acc_hist_gradient_boosting"] >= 0.94
    assert 0.75 <= metrics["acc_decision_tree"] < metrics["acc_random_forest"]  # a forest beats one tree
    assert (path / "roc.png").exists() and (path / "confusion_matrix.png").exists()


def test_imbalance_remedies_raise_minority_recall(lab02):
    # Execute (fixture) / Assert
    metrics, _ = lab02
    assert metrics["imbalance_recall_weighted"] > metrics["imbalance_recall_plain"]
    assert metrics["imbalance_recall_oversampled"] > metrics["imbalance_recall_plain"]
    assert metrics["imbalance_f1_weighted"] >= 0.75


def test_clustering_and_anomaly_detection(lab02):
    # Execute (fixture) / Assert
    metrics, path = lab02
    assert metrics["ari_blobs_kmeans"] >= 0.95
    assert metrics["ari_moons_kmeans"] < 0.6  # k-means cuts the moons with a straight line
    assert metrics["ari_moons_dbscan"] >= 0.95 and metrics["ari_moons_hierarchical"] >= 0.95
    assert metrics["ari_digits_kmeans"] >= 0.5
    assert metrics["isolation_forest_auc"] >= 0.9
    assert (path / "projections.png").exists()


def test_same_seed_same_numbers(lab02, run_settings):
    # Prepare
    metrics, _ = lab02
    # Execute
    again, _ = run_lab("02", quick=True, settings=run_settings)
    # Assert
    for key in ("rmse_linear", "acc_random_forest", "acc_hist_gradient_boosting",
                "imbalance_f1_oversampled", "isolation_forest_auc", "ari_digits_kmeans"):
        assert again[key] == metrics[key], key
