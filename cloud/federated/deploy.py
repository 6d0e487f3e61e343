"""Deploy the federated model: the numpy MLP as an ONNX graph, signed into a bundle devices verify.

The graph is built with the ``onnx`` helper API (no torch needed, since the model never was torch)::

    features (N, 64) -> Gemm(w1, b1) -> Relu -> Gemm(w2, b2) -> logits (N, 10)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from cloud.ml.publish import bundles_dir, ensure_signing_key, publish_model_file
from edge.federated.mlp import PARAM_NAMES, Params, check_params

# Imported inside the functions that use them, to keep this module quick to import: onnx.

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


def publish_federated_model(params: Params, artifacts_dir: Path, name: str = "digits-fedavg-mlp",
                            version: int = 1, metrics: dict[str, float] | None = None) -> Path:
    """Export the global model to ONNX and sign it into ``artifacts/bundles/name@version``; returns the folder."""
    key = ensure_signing_key(artifacts_dir)
    with tempfile.TemporaryDirectory() as tmp:
        model_file = mlp_to_onnx(params, Path(tmp) / "model.onnx")
        return publish_model_file(model_file, runtime="onnxruntime", name=name, version=version,
                                  out_dir=bundles_dir(artifacts_dir), signing_key=key, layout="NF",
                                  metrics=metrics)
