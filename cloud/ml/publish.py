"""Make signed model bundles for devices: the cloud's signing key, and publishing exported models.

Layout under the artifacts folder::

    artifacts/keys/signing_key.pem          the cloud's Ed25519 private key (0600, never leaves the cloud)
    artifacts/bundles/public_key.pem        what devices trust (copy it to a Raspberry Pi)
    artifacts/bundles/digits_test_frames.npz  held-out frames devices draw from
    artifacts/bundles/<name>@<version>/     one signed bundle each
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud.ml.data import DIGITS_LABELS
from cloud.ml.export import OnnxWeightsTemplate, export_onnx, export_tflite, quantize_onnx_static
from edge.serving.bundle import Preprocessing, write_bundle
from edge.serving.keys import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    generate_signing_key,
    load_private_key,
    save_private_key,
    save_public_key,
)
from edge.serving.runners import inspect_model


def keys_dir(artifacts_dir: Path) -> Path:
    """Where the cloud keeps its signing key."""
    return Path(artifacts_dir) / "keys"


def bundles_dir(artifacts_dir: Path) -> Path:
    """Where published bundles, the public key and device frames go."""
    return Path(artifacts_dir) / "bundles"


def ensure_signing_key(artifacts_dir: Path) -> Ed25519PrivateKey:
    """Load the cloud's signing key, creating it (and the devices' public_key.pem) on first use."""
    private = keys_dir(artifacts_dir) / PRIVATE_KEY_FILE
    if private.exists():
        key = load_private_key(private)
    else:
        key = generate_signing_key()
        save_private_key(key, private)
    save_public_key(key, keys_dir(artifacts_dir) / PUBLIC_KEY_FILE)
    save_public_key(key, bundles_dir(artifacts_dir) / PUBLIC_KEY_FILE)
    return key


def publish_model_file(
    model_file: Path,
    *,
    runtime: str,
    name: str,
    version: int,
    out_dir: Path,
    signing_key: Ed25519PrivateKey,
    precision: str = "fp32",
    layout: str = "NCHW",
    metrics: dict[str, float] | None = None,
    quantization: dict[str, Any] | None = None,
    labels: list[str] | None = None,
) -> Path:
    """Sign an exported model file into ``out_dir/name@version/``, reading its inputs/outputs from the model."""
    inputs, outputs = inspect_model(model_file, runtime)
    features = int(np.prod([d for d in inputs[0].shape[1:]]))
    return write_bundle(
        model_file,
        out_dir,
        name=name,
        version=version,
        runtime=runtime,
        precision=precision,
        inputs=inputs,
        outputs=outputs,
        preprocessing=Preprocessing(
            features=features,
            layout=layout,
            description="8x8 digit frame, pixels / 16 in [0, 1], flattened row by row",
        ),
        labels=list(labels or DIGITS_LABELS),
        metrics=metrics,
        quantization=quantization,
        signing_key=signing_key,
    )


def publish_onnx_bundle(
    torch_model,
    name: str,
    version: int,
    out_dir: Path,
    signing_key: Ed25519PrivateKey,
    metrics: dict[str, float] | None = None,
    calibration: np.ndarray | None = None,
    labels: list[str] | None = None,
    template: OnnxWeightsTemplate | None = None,
) -> Path:
    """Export a torch CNN to ONNX and publish it signed; with ``calibration`` (N, 64) it is static int8 QDQ.

    With a ``template`` (the same architecture, exported once) only the weights are written: milliseconds, not seconds.
    """
    with tempfile.TemporaryDirectory() as tmp:
        model_file = (template.write(torch_model, Path(tmp) / "model.onnx") if template is not None
                      else export_onnx(torch_model, Path(tmp) / "model.onnx"))
        precision, quantization = "fp32", {}
        if calibration is not None:
            model_file = quantize_onnx_static(model_file, Path(tmp) / "model-int8.onnx", calibration)
            precision = "int8"
            quantization = {"method": "onnxruntime static QDQ", "per_channel": True,
                            "weights": "int8", "activations": "int8", "calibration_samples": len(calibration)}
        return publish_model_file(model_file, runtime="onnxruntime", name=name, version=version, out_dir=out_dir,
                                  signing_key=signing_key, precision=precision, layout="NCHW",
                                  metrics=metrics, quantization=quantization, labels=labels)


def publish_tflite_bundle(
    keras_model,
    name: str,
    version: int,
    out_dir: Path,
    signing_key: Ed25519PrivateKey,
    metrics: dict[str, float] | None = None,
    representative: np.ndarray | None = None,
    labels: list[str] | None = None,
) -> Path:
    """Convert a Keras CNN to TFLite and publish it signed; with ``representative`` (N, 64) it is full int8."""
    with tempfile.TemporaryDirectory() as tmp:
        int8 = representative is not None
        model_file = export_tflite(keras_model, Path(tmp) / "model.tflite", int8=int8, representative_x=representative)
        quantization = ({"method": "TFLite full-integer", "weights": "int8", "activations": "int8",
                         "io": "int8", "representative_samples": len(representative)} if int8 else {})
        return publish_model_file(model_file, runtime="litert", name=name, version=version, out_dir=out_dir,
                                  signing_key=signing_key, precision="int8" if int8 else "fp32", layout="NHWC",
                                  metrics=metrics, quantization=quantization, labels=labels)
