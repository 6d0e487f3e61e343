"""Export trained models for the edge: torch -> ONNX (fp32, static int8, dynamic int8), torch -> Keras twin -> TFLite (fp32, int8)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cloud.ml.data import as_images
from cloud.ml.models import build_keras_cnn

# Imported inside the functions that use them, to keep this module quick to import: onnxruntime, tensorflow, torch.


def export_onnx(model, path: Path, sample_shape: tuple[int, ...] = (1, 8, 8)) -> Path:
    """Export a torch model to one ONNX file with the dynamo exporter and a free batch axis.

    Input is named ``image`` (B, *sample_shape), output ``logits``. ``external_data=False``
    keeps the weights inside the .onnx file instead of a side ``.data`` file.
    """
    import torch

    # The exporter warns once per torchvision op it cannot register; the kit has no torchvision.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    example = torch.zeros(2, *sample_shape)  # B=2 so the batch axis is not specialised to 1
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, not ours
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    return path


class OnnxWeightsTemplate:
    """A model's ONNX graph exported once; each retrained model of the same architecture only has its weights written in.

    Exporting with the dynamo exporter takes seconds (4 s the first time on a 2-core VM); copying
    the weights into the graph's initializers takes milliseconds, which is what a drift response
    wants. Initializers are matched to ``state_dict`` entries by name and shape; a model whose
    parameters do not all match is refused (export it afresh instead).
    """

    def __init__(self, model, sample_shape: tuple[int, ...] = (1, 8, 8)) -> None:
        import onnx

        with tempfile.TemporaryDirectory() as tmp:
            self.proto = onnx.load(str(export_onnx(model, Path(tmp) / "model.onnx", sample_shape)))
        self.names = self._matching_names(model)

    def _matching_names(self, model) -> list[str]:
        """The state_dict keys the graph holds as initializers (same name, same shape); all of them or an error."""
        shapes = {init.name: tuple(init.dims) for init in self.proto.graph.initializer}
        state = model.state_dict()
        missing = [k for k, v in state.items() if shapes.get(k) != tuple(v.shape)]
        if missing:
            raise ValueError(f"the ONNX graph does not hold these parameters as initializers: {missing}")
        return list(state)

    def write(self, model, path: Path) -> Path:
        """Write the graph with model's weights to path (same architecture as the exported model)."""
        import onnx
        from onnx import numpy_helper

        if self._matching_names(model) != self.names:
            raise ValueError("model's parameters differ from the template's: export it afresh")
        proto = onnx.ModelProto()
        proto.CopyFrom(self.proto)
        state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
        for init in proto.graph.initializer:
            if init.name in state:
                init.CopyFrom(numpy_helper.from_array(state[init.name].astype(np.float32), init.name))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(proto, str(path))
        return path


class DigitsCalibrationReader:
    """Feeds calibration batches to onnxruntime's static quantizer (a CalibrationDataReader)."""
    def __init__(self, x: np.ndarray, input_name: str = "image", batch_size: int = 32) -> None:
        images = as_images(np.asarray(x, dtype=np.float32), "NCHW")  # N, 1, 8, 8
        self._batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self._input_name = input_name
        self._iter: Iterator[np.ndarray] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next {input name: batch}, or None when calibration data is used up."""
        batch = next(self._iter, None)
        return None if batch is None else {self._input_name: batch}

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._iter = iter(self._batches)


def quantize_onnx_static(fp32_path: Path, out_path: Path, calibration_x: np.ndarray, per_channel: bool = True) -> Path:
    """Static int8 quantization (QDQ format): activations' ranges come from calibration data (N, 64).

    Weights are int8 per output channel, activations int8 with a MinMax-calibrated scale;
    the model keeps float inputs and outputs (QuantizeLinear/DequantizeLinear inside).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class _Reader(DigitsCalibrationReader, CalibrationDataReader):
        """DigitsCalibrationReader registered as onnxruntime's reader type."""

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _Reader(calibration_x),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    return out_path


def quantize_onnx_dynamic(fp32_path: Path, out_path: Path, op_types: tuple[str, ...] | None = ("MatMul", "Gemm")) -> Path:
    """Dynamic int8 quantization: int8 weights, activation scales computed at run time.

    ``op_types=None`` also quantizes the convolutions (ConvInteger), which ran about 4x
    slower than fp32 on this kit's CPU; limiting it to MatMul/Gemm keeps fp32 speed.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    kwargs = {} if op_types is None else {"op_types_to_quantize": list(op_types)}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8, **kwargs)
    return Path(out_path)


def keras_twin(torch_cnn):
    """The Keras CNN (``cloud.ml.models.build_keras_cnn``) carrying the torch CNN's weights, NCHW -> NHWC.

    Convolution kernels go from (out, in, kh, kw) to (kh, kw, in, out); dense kernels are transposed;
    the first dense layer's 512 inputs are reordered, because torch flattens (C, H, W) and Keras
    flattens (H, W, C). Logits agree to about 1e-7.
    """
    w = {name: t.detach().cpu().numpy() for name, t in torch_cnn.state_dict().items()}
    fc1 = w["fc1.weight"]  # 64, 512 with inputs in (C=32, H=4, W=4) order
    fc1 = fc1.reshape(fc1.shape[0], 32, 4, 4).transpose(2, 3, 1, 0).reshape(512, fc1.shape[0])  # 512 (H, W, C), 64
    model = build_keras_cnn(num_classes=w["fc2.weight"].shape[0])
    model.set_weights([
        w["conv1.weight"].transpose(2, 3, 1, 0), w["conv1.bias"],  # 3, 3, 1, 16
        w["conv2.weight"].transpose(2, 3, 1, 0), w["conv2.bias"],  # 3, 3, 16, 32
        fc1, w["fc1.bias"],
        w["fc2.weight"].T, w["fc2.bias"],  # 64, 10
    ])
    return model


def export_tflite(keras_model, path: Path, int8: bool = False, representative_x: np.ndarray | None = None,
                  int8_io: bool = True) -> Path:
    """Convert a Keras model to TFLite: fp32, or full-integer int8 (per-channel weights, int8 activations).

    Full int8 needs a representative data set (N, 64 flat digits) to choose activation ranges.
    ``int8_io=True`` gives the model int8 input and output (the caller quantizes); ``int8_io=False``
    keeps them float32 with Quantize/Dequantize inside the graph, which LiteRT runs in its own
    kernels (measured: on an 8x8 digit, numpy quantization around the call cost more than the network).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if int8:
        if representative_x is None:
            raise ValueError("int8 TFLite export needs representative_x (N, 64 flat digits in [0, 1])")
        images = as_images(np.asarray(representative_x, dtype=np.float32), "NHWC")  # N, 8, 8, 1

        def representative() -> Iterator[list[np.ndarray]]:
            for i in range(len(images)):
                yield [images[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_output(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flat = converter.convert()
    path.write_bytes(flat)
    return path


@contextlib.contextmanager
def _quiet_output() -> Iterator[None]:
    """Silence the converter's prints and C++ logs (file descriptors 1 and 2); show them if it fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
                yield
        except BaseException:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
