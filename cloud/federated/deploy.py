"""Deploy the federated model: the numpy MLP as an ONNX graph or a TFLite file, signed into a bundle devices verify.

The ONNX graph is built with the ``onnx`` helper API (no torch needed, since the model never was torch)::

    features (N, 64) -> Gemm(w1, b1) -> Relu -> Gemm(w2, b2) -> logits (N, 10)

The TFLite file (for LiteRT devices) is the same two dense layers in Keras, carrying the same
weights (a Keras ``Dense`` kernel is (inputs, units), as ``w1`` is), converted by TensorFlow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from cloud.ml.publish import bundles_dir, ensure_signing_key, publish_model_file
from edge.federated.mlp import PARAM_NAMES, Params, check_params

# Imported inside the functions that use them, to keep this module quick to import: onnx, keras, tensorflow.

ONNX_OPSET = 17  # supported by onnxruntime on the Pi and the host alike


def mlp_to_onnx(params: Params, path: Path) -> Path:
    """Write the MLP as an ONNX model with a free batch axis; input ``features``, output ``logits``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    check_params(params)
    features, classes = params["w1"].shape[0], params["w2"].shape[1]
    initializers = [numpy_helper.from_array(np.asarray(params[k], dtype=np.float32), name=k) for k in PARAM_NAMES]
    nodes = [
        helper.make_node("Gemm", ["features", "w1", "b1"], ["hidden_pre"], name="dense1"),  # N, H
        helper.make_node("Relu", ["hidden_pre"], ["hidden"], name="relu"),
        helper.make_node("Gemm", ["hidden", "w2", "b2"], ["logits"], name="dense2"),  # N, C
    ]
    graph = helper.make_graph(
        nodes, "federated_digits_mlp",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", features])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="edge-cloud-ml-kit")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def mlp_to_keras(params: Params):
    """The MLP as a Keras model with the same weights: input (N, 64) ``features``, output (N, 10) logits."""
    import keras
    from keras import layers

    check_params(params)
    features, hidden = params["w1"].shape
    model = keras.Sequential([keras.Input(shape=(features,), name="features"),
                              layers.Dense(hidden, activation="relu", name="dense1"),  # N, H
                              layers.Dense(params["w2"].shape[1], name="dense2")],  # N, C logits
                             name="federated_digits_mlp")
    model.set_weights([np.asarray(params[k], dtype=np.float32) for k in PARAM_NAMES])
    return model


def mlp_to_tflite(params: Params, path: Path) -> Path:
    """Write the MLP as an fp32 TFLite model (for LiteRT devices); its logits match the ONNX graph's to ~1e-6."""
    from cloud.ml.export import export_tflite

    return export_tflite(mlp_to_keras(params), path)


RUNTIME_EXPORTS = {"onnxruntime": ("model.onnx", mlp_to_onnx), "litert": ("model.tflite", mlp_to_tflite)}


def publish_federated_model(params: Params, artifacts_dir: Path, name: str = "digits-fedavg-mlp",
                            version: int = 1, metrics: dict[str, float] | None = None,
                            runtime: str = "onnxruntime") -> Path:
    """Export the global model for ``runtime`` and sign it into a bundle folder; returns the folder.

    ONNX bundles go to ``artifacts/bundles/name@version``, TFLite ones (``runtime="litert"``) to
    ``artifacts/bundles/tflite/name@version``: one update, one bundle per runtime, each signed.
    """
    if runtime not in RUNTIME_EXPORTS:
        raise ValueError(f"runtime={runtime!r}: choose one of {sorted(RUNTIME_EXPORTS)}")
    file_name, export = RUNTIME_EXPORTS[runtime]
    key = ensure_signing_key(artifacts_dir)
    out_dir = bundles_dir(artifacts_dir) / ("tflite" if runtime == "litert" else "")
    with tempfile.TemporaryDirectory() as tmp:
        model_file = export(params, Path(tmp) / file_name)
        return publish_model_file(model_file, runtime=runtime, name=name, version=version,
                                  out_dir=out_dir, signing_key=key, layout="NF", metrics=metrics)
