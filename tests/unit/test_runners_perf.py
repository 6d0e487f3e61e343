"""Single-sample fast paths of the runners (issue 14, P1/P1b/P1c): same answers as the batch path,
results that outlive the next call, a measurable cut over a plain ``session.run``, and LiteRT bundles
that carry the torch CNN's weights."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edge.serving.bundle import load_bundle
from edge.serving.keys import load_public_key
from edge.serving.runners import open_runner

KINDS = ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]


@pytest.fixture(scope="module")
def runners(edge_artifacts):
    """One runner (1 thread) per published bundle."""
    key = load_public_key(edge_artifacts["public_key"])
    return {kind: open_runner(load_bundle(edge_artifacts["bundles"][kind], key), num_threads=1) for kind in KINDS}


def _p50_us(fn, x: np.ndarray, repeats: int = 400) -> float:
    """Median microseconds per call of fn over rows of x, after a short warm-up."""
    for row in x[:50]:
        fn(row)
    times = np.empty(repeats)
    for i in range(repeats):
        row = x[i % len(x)]
        start = time.perf_counter_ns()
        fn(row)
        times[i] = (time.perf_counter_ns() - start) / 1e3
    return float(np.median(times))


@pytest.mark.parametrize("kind", KINDS)
def test_single_sample_path_matches_the_batch_path(runners, edge_artifacts, kind):
    # Prepare
    runner, x = runners[kind], edge_artifacts["x_test"][:40]
    # Execute
    singles = np.stack([runner.predict_one(row) for row in x])  # 40, classes
    flat = np.stack([runner.predict(row) for row in x])  # predict on a 1-D sample takes the same path
    batch = runner.predict(x)  # 40, classes
    # Assert
    step = runner.output_spec.scale or 0.0
    np.testing.assert_array_equal(singles, flat)
    np.testing.assert_allclose(singles, batch, atol=max(1e-5, step * 1.01), rtol=1e-5)
    assert singles.dtype == np.float32 and singles.shape == batch.shape


@pytest.mark.parametrize("kind", KINDS)
def test_a_result_is_not_overwritten_by_the_next_call(runners, edge_artifacts, kind):
    runner, x = runners[kind], edge_artifacts["x_test"]
    first = runner.predict_one(x[0])
    kept = first.copy()
    runner.predict_one(x[1])
    np.testing.assert_array_equal(first, kept)


def test_onnx_single_sample_path_beats_a_plain_session_run(runners, edge_artifacts):
    # Prepare: the runner's own session, called the way the runner did before (feed dict, public run)
    runner, x = runners["onnx-fp32"], edge_artifacts["x_test"]
    session, name, out = runner._session, runner.input_spec.name, runner.output_spec.name

    def plain(row: np.ndarray) -> np.ndarray:
        return session.run([out], {name: row.reshape(1, 1, 8, 8)})[0][0]

    # Execute: interleaved rounds so load on the shared CPU hits both alike
    fast, slow = [], []
    for _ in range(3):
        fast.append(_p50_us(runner.predict_one, x))
        slow.append(_p50_us(plain, x))
    # Assert
    np.testing.assert_allclose(runner.predict_one(x[3]), plain(x[3]), atol=1e-5)
    assert min(fast) < min(slow), f"fast path p50 {min(fast):.1f} µs, plain session.run {min(slow):.1f} µs"


def test_litert_fp32_top1_is_within_half_a_point_of_torch(runners, edge_artifacts):
    # Prepare: torch's logits on the test split, saved when the bundles were built
    x, y = edge_artifacts["x_test"], edge_artifacts["y_test"]
    torch_top1 = (edge_artifacts["reference"]["onnx-fp32"].argmax(1) == y).mean()
    # Execute
    lite_logits = runners["tflite-fp32"].predict(x)
    lite_top1 = (lite_logits.argmax(1) == y).mean()
    # Assert: the same weights, so the same answers up to float rounding
    assert abs(lite_top1 - torch_top1) * 100 <= 0.5, f"LiteRT fp32 {lite_top1:.4f} vs torch {torch_top1:.4f}"
    np.testing.assert_allclose(lite_logits, edge_artifacts["reference"]["onnx-fp32"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ["onnx", "tflite"])
def test_int8_loses_at_most_two_test_digits(runners, edge_artifacts, family):
    # Issue 14 asks for 0.3 pt on the published models (make bench-edge: 0.0 pt); on 450 test digits one image
    # is 0.22 pt, and the suite's quick 4-epoch models move by one or two images from run to run.
    x, y = edge_artifacts["x_test"], edge_artifacts["y_test"]
    right32 = int((runners[f"{family}-fp32"].predict(x).argmax(1) == y).sum())
    right8 = int((runners[f"{family}-int8"].predict(x).argmax(1) == y).sum())
    assert right32 - right8 <= 2, f"{family}: fp32 {right32}/{len(y)} right, int8 {right8}/{len(y)}"


def test_litert_int8_bundle_takes_float_input(runners):
    # The graph quantizes: no numpy quantization around the call (it cost more than the network)
    assert runners["tflite-int8"].input_spec.dtype == "float32"
    assert runners["tflite-int8"].output_spec.dtype == "float32"
