"""Lab 03 in quick mode prints the numbers its README promises and leaves the CNNs for lab 04."""

from __future__ import annotations

import pytest

from cloud.labkit.runner import run_lab


@pytest.fixture(scope="module")
def lab03(tmp_path_factory):
    """One quick run of lab 03 shared by the checks below (artifacts in a temporary folder)."""
    from cloud.settings import StackSettings

    root = tmp_path_factory.mktemp("lab03")
    settings = StackSettings(runs_dir=root / "runs", artifacts_dir=root / "artifacts", runtime="local")
    metrics, path = run_lab("03", quick=True, settings=settings)
    return metrics, path, settings


def test_cnn_and_mlp_reach_their_bounds_in_both_frameworks(lab03):
    # Execute (fixture) / Assert
    metrics, path, _ = lab03
    assert metrics["pytorch_cnn_accuracy"] >= 0.97
    assert metrics["keras_cnn_accuracy"] >= 0.97
    assert metrics["pytorch_mlp_accuracy"] >= 0.94
    assert metrics["keras_mlp_accuracy"] >= 0.94
    assert metrics["torch_device"] in ("cpu", "cuda") and metrics["tensorflow_device"] in ("CPU", "GPU")
    assert (path / "training_curves.png").exists() and (path / "loss_curves.png").exists()


def test_training_choices_table(lab03):
    # Execute (fixture) / Assert
    metrics, _, _ = lab03
    variants = {k: v for k, v in metrics.items() if k.startswith("variant_")}
    assert len(variants) == 9
    assert min(variants.values()) >= 0.80
    # Sigmoid's small gradients (at most 1/4 per layer) make it the slowest learner in 6 epochs.
    assert metrics["variant_activation_sigmoid"] < metrics["variant_baseline"]


def test_cnns_saved_where_lab04_reads_them(lab03):
    # Prepare
    from cloud.ml.training import KERAS_CNN_FILE, TORCH_CNN_FILE

    metrics, path, settings = lab03
    shared = settings.artifacts_dir / "lab-03"
    # Assert: files in the shared folder and in the run folder; reloaded models score as trained
    for folder in (shared, path / "models"):
        assert (folder / TORCH_CNN_FILE).stat().st_size > 100_000
        assert (folder / KERAS_CNN_FILE).stat().st_size > 100_000
    assert metrics["reloaded_torch_cnn_accuracy"] == metrics["pytorch_cnn_accuracy"]
    assert metrics["reloaded_keras_cnn_accuracy"] == pytest.approx(metrics["keras_cnn_accuracy"], abs=1e-9)


def test_self_attention_learns_the_pointer_task(lab03):
    # Execute (fixture) / Assert
    metrics, path, _ = lab03
    assert metrics["attention_accuracy"] >= 0.95
    assert metrics["attention_on_target"] >= 0.9
    assert metrics["attention_mlp_accuracy"] < metrics["attention_accuracy"]
    assert (path / "attention_curves.png").exists()


def test_same_seed_same_numbers(lab03, run_settings, tmp_path):
    # Prepare
    metrics, _, _ = lab03
    settings = run_settings.model_copy(update={"artifacts_dir": tmp_path / "artifacts"})
    # Execute
    again, _ = run_lab("03", quick=True, settings=settings)
    # Assert
    for key in ("pytorch_mlp_accuracy", "pytorch_cnn_accuracy", "keras_mlp_accuracy", "keras_cnn_accuracy",
                "variant_batch_norm", "attention_accuracy"):
        assert again[key] == metrics[key], key
