"""The edge artifacts labs and tests share: the digits CNN, its four signed bundles and the devices' frames.

Every bundle carries the same torch-trained weights: ONNX is exported from the torch CNN, TFLite is
converted from its Keras twin (``cloud.ml.export.keras_twin``, which the drift responder uses too: the torch weights laid out NHWC),
so the four runtimes differ only by runtime and precision, not by training.

Lab 04 publishes them for learners (``get_models`` then ``publish_digits_bundles``); the test suite
builds quick ones once per session (``build_edge_artifacts``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloud.ml.data import DigitsSplit, as_images, digits_split
from cloud.ml.export import export_tflite, keras_twin
from cloud.ml.models import build_torch_cnn
from cloud.ml.publish import (
    bundles_dir,
    ensure_signing_key,
    publish_model_file,
    publish_onnx_bundle,
    publish_tflite_bundle,
)
from cloud.ml.training import TORCH_CNN_FILE, keras_accuracy, load_torch_cnn, torch_accuracy, torch_predict, train_torch
from edge.serving.keys import PUBLIC_KEY_FILE
from edge.serving.sources import FRAMES_FILE, save_frames

# Imported inside the functions that use them, to keep this module quick to import: keras, torch.

BUNDLE_KINDS = ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8")


BUNDLE_PREFIX = "digits-cnn"


REFERENCE_FILE = "reference_logits.npz"


@dataclass
class EdgeModels:
    """The trained torch CNN, its Keras twin (same weights, NHWC) the TFLite bundles come from, and their origin."""
    torch_model: Any
    keras_model: Any  # keras_twin(torch_model), not trained apart
    origin: str  # a sentence for the console: loaded from lab 03 or trained here


def set_single_thread() -> None:
    """One thread for torch (measured: 2 threads can be 10x slower while another process holds a core)."""
    import torch

    torch.set_num_threads(1)


def get_models(artifacts_dir: Path, split: DigitsSplit, seed: int = 42, epochs: int = 15,
               keras_epochs: int | None = None) -> EdgeModels:
    """Lab 03's torch CNN from ``artifacts_dir/lab-03`` when it is there, else trained here; plus its Keras twin.

    ``keras_epochs`` is accepted for older callers and not used: the Keras model is no longer trained,
    it is the torch CNN's weights laid out for Keras.
    """
    set_single_thread()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before Keras loads TensorFlow
    folder = Path(artifacts_dir) / "lab-03"
    if (folder / TORCH_CNN_FILE).exists():
        torch_model = load_torch_cnn(folder)
        origin = f"loaded lab 03's torch CNN from {folder}"
    else:
        torch_model = build_torch_cnn()
        train_torch(torch_model, split, epochs=epochs, seed=seed, device="cpu")
        origin = f"no lab 03 torch CNN in {folder}: trained it here ({epochs} epochs, seed {seed})"
    torch_model.eval()
    return EdgeModels(torch_model, keras_twin(torch_model),
                      origin + "; the TFLite bundles carry its weights (Keras twin, NCHW -> NHWC)")


def publish_digits_bundles(models: EdgeModels, split: DigitsSplit, out_dir: Path, signing_key,
                           version: int = 1, calibration_samples: int = 256, seed: int = 42) -> dict[str, Path]:
    """Publish the four signed bundles (ONNX fp32/int8, TFLite fp32/int8) and the devices' frames file.

    ONNX int8 is static QDQ (int8 weights per channel, int8 activations); TFLite int8 is full-integer
    with float input and output (the graph quantizes), which ran faster than fp32 under LiteRT where
    int8 input and output (quantized in numpy) ran 1.5x slower.
    """
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(split.x_train), size=min(calibration_samples, len(split.x_train)), replace=False)
    calibration = split.x_train[pick]  # N, 64 from the training split, never the test split
    torch_metrics = {"source_test_accuracy": torch_accuracy(models.torch_model, split.x_test, split.y_test)}
    keras_metrics = {"source_test_accuracy": keras_accuracy(models.keras_model, split.x_test, split.y_test)}
    out_dir = Path(out_dir)
    bundles = {
        "onnx-fp32": publish_onnx_bundle(models.torch_model, f"{BUNDLE_PREFIX}-onnx-fp32", version, out_dir,
                                         signing_key, torch_metrics),
        "onnx-int8": publish_onnx_bundle(models.torch_model, f"{BUNDLE_PREFIX}-onnx-int8", version, out_dir,
                                         signing_key, torch_metrics, calibration=calibration),
        "tflite-fp32": publish_tflite_bundle(models.keras_model, f"{BUNDLE_PREFIX}-tflite-fp32", version, out_dir,
                                             signing_key, keras_metrics),
        "tflite-int8": _publish_tflite_int8(models.keras_model, f"{BUNDLE_PREFIX}-tflite-int8", version, out_dir,
                                            signing_key, keras_metrics, calibration),
    }
    save_frames(out_dir / FRAMES_FILE, split.x_test, split.y_test)
    return bundles


def _publish_tflite_int8(keras_model, name: str, version: int, out_dir: Path, signing_key,
                         metrics: dict[str, float], representative: np.ndarray) -> Path:
    """Full-integer TFLite with float input and output (Quantize/Dequantize inside the graph), signed."""
    with tempfile.TemporaryDirectory() as tmp:
        model_file = export_tflite(keras_model, Path(tmp) / "model.tflite", int8=True, representative_x=representative,
                                   int8_io=False)
        quantization = {"method": "TFLite full-integer", "per_channel": True, "weights": "int8",
                        "activations": "int8", "io": "float32 (quantized inside the graph)",
                        "representative_samples": len(representative)}
        return publish_model_file(model_file, runtime="litert", name=name, version=version, out_dir=out_dir,
                                  signing_key=signing_key, precision="int8", layout="NHWC", metrics=metrics,
                                  quantization=quantization)


def build_edge_artifacts(artifacts_dir: Path, seed: int = 42, epochs: int = 4) -> dict[str, Any]:
    """Quick CNN -> the four signed bundles, public key, frames and reference logits under artifacts_dir.

    Used by the test suite's session fixtures: the first call trains and exports (about 30 s),
    later calls with the same folder only read what is there.
    """
    out = bundles_dir(artifacts_dir)
    reference = out / REFERENCE_FILE
    if not reference.exists():
        split = digits_split(seed)
        models = get_models(Path(artifacts_dir), split, seed=seed, epochs=epochs)
        key = ensure_signing_key(artifacts_dir)
        publish_digits_bundles(models, split, out, key, seed=seed)
        np.savez(reference, torch=torch_predict(models.torch_model, split.x_test),
                 keras=np.asarray(models.keras_model(as_images(split.x_test, "NHWC"), training=False)))
    with np.load(reference) as data:
        logits = {"torch": data["torch"], "keras": data["keras"]}
    with np.load(out / FRAMES_FILE) as frames:
        x_test, y_test = frames["x"], frames["y"]
    return {
        "dir": Path(artifacts_dir),
        "bundles": {kind: out / f"{BUNDLE_PREFIX}-{kind}@1" for kind in BUNDLE_KINDS},
        "public_key": out / PUBLIC_KEY_FILE,
        "signing_key": Path(artifacts_dir) / "keys" / "signing_key.pem",
        "frames": out / FRAMES_FILE,
        "x_test": x_test,
        "y_test": y_test,
        "reference": {kind: logits["torch" if kind.startswith("onnx") else "keras"] for kind in BUNDLE_KINDS},
    }
