"""Bundle verification: good bundles load from folders and archives; each kind of bad bundle is refused
with its own message, and a device offered one keeps serving its current model."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import numpy as np
import pytest

from edge.serving.bundle import load_bundle, pack_bundle, sign_bundle
from edge.serving.device import EdgeDevice
from edge.serving.keys import fingerprint, generate_signing_key, load_private_key, load_public_key
from edge.serving.manifest import (
    BundleFormatError,
    ChecksumError,
    CorruptModelError,
    ModelMismatchError,
    SignatureError,
    UnsignedBundleError,
)
from edge.serving.runners import open_runner
from edge.serving.sinks import ListSink
from edge.serving.sources import DigitFrames


@pytest.fixture()
def keys(edge_artifacts):
    """(cloud signing key, device public key)."""
    return load_private_key(edge_artifacts["signing_key"]), load_public_key(edge_artifacts["public_key"])


@pytest.fixture()
def onnx_copy(edge_artifacts, tmp_path):
    """A private copy of the ONNX fp32 bundle to damage."""
    source = edge_artifacts["bundles"]["onnx-fp32"]
    return shutil.copytree(source, tmp_path / source.name)


def edit_manifest(folder, change) -> None:
    """Apply change(dict) to manifest.json in place (without re-signing)."""
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


@pytest.mark.parametrize("kind", ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"])
def test_every_published_bundle_verifies(edge_artifacts, keys, kind):
    # Prepare
    path = edge_artifacts["bundles"][kind]
    # Execute
    bundle = load_bundle(path, keys[1])
    # Assert
    assert bundle.ref == f"digits-cnn-{kind}@1"
    assert bundle.manifest.precision == kind.split("-")[1]
    assert bundle.manifest.signed_by == fingerprint(keys[1])
    assert bundle.manifest.labels == [str(d) for d in range(10)]


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_archives_load_like_folders(onnx_copy, keys, tmp_path, suffix):
    # Prepare
    archive = pack_bundle(onnx_copy, tmp_path / f"bundle{suffix}")
    x = np.random.default_rng(0).random((4, 64), dtype=np.float32)
    # Execute
    from_archive = open_runner(load_bundle(archive, keys[1])).predict(x)
    from_folder = open_runner(load_bundle(onnx_copy, keys[1])).predict(x)
    # Assert
    np.testing.assert_array_equal(from_archive, from_folder)


def test_tampered_model_is_refused_with_sha256_mismatch(onnx_copy, keys):
    # Prepare: flip one byte in the middle of the model, same size
    model = onnx_copy / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    # Execute / Assert
    with pytest.raises(ChecksumError, match=r"digits-cnn-onnx-fp32@1: sha256 mismatch for model.onnx "
                                            r"\(expected [0-9a-f]{12}\.\.\., got [0-9a-f]{12}\.\.\.\)"):
        load_bundle(onnx_copy, keys[1])


def test_tampered_manifest_is_refused_by_the_signature(onnx_copy, keys):
    # Prepare: someone bumps the advertised accuracy without the private key
    edit_manifest(onnx_copy, lambda m: m["metrics"].update(source_test_accuracy=0.999))
    # Execute / Assert
    with pytest.raises(SignatureError, match="the manifest was changed after it was signed"):
        load_bundle(onnx_copy, keys[1])


def test_unsigned_bundle_is_refused(onnx_copy, keys):
    (onnx_copy / "manifest.sig").unlink()
    with pytest.raises(UnsignedBundleError, match=r"no signature \(manifest.sig missing\)"):
        load_bundle(onnx_copy, keys[1])


def test_bundle_signed_by_another_key_is_refused(onnx_copy, keys):
    # Prepare: an attacker re-signs with their own key
    attacker = generate_signing_key()
    sign_bundle(onnx_copy, attacker)
    # Execute / Assert
    with pytest.raises(SignatureError, match=f"signed by key {fingerprint(attacker)}, this device trusts key "
                                             f"{fingerprint(keys[1])}"):
        load_bundle(onnx_copy, keys[1])


def test_wrong_shape_in_manifest_is_refused(onnx_copy, keys):
    # Prepare: the manifest promises NHWC but the model is NCHW; signed by the real key
    edit_manifest(onnx_copy, lambda m: m["inputs"][0].update(shape=[None, 8, 8, 1]))
    sign_bundle(onnx_copy, keys[0], refresh_checksums=False)
    # Execute / Assert
    with pytest.raises(ModelMismatchError, match=r"input 'image' shape: manifest says \[None, 8, 8, 1\], "
                                                 r"model has \[None, 1, 8, 8\]"):
        load_bundle(onnx_copy, keys[1])


def test_wrong_quantization_in_manifest_is_refused(edge_artifacts, keys, tmp_path):
    # Prepare: a TFLite model with int8 input (the published int8 bundle takes float and quantizes inside)
    from cloud.ml.export import export_tflite
    from cloud.ml.models import build_keras_cnn
    from cloud.ml.publish import publish_model_file

    model = export_tflite(build_keras_cnn(), tmp_path / "model.tflite", int8=True,
                          representative_x=edge_artifacts["x_test"][:32], int8_io=True)
    folder = publish_model_file(model, runtime="litert", name="int8-io", version=1, out_dir=tmp_path / "out",
                                signing_key=keys[0], precision="int8", layout="NHWC")
    edit_manifest(folder, lambda m: m["inputs"][0].update(scale=m["inputs"][0]["scale"] * 2))
    sign_bundle(folder, keys[0], refresh_checksums=False)
    with pytest.raises(ModelMismatchError, match="quantization: manifest says scale="):
        load_bundle(folder, keys[1])


def test_truncated_model_is_refused(onnx_copy, keys):
    model = onnx_copy / "model.onnx"
    size = model.stat().st_size
    model.write_bytes(model.read_bytes()[: size // 2])
    with pytest.raises(ChecksumError, match=f"model.onnx is truncated: expected {size:,} bytes, got {size // 2:,}"):
        load_bundle(onnx_copy, keys[1])


@pytest.mark.parametrize(("kind", "runtime"), [("onnx-fp32", "onnxruntime"), ("tflite-fp32", "LiteRT")])
def test_corrupt_model_signed_by_the_cloud_is_refused(edge_artifacts, keys, tmp_path, kind, runtime):
    # Prepare: a broken export that was still signed (checksums refreshed with the real key)
    folder = shutil.copytree(edge_artifacts["bundles"][kind], tmp_path / "b")
    model = next(p for p in folder.iterdir() if p.name.startswith("model."))
    model.write_bytes(b"this is not a model" * 100)
    sign_bundle(folder, keys[0])
    # Execute / Assert
    with pytest.raises(CorruptModelError, match=f"{runtime} cannot load {model.name}"):
        load_bundle(folder, keys[1])


def test_archive_with_unsafe_path_is_refused(keys, tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(BundleFormatError, match="unsafe path"):
        load_bundle(archive, keys[1])
    assert not (tmp_path.parent / "escape.txt").exists()


def test_each_failure_has_its_own_message(onnx_copy, keys, tmp_path):
    # Prepare: five damaged copies
    damage = {
        "tampered": lambda f: (f / "model.onnx").write_bytes(bytes(b ^ 1 for b in (f / "model.onnx").read_bytes())),
        "unsigned": lambda f: (f / "manifest.sig").unlink(),
        "wrong-key": lambda f: sign_bundle(f, generate_signing_key()),
        "wrong-shape": lambda f: (edit_manifest(f, lambda m: m["outputs"][0].update(shape=[None, 9])),
                                  sign_bundle(f, keys[0], refresh_checksums=False)),
        "truncated": lambda f: (f / "model.onnx").write_bytes((f / "model.onnx").read_bytes()[:100]),
    }
    messages = {}
    for name, apply in damage.items():
        folder = shutil.copytree(onnx_copy, tmp_path / name)
        apply(folder)
        # Execute
        with pytest.raises(Exception) as caught:
            load_bundle(folder, keys[1])
        messages[name] = (type(caught.value).__name__, str(caught.value))
    # Assert: five distinct messages, four distinct error types (tamper and truncation are both checksums)
    assert len({m for _, m in messages.values()}) == 5
    assert {t for t, _ in messages.values()} == {"ChecksumError", "UnsignedBundleError", "SignatureError",
                                                 "ModelMismatchError"}
    assert all(m.startswith("model bundle digits-cnn-onnx-fp32@1: ") for _, m in messages.values())


def test_device_refuses_bad_bundles_and_keeps_serving(edge_artifacts, keys, onnx_copy, tmp_path):
    # Prepare: a device serving the int8 bundle, and a tampered copy of the fp32 one
    public = keys[1]
    runner = open_runner(load_bundle(edge_artifacts["bundles"]["onnx-int8"], public))
    model = onnx_copy / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    unsigned = shutil.copytree(edge_artifacts["bundles"]["tflite-fp32"], tmp_path / "unsigned")
    (unsigned / "manifest.sig").unlink()
    sink = ListSink()
    events = []
    device = EdgeDevice(runner, DigitFrames(edge_artifacts["x_test"], edge_artifacts["y_test"], count=30),
                        sink, public_key=public, on_event=events.append)
    readings = iter(device.source)
    # Execute: serve 10, offer two bad bundles, serve 10 more, offer a good one, serve 10 more
    for _ in range(10):
        device.step(next(readings))
    refused = [device.offer_bundle(onnx_copy), device.offer_bundle(unsigned)]
    for _ in range(10):
        device.step(next(readings))
    accepted = device.offer_bundle(edge_artifacts["bundles"]["tflite-fp32"])
    for _ in range(10):
        device.step(next(readings))
    # Assert
    assert [r.accepted for r in refused] == [False, False]
    assert "sha256 mismatch" in refused[0].message and refused[0].message.endswith("keeping digits-cnn-onnx-int8@1")
    assert "no signature" in refused[1].message
    assert accepted.accepted and accepted.serving == "digits-cnn-tflite-fp32@1"
    models = [p.model for p in sink.items]
    assert models == ["digits-cnn-onnx-int8@1"] * 20 + ["digits-cnn-tflite-fp32@1"] * 10
    assert [e["accepted"] for e in events] == [False, False, True]
