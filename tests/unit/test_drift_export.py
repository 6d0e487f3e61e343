"""The drift responder's bundles: the TFLite twin of the retrained CNN verifies and agrees with the ONNX bundle."""

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("tensorflow")

MIN_TOP1_AGREEMENT = 0.98  # TFLite vs ONNX on the held-out frames


def test_tflite_bundle_verifies_and_agrees_with_the_onnx_bundle(tmp_path):
    # Prepare: a CNN trained briefly (as the responder fine-tunes), both bundles signed with one key
    import torch

    from cloud.ml.data import digits_split
    from cloud.ml.models import build_torch_cnn
    from cloud.ml.publish import bundles_dir, ensure_signing_key, publish_onnx_bundle
    from cloud.streaming.drift import MODEL_NAME, fine_tune, publish_tflite_twin
    from edge.serving.bundle import load_bundle
    from edge.serving.keys import PUBLIC_KEY_FILE, load_public_key
    from edge.serving.runners import open_runner

    torch.set_num_threads(1)
    torch.manual_seed(0)
    split = digits_split(seed=42)
    model = fine_tune(build_torch_cnn(), split.x_train, split.y_train, epochs=3, lr=3e-3, seed=0)
    key = ensure_signing_key(tmp_path)
    public_key = load_public_key(bundles_dir(tmp_path) / PUBLIC_KEY_FILE)

    # Execute
    onnx_folder = publish_onnx_bundle(model, MODEL_NAME, 2, tmp_path / "bundles", key)
    tflite_folder = publish_tflite_twin(model, 2, tmp_path / "bundles", key)
    onnx = open_runner(load_bundle(onnx_folder, public_key))
    tflite = open_runner(load_bundle(tflite_folder, public_key))  # verifies signature and checksums
    x = split.x_test.astype(np.float32)
    onnx_logits, tflite_logits = onnx.predict_batch(x), tflite.predict_batch(x)

    # Assert
    assert tflite.runtime == "litert" and tflite.ref == onnx.ref == f"{MODEL_NAME}@2"
    agreement = float(np.mean(onnx_logits.argmax(1) == tflite_logits.argmax(1)))
    assert agreement >= MIN_TOP1_AGREEMENT
    assert np.abs(onnx_logits - tflite_logits).max() < 1e-3  # the same weights, NCHW -> NHWC
    assert float(np.mean(onnx_logits.argmax(1) == split.y_test)) > 0.8  # a trained model, not a constant


def test_a_device_takes_only_notices_for_the_runtime_it_runs(tmp_path):
    # Prepare: an ONNX device on version 1, and the same update as an ONNX and a TFLite notice
    from edge.streaming.updates import ModelUpdateFollower
    from edge.wire.events import ModelUpdate

    offered = []
    device = SimpleNamespace(name="cam-0", model="digits-stream@1", runner=SimpleNamespace(runtime="onnxruntime"),
                             offer_bundle=lambda path: offered.append(path) or SimpleNamespace(
                                 accepted=True, message="accepted"))
    follower = ModelUpdateFollower("127.0.0.1:1", device, tmp_path, log=lambda line: None)
    data = b"archive"
    common = dict(device_id="cloud", model="digits-stream@2", version=2, archive_sha256=hashlib.sha256(data).hexdigest(),
                  bundle_b64="YXJjaGl2ZQ==")

    # Execute
    skipped = follower.handle(ModelUpdate(runtime="litert", **common).to_bytes())
    taken = follower.handle(ModelUpdate(**common).to_bytes())

    # Assert
    assert skipped is None and taken["accepted"]
    assert [p.name for p in offered] == ["digits-stream@2.tar.gz"]
