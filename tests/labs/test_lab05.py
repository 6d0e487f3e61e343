"""Lab 05 in quick mode: three device processes serve without gaps, one swaps live, one refuses a tampered bundle."""

from __future__ import annotations

import pytest

from cloud.labkit.milestones import MilestoneMissed
from cloud.labkit.runner import run_lab
from cloud.settings import StackSettings

DEVICES = ("onnx_fp32", "onnx_int8", "tflite_fp32")
WARMUP, AFTER = 300, 200  # lab 05's quick mode: warm-up predictions per device; predictions after each bundle offer
NEW = "digits-cnn-tflite-int8@1"
MILESTONES = [
    "every device predicting",
    f"{WARMUP} predictions per device on its first model",
    f"cam-onnx-fp32 serving {NEW}",
    f"{AFTER} predictions on {NEW}",
    "cam-tflite-fp32 answered the tampered bundle",
    f"{AFTER} predictions after the refusal",
]


@pytest.fixture(scope="module")
def lab05(edge_artifacts, tmp_path_factory):
    """One quick run of lab 05 on the session's lab 04 bundles."""
    root = tmp_path_factory.mktemp("lab05")
    settings = StackSettings(runs_dir=root / "runs", artifacts_dir=edge_artifacts["dir"], runtime="local")
    return run_lab("05", quick=True, settings=settings)


def test_the_scenario_reaches_every_milestone_in_order(lab05):
    metrics, _ = lab05
    assert metrics["milestones"] == MILESTONES
    assert list(metrics["milestone_s"]) == MILESTONES


def test_every_device_serves_every_reading_once(lab05):
    # README: every device serves its warm-up on the model it started with, no gaps or duplicates, accuracy >= 0.85
    metrics, _ = lab05
    for device in DEVICES:
        assert metrics[f"{device}_on_first_model"] >= WARMUP, device
        assert metrics[f"{device}_continuous"], device
        assert metrics[f"{device}_accuracy"] >= 0.85, device
        assert 0 < metrics[f"{device}_p50_us"] <= metrics[f"{device}_p99_us"]


def test_the_swapped_device_moves_to_the_new_model(lab05):
    metrics, _ = lab05
    assert metrics["swap_accepted"]
    assert metrics["swap_models"] == ["digits-cnn-onnx-fp32@1", NEW]
    assert metrics["served_on_new_model"] >= AFTER
    assert metrics["onnx_fp32_served"] == metrics["onnx_fp32_on_first_model"] + metrics["served_on_new_model"]
    assert metrics["onnx_int8_models"] == 1 and metrics["tflite_fp32_models"] == 1


def test_the_tampered_bundle_is_refused_and_the_old_model_keeps_serving(lab05):
    metrics, path = lab05
    assert metrics["tampered_refused"]
    assert "sha256 mismatch for model.tflite" in metrics["refusal_message"]
    assert metrics["refusal_message"].endswith("keeping digits-cnn-tflite-fp32@1")
    assert metrics["served_after_refusal"] >= AFTER
    assert metrics["models_after_refusal"] == ["digits-cnn-tflite-fp32@1"]
    assert (path / "events.json").exists()


def test_lab05_says_what_to_do_without_lab04(run_settings, tmp_path):
    settings = run_settings.model_copy(update={"artifacts_dir": tmp_path / "empty"})
    with pytest.raises(SystemExit, match=r"Run `make lab-04`"):
        run_lab("05", quick=True, settings=settings)


def test_a_passed_cap_names_the_milestone_and_the_logs(edge_artifacts, tmp_path):
    settings = StackSettings(runs_dir=tmp_path / "runs", artifacts_dir=edge_artifacts["dir"], runtime="local")
    with pytest.raises(MilestoneMissed, match=r"milestone 'every device predicting' not reached") as missed:
        run_lab("05", ["cap=0.2"], quick=True, settings=settings)
    assert missed.value.cap_s == 0.2 and missed.value.log.endswith("cam-*.log")
