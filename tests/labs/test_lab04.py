"""Lab 04 in quick mode: the bundles it publishes verify, and the numbers its README promises hold."""

from __future__ import annotations

import pytest

from cloud.labkit.runner import run_lab
from edge.serving.sources import FRAMES_FILE


@pytest.fixture(scope="module")
def lab04(tmp_path_factory):
    """One quick run of lab 04 (trains its own quick CNNs: no lab 03 models in a fresh folder)."""
    from cloud.settings import StackSettings

    root = tmp_path_factory.mktemp("lab04")
    settings = StackSettings(runs_dir=root / "runs", artifacts_dir=root / "artifacts", runtime="local")
    metrics, path = run_lab("04", quick=True, settings=settings)
    return metrics, path, settings


def test_publishes_four_signed_bundles_and_the_public_key(lab04):
    # Prepare
    from edge.serving.bundle import load_bundle
    from edge.serving.keys import fingerprint, load_public_key

    metrics, _, settings = lab04
    out = settings.artifacts_dir / "bundles"
    key = load_public_key(out / "public_key.pem")
    # Execute
    refs = [load_bundle(out / f"digits-cnn-{k}@1", key).ref for k in ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8")]
    # Assert
    assert len(refs) == 4 and fingerprint(key) == metrics["public_key"]
    assert (out / FRAMES_FILE).exists()
    assert "trained it here" in metrics["models"] and "Keras twin" in metrics["models"]


def test_fp32_exports_match_their_source_models(lab04):
    # README: ONNX and TFLite fp32 agree 100% with torch / Keras, max |diff| below 1e-4
    metrics, _, _ = lab04
    for name in ("onnx_fp32", "tflite_fp32"):
        assert metrics[f"{name}_agreement"] == 1.0
        assert metrics[f"{name}_max_abs_diff"] < 1e-4


def test_int8_keeps_accuracy_and_is_three_times_smaller(lab04):
    # README: int8 within 1 point of fp32 and at least 3x smaller; agreement with the float model >= 0.97
    metrics, _, _ = lab04
    for family in ("onnx", "tflite"):
        assert metrics[f"{family}_int8_accuracy_drop"] <= 0.01
        assert metrics[f"{family}_int8_size_ratio"] >= 3.0
        assert metrics[f"{family}_int8_agreement"] >= 0.97
    assert metrics["torch_accuracy"] >= 0.9 and metrics["tflite_fp32_accuracy"] >= 0.85


def test_table_plot_and_latencies_are_written(lab04):
    # Latency is reported, not asserted as a speed target (shared CI machines are noisy)
    metrics, path, _ = lab04
    assert (path / "tradeoffs.png").exists() and (path / "tradeoffs.json").exists()
    for name in ("torch", "onnx_fp32", "onnx_int8", "tflite_fp32", "tflite_int8"):
        assert 0 < metrics[f"{name}_p50_us"] <= metrics[f"{name}_p99_us"]
    assert metrics["ort_dynamic_int8_conv_matmul_p50_us"] > 0
