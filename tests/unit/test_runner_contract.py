"""The shared runner contract, checked for every registered runner on every bundle lab 04 publishes:
outputs match the reference model, inputs stay unchanged, same input gives the same output,
a batch of N equals N single predictions; plus the int8 accuracy and size targets."""

from __future__ import annotations

import numpy as np
import pytest

from edge.serving.bundle import load_bundle
from edge.serving.keys import load_public_key
from edge.serving.runners import RUNNERS, open_runner

KINDS = ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]


@pytest.fixture(scope="module")
def runners(edge_artifacts):
    """One runner (1 thread) per published bundle."""
    key = load_public_key(edge_artifacts["public_key"])
    return {kind: open_runner(load_bundle(edge_artifacts["bundles"][kind], key), num_threads=1) for kind in KINDS}


def test_every_registered_runner_is_covered(runners):
    assert {r.bundle.manifest.runtime for r in runners.values()} == set(RUNNERS)


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_match_the_reference_model(runners, edge_artifacts, kind):
    # Prepare
    runner, x = runners[kind], edge_artifacts["x_test"]
    reference = edge_artifacts["reference"][kind]  # N, 10 logits from the torch or Keras model
    # Execute
    logits = runner.predict(x)
    # Assert
    assert logits.shape == reference.shape and logits.dtype == np.float32
    agreement = (logits.argmax(1) == reference.argmax(1)).mean()
    if kind.endswith("fp32"):
        np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=1e-4)
    else:
        assert agreement >= 0.97, f"{kind}: top-1 agreement with the float model {agreement:.3f} < 0.97"
        assert np.abs(logits - reference).mean() < 0.1 * np.abs(reference).mean()


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_are_not_modified(runners, edge_artifacts, kind):
    x = edge_artifacts["x_test"][:16].copy()
    before = x.copy()
    runners[kind].predict(x)
    runners[kind].predict_one(x[0])
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("kind", KINDS)
def test_same_input_gives_the_same_output(runners, edge_artifacts, kind):
    x = edge_artifacts["x_test"][:32]
    first, second = runners[kind].predict(x), runners[kind].predict(x)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_n_equals_n_singles(runners, edge_artifacts, kind):
    # Prepare
    x = edge_artifacts["x_test"][:25]
    runner = runners[kind]
    # Execute
    batch = runner.predict_batch(x)  # 25, 10
    singles = np.stack([runner.predict_one(row) for row in x])  # 25, 10
    # Assert: float kernels may sum in another order; int8 outputs may move by one quantum
    step = runner.output_spec.scale or 0.0
    np.testing.assert_allclose(batch, singles, atol=max(1e-5, step * 1.01), rtol=1e-5)
    assert (batch.argmax(1) == singles.argmax(1)).mean() >= 0.96


@pytest.mark.parametrize("kind", KINDS)
def test_thread_count_does_not_change_answers(edge_artifacts, runners, kind):
    key = load_public_key(edge_artifacts["public_key"])
    two = open_runner(load_bundle(edge_artifacts["bundles"][kind], key), num_threads=2)
    x = edge_artifacts["x_test"][:64]
    np.testing.assert_allclose(two.predict(x), runners[kind].predict(x), atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_input_shape_says_what_it_expected(runners, kind):
    with pytest.raises(ValueError, match=r"expected shape \(64,\) or \(N, 64\), got \(3, 63\)"):
        runners[kind].predict(np.zeros((3, 63), np.float32))


@pytest.mark.parametrize("family", ["onnx", "tflite"])
def test_int8_keeps_accuracy_within_one_point_and_is_three_times_smaller(runners, edge_artifacts, family):
    # Prepare
    x, y = edge_artifacts["x_test"], edge_artifacts["y_test"]
    fp32, int8 = runners[f"{family}-fp32"], runners[f"{family}-int8"]
    # Execute
    acc32 = (fp32.predict(x).argmax(1) == y).mean()
    acc8 = (int8.predict(x).argmax(1) == y).mean()
    ratio = fp32.bundle.model_path.stat().st_size / int8.bundle.model_path.stat().st_size
    # Assert
    assert acc32 >= 0.85, f"{family} fp32 accuracy {acc32:.3f} < 0.85"
    assert acc32 - acc8 <= 0.01, f"{family} int8 lost {acc32 - acc8:.3f} top-1 (fp32 {acc32:.3f}, int8 {acc8:.3f})"
    assert ratio >= 3.0, f"{family} int8 file only {ratio:.2f}x smaller than fp32"
