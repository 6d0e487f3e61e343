"""Devices: hot swap between predictions loses and duplicates nothing; the control folder swaps a running device."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest

from edge.serving.bundle import load_bundle, sign_bundle
from edge.serving.device import ControlFolder, EdgeDevice
from edge.serving.keys import load_private_key, load_public_key
from edge.serving.runners import open_runner
from edge.serving.sinks import JsonlSink, ListSink, MultiSink
from edge.serving.sources import DigitFrames, VibrationSource

N_INPUTS = 10_000


def republish(source, dest_dir, name, version, key):
    """Copy a bundle under a new name@version and sign it with the cloud's key."""
    folder = shutil.copytree(source, dest_dir / f"{name}@{version}")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(name=name, version=version)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sign_bundle(folder, key)
    return folder


@pytest.fixture(scope="module")
def versions(edge_artifacts, tmp_path_factory):
    """digits-cnn@1..4: ONNX fp32, ONNX int8, TFLite fp32, TFLite int8 (swaps cross runtimes too)."""
    key = load_private_key(edge_artifacts["signing_key"])
    dest = tmp_path_factory.mktemp("versions")
    kinds = ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]
    return [republish(edge_artifacts["bundles"][k], dest, "digits-cnn", v, key) for v, k in enumerate(kinds, 1)]


def gated(source, at: int, gate: threading.Event):
    """Yield from source, pausing before reading `at` until gate is set (so all swaps land mid-stream)."""
    for reading in source:
        if reading.index == at:
            assert gate.wait(30), "swaps did not finish within 30 s"
        yield reading


def test_hot_swap_three_times_in_10000_inputs_loses_and_duplicates_nothing(edge_artifacts, versions):
    # Prepare
    public = load_public_key(edge_artifacts["public_key"])
    first = open_runner(load_bundle(versions[0], public))
    all_swapped = threading.Event()
    frames = DigitFrames(edge_artifacts["x_test"], edge_artifacts["y_test"], count=N_INPUTS, seed=1)
    sink = ListSink()
    device = EdgeDevice(first, gated(frames, 9_000, all_swapped), sink, name="cam-0", public_key=public)
    results = []

    def swapper() -> None:
        for threshold, bundle in zip((2_000, 4_500, 7_000), versions[1:], strict=True):
            while device.served < threshold:
                time.sleep(0.0005)
            results.append(device.offer_bundle(bundle))  # verified in this thread, taken by the device
        all_swapped.set()

    thread = threading.Thread(target=swapper)
    thread.start()
    # Execute
    served = device.run()
    thread.join(5)
    # Assert: every input exactly once, in order, and versions only move forward, one step per swap
    assert served == N_INPUTS and len(sink) == N_INPUTS
    assert [p.index for p in sink.items] == list(range(N_INPUTS))
    assert all(r.accepted for r in results), [r.message for r in results]
    tags = [p.model for p in sink.items]
    changes = [i for i in range(1, N_INPUTS) if tags[i] != tags[i - 1]]
    assert len(changes) == 3
    assert [tags[0]] + [tags[i] for i in changes] == [f"digits-cnn@{v}" for v in (1, 2, 3, 4)]
    assert changes[0] >= 2_000 and changes[1] >= 4_500 and changes[2] >= 7_000 and changes[2] <= 9_000
    accuracy = np.mean([p.predicted == p.true_label for p in sink.items])
    assert accuracy >= 0.85
    # the per-model counts a device reports (what --stop-after-update counts) match what it wrote
    assert device.served_by_model == {tag: tags.count(tag) for tag in set(tags)}


def test_control_folder_swaps_a_running_device_and_reports_refusals(edge_artifacts, versions, tmp_path):
    # Prepare: a device in a thread at 2,000 readings/s, watching a control folder
    public = load_public_key(edge_artifacts["public_key"])
    control = ControlFolder(tmp_path / "control")
    stop = threading.Event()
    sink = ListSink()
    jsonl = tmp_path / "predictions.jsonl"
    device = EdgeDevice(open_runner(load_bundle(versions[0], public)),
                        DigitFrames(edge_artifacts["x_test"], rate_hz=2000, seed=0),
                        MultiSink(sink, JsonlSink(jsonl, flush_every=50)), public_key=public)
    thread = threading.Thread(target=device.run, kwargs={"stop": stop, "control": control, "control_interval_s": 0.01})
    thread.start()
    tampered = shutil.copytree(versions[2], tmp_path / "tampered")
    (tampered / "model.tflite").write_bytes(b"\x00" * 10 + (tampered / "model.tflite").read_bytes()[10:])

    def wait_events(n: int) -> list[dict]:
        deadline = time.monotonic() + 10
        while len(control.events()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return control.events()

    # Execute
    control.request_swap(tampered)
    refused = wait_events(1)
    control.request_swap(versions[1])
    accepted = wait_events(2)
    time.sleep(0.05)
    stop.set()
    thread.join(5)
    # Assert
    assert not refused[0]["accepted"] and "sha256 mismatch for model.tflite" in refused[0]["message"]
    assert accepted[1]["accepted"] and accepted[1]["serving"] == "digits-cnn@2"
    assert sink.items[0].model == "digits-cnn@1" and sink.items[-1].model == "digits-cnn@2"
    lines = jsonl.read_text().splitlines()
    assert len(lines) == len(sink) and json.loads(lines[-1])["model"] == "digits-cnn@2"


def test_frames_are_seeded_and_drift_darkens_them(edge_artifacts):
    x = edge_artifacts["x_test"]
    a = [r.features for r in DigitFrames(x, count=50, noise=0.1, seed=3)]
    b = [r.features for r in DigitFrames(x, count=50, noise=0.1, seed=3)]
    drifted = [r.features.mean() for r in DigitFrames(x, count=2000, drift=0.3, seed=3)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))
    assert np.mean(drifted[-200:]) < 0.6 * np.mean(drifted[:200])


def test_vibration_source_marks_faults_with_more_energy():
    readings = list(VibrationSource(count=500, window=64, fault_rate=0.2, seed=0))
    energy = {label: np.mean([np.mean(r.features**2) for r in readings if r.label == label]) for label in (0, 1)}
    assert 50 < sum(r.label for r in readings) < 150
    assert energy[1] > 1.5 * energy[0]


def test_batched_inference_predicts_what_one_by_one_does(edge_artifacts):
    # Prepare
    key = load_public_key(edge_artifacts["public_key"])
    runner = open_runner(load_bundle(edge_artifacts["bundles"]["onnx-fp32"], key))
    frames = DigitFrames(edge_artifacts["x_test"], count=45, seed=1)
    one, batched, capped = ListSink(), ListSink(), ListSink()
    # Execute
    EdgeDevice(runner, frames, one).run()
    served = EdgeDevice(runner, frames, batched).run(batch=16)  # 16 + 16 + 13
    served_capped = EdgeDevice(runner, frames, capped).run(max_items=20, batch=16)  # 16 + 4
    # Assert
    assert served == 45 and [p.index for p in batched.items] == list(range(45))
    assert [p.predicted for p in batched.items] == [p.predicted for p in one.items]
    np.testing.assert_allclose([p.confidence for p in batched.items], [p.confidence for p in one.items], atol=1e-5)
    assert served_capped == 20 and [p.index for p in capped.items] == list(range(20))


def test_streaming_device_takes_a_drift_time_one_way_only():
    from edge.streaming.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["--bundle", "b", "--key", "k", "--frames", "f", "--drift-at", "1", "--drift-after", "2"])
    assert exc.value.code == 2  # argparse's usage error, before anything is opened
