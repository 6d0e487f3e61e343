"""One interface over ONNX Runtime and LiteRT: load a verified bundle, predict one sample or a batch.

Every runner takes flat float32 samples (``features`` per sample, as the bundle's preprocessing
says), reshapes them to the model's input layout, quantizes them when the model wants int8,
runs the model and returns float32 logits (dequantized when the model gives int8).

Single samples take a fast path (``predict_one``, ``predict`` on one flat sample): the digits CNN
runs in about 10 µs, so Python-side work per call is most of the latency. ONNX Runtime runs a
pre-bound IOBinding (input and output OrtValues over numpy buffers made once) through the C
session, so a call is one copy of 64 floats in, one run, one copy of the logits out; LiteRT
keeps its batch axis at 1 and calls set_tensor / invoke / get_tensor. Where the time went on a
shared 2-core VM (p50, 1 thread, digits CNN; see ``cloud.bench.edge``):

- ONNX Runtime fp32 before: 25.9 µs with ``session.run`` and a feed dict (the public wrapper
  validates names and ownership per call, about 5-8 µs); with the bound IOBinding about 13-17 µs,
  of which the graph itself (Conv, Conv, MaxPool in NCHWc, ReorderOutput, Reshape, FusedGemm, Gemm:
  seven kernels at 1-3 µs each, ORT's own profiler) is most and the Python call about 2 µs.
- An int8 graph is no faster in ONNX Runtime here: its ten kernels (QuantizeLinear, Transpose,
  2 QLinearConv, NhwcMaxPool, Transpose, Reshape, 2 QGemm, DequantizeLinear) cost what fp32's seven
  do; the arithmetic saved is smaller than the per-kernel overhead on 8x8 inputs.
- LiteRT int8 with int8 input and output spent about 15 µs in numpy quantizing 64 inputs and
  dequantizing 10 logits around a 6 µs invoke; with float input and output (Quantize/Dequantize
  inside the graph, XNNPACK kernels) the same int8 network runs below fp32.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from edge.serving.manifest import Bundle, CorruptModelError, ModelMismatchError, TensorSpec

# Imported inside the functions that use them, to keep this module quick to import: ai_edge_litert, onnxruntime.

RUNNERS: dict[str, type[Runner]] = {}


def register_runner(cls: type[Runner]) -> type[Runner]:
    """Class decorator: make a runner available for bundles whose manifest names its runtime."""
    RUNNERS[cls.runtime] = cls
    return cls


def runner_class(runtime: str) -> type[Runner]:
    """The registered runner for a runtime name, or an error listing those registered."""
    if runtime not in RUNNERS:
        raise ValueError(f"no runner for runtime {runtime!r}; registered: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[runtime]


def open_runner(bundle: Bundle, num_threads: int = 1) -> Runner:
    """A runner for a verified bundle, picked by the manifest's runtime."""
    return runner_class(bundle.manifest.runtime)(bundle, num_threads=num_threads)


def inspect_model(model_path: Path, runtime: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The model's real inputs and outputs as TensorSpecs (used to write and to check manifests)."""
    return runner_class(runtime).inspect(Path(model_path))


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str = "int8") -> np.ndarray:
    """Affine quantization ``q = clip(round(x / scale) + zero_point)`` to int8 or uint8 (x is not modified)."""
    info = np.iinfo(dtype)
    # In-place float32 steps: on an 8x8 sample Python overhead, not arithmetic, is the cost.
    q = np.multiply(x, np.float32(1.0 / scale), dtype=np.float32)
    np.rint(q, out=q)
    q += np.float32(zero_point)
    np.maximum(q, info.min, out=q)
    np.minimum(q, info.max, out=q)
    return q.astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Inverse of quantize: ``x = scale * (q - zero_point)`` as float32."""
    x = q.astype(np.float32)
    x -= np.float32(zero_point)
    x *= np.float32(scale)
    return x


def check_model_against_manifest(bundle: Bundle) -> None:
    """Open the model with its runtime and compare inputs/outputs with the manifest; raise on any difference."""
    manifest = bundle.manifest
    try:
        inputs, outputs = inspect_model(bundle.model_path, manifest.runtime)
    except CorruptModelError as exc:
        raise CorruptModelError(manifest.ref, exc.problem) from None
    for kind, promised, seen in (("input", manifest.inputs, inputs), ("output", manifest.outputs, outputs)):
        if len(promised) != len(seen):
            raise ModelMismatchError(
                manifest.ref, f"manifest lists {len(promised)} {kind}s, the model has {len(seen)}"
            )
        for want, got in zip(promised, seen, strict=True):
            for attr in ("name", "shape", "dtype"):
                if getattr(want, attr) != getattr(got, attr):
                    raise ModelMismatchError(
                        manifest.ref,
                        f"{kind} {want.name!r} {attr}: manifest says {getattr(want, attr)}, "
                        f"model has {getattr(got, attr)}; re-export the bundle from the model",
                    )
            if want.dtype in ("int8", "uint8"):
                if want.scale is None or want.zero_point is None:
                    raise ModelMismatchError(manifest.ref, f"{kind} {want.name!r} is {want.dtype} but the manifest has no scale/zero_point")
                if not np.isclose(want.scale, got.scale, rtol=1e-6) or want.zero_point != got.zero_point:
                    raise ModelMismatchError(
                        manifest.ref,
                        f"{kind} {want.name!r} quantization: manifest says scale={want.scale:.6g} "
                        f"zero_point={want.zero_point}, model has scale={got.scale:.6g} zero_point={got.zero_point}",
                    )


class Runner(ABC):
    """Base runner: preprocessing, (de)quantization and single/batch prediction over one model."""
    runtime: ClassVar[str]

    def __init__(self, bundle: Bundle, num_threads: int = 1) -> None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be at least 1, got {num_threads}")
        self.bundle = bundle
        self.num_threads = num_threads
        manifest = bundle.manifest
        if len(manifest.inputs) != 1 or len(manifest.outputs) != 1:
            raise ModelMismatchError(manifest.ref, "runners handle one input and one output")
        self.input_spec = manifest.inputs[0]
        self.output_spec = manifest.outputs[0]
        self.features = manifest.preprocessing.features
        # The per-sample shape the model wants, e.g. (1, 8, 8) for NCHW or (8, 8, 1) for NHWC.
        self.sample_shape = tuple(int(d) for d in self.input_spec.shape[1:])
        if int(np.prod(self.sample_shape)) != self.features:
            raise ModelMismatchError(
                manifest.ref,
                f"preprocessing.features={self.features} does not fill input shape {self.input_spec.shape}",
            )
        self._quantize_input = self.input_spec.dtype in ("int8", "uint8")
        self._dequantize_output = self.output_spec.dtype in ("int8", "uint8")

    @property
    def ref(self) -> str:
        """The bundle's ``name@version``, which tags every prediction."""
        return self.bundle.ref

    @property
    def labels(self) -> list[str]:
        """Class names in output order."""
        return self.bundle.manifest.labels

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Logits for one sample (features,) -> (classes,) or a batch (N, features) -> (N, classes)."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.features or x.ndim not in (1, 2):
            raise ValueError(
                f"{self.ref}: expected shape ({self.features},) or (N, {self.features}), got {x.shape}"
            )
        if x.ndim == 1:
            return self._one(x)
        batch = x.reshape(-1, *self.sample_shape)  # N, *sample_shape (a view: the input is not modified)
        if self._quantize_input:
            batch = quantize(batch, self.input_spec.scale, self.input_spec.zero_point, self.input_spec.dtype)
        out = self._run(np.ascontiguousarray(batch))  # N, classes
        return self._logits(out)

    def predict_one(self, x: np.ndarray) -> np.ndarray:
        """Logits for one flat sample (features,) -> (classes,)."""
        x = np.asarray(x, dtype=np.float32)
        if x.size != self.features:
            raise ValueError(f"{self.ref}: expected shape ({self.features},) or (N, {self.features}), got {x.shape}")
        return self._one(x.reshape(self.features))

    def _one(self, sample: np.ndarray) -> np.ndarray:
        """Logits (classes,) for one flat float32 sample (features,); runners override it with a faster path."""
        batch = sample.reshape(1, *self.sample_shape)  # 1, *sample_shape (a view)
        if self._quantize_input:
            batch = quantize(batch, self.input_spec.scale, self.input_spec.zero_point, self.input_spec.dtype)
        return self._logits(self._run(np.ascontiguousarray(batch)))[0]

    def _logits(self, out: np.ndarray) -> np.ndarray:
        """The model's raw output as float32 logits (dequantized when the model gives int8)."""
        if self._dequantize_output:
            return dequantize(out, self.output_spec.scale, self.output_spec.zero_point)
        return out.astype(np.float32, copy=False)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Logits for a batch (N, features) -> (N, classes)."""
        return self.predict(np.asarray(x).reshape(-1, self.features))

    @classmethod
    @abstractmethod
    def inspect(cls, model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """The model's inputs and outputs; raise CorruptModelError when the runtime cannot load it."""

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run the model on an input already in its layout and dtype; return its raw output."""


_ORT_TYPES = {"tensor(float)": "float32", "tensor(int8)": "int8", "tensor(uint8)": "uint8",
              "tensor(int32)": "int32", "tensor(int64)": "int64"}


@register_runner
class OnnxRunner(Runner):
    """ONNX Runtime on the CPU execution provider, sequential, with a fixed thread count."""
    runtime = "onnxruntime"

    def __init__(self, bundle: Bundle, num_threads: int = 1) -> None:
        import onnxruntime as ort

        super().__init__(bundle, num_threads)
        self._session = _ort_session(bundle.model_path, num_threads)
        self._input_name = self.input_spec.name
        self._output_names = [self.output_spec.name]
        # Single samples: numpy buffers made once, bound as OrtValues that share their memory, so a call
        # writes the sample into _one_in and reads the logits from _one_out (no feed dict, no allocation).
        self._one_in = np.zeros((1, *self.sample_shape), dtype=self.input_spec.dtype)  # 1, *sample_shape
        self._one_in_flat = self._one_in.reshape(self.features)  # a view of the same memory
        classes = len(self.labels) if self.output_spec.shape[-1] is None else int(self.output_spec.shape[-1])
        self._one_out = np.zeros((1, classes), dtype=self.output_spec.dtype)  # 1, classes
        self._binding = self._session.io_binding()
        self._binding.bind_ortvalue_input(self._input_name, ort.OrtValue.ortvalue_from_numpy(self._one_in))
        self._binding.bind_ortvalue_output(self.output_spec.name, ort.OrtValue.ortvalue_from_numpy(self._one_out))
        # The C session behind InferenceSession: its Python wrapper re-validates the binding on every call
        # (about 3-5 µs of a 15 µs run); the binding was checked once, here. Public API where it is missing.
        c_session, c_binding = getattr(self._session, "_sess", None), getattr(self._binding, "_iobinding", None)
        if c_session is not None and c_binding is not None and hasattr(c_session, "run_with_iobinding"):
            self._run_bound = lambda: c_session.run_with_iobinding(c_binding, None)
        else:
            self._run_bound = lambda: self._session.run_with_iobinding(self._binding)

    @classmethod
    def inspect(cls, model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Inputs and outputs as ONNX Runtime sees them (symbolic axes become None)."""
        session = _ort_session(model_path, 1)

        def spec(arg) -> TensorSpec:
            shape = [d if isinstance(d, int) else None for d in arg.shape]
            return TensorSpec(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, arg.type))

        return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]

    def _one(self, sample: np.ndarray) -> np.ndarray:
        """Copy (or quantize) the sample into the bound input, run the binding, copy the logits out."""
        if self._quantize_input:
            self._one_in_flat[...] = quantize(sample, self.input_spec.scale, self.input_spec.zero_point,
                                              self.input_spec.dtype)
        else:
            self._one_in_flat[...] = sample
        self._run_bound()
        if self._dequantize_output:
            return dequantize(self._one_out[0], self.output_spec.scale, self.output_spec.zero_point)
        return self._one_out[0].copy()  # the buffer is overwritten by the next call

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One session.run call."""
        return self._session.run(self._output_names, {self._input_name: batch})[0]


def _ort_session(model_path: Path, num_threads: int):
    """An InferenceSession with explicit threads, or CorruptModelError if the file will not load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # All graph optimizations (the default, said aloud): fp32 gets NCHWc convolutions and a fused Gemm+Relu,
    # int8 QDQ graphs become QLinearConv/QGemm; EXTENDED alone ran the fp32 CNN about 1.7x slower here.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private exception types
        first = str(exc).strip().splitlines()[0][:200]
        raise CorruptModelError(Path(model_path).name, f"onnxruntime cannot load {Path(model_path).name}: {first}") from None


@register_runner
class LiteRTRunner(Runner):
    """LiteRT (``ai_edge_litert.interpreter``), resizing the batch axis when the batch size changes."""
    runtime = "litert"

    def __init__(self, bundle: Bundle, num_threads: int = 1) -> None:
        super().__init__(bundle, num_threads)
        self._interpreter = _litert_interpreter(bundle.model_path, num_threads)
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        self._output_index = self._interpreter.get_output_details()[0]["index"]
        self._batch = int(self._interpreter.get_input_details()[0]["shape"][0])
        self._set_tensor, self._invoke = self._interpreter.set_tensor, self._interpreter.invoke
        self._get_tensor = self._interpreter.get_tensor

    @classmethod
    def inspect(cls, model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Inputs and outputs as LiteRT sees them (shape_signature -1 becomes None)."""
        interpreter = _litert_interpreter(model_path, 1)

        def spec(detail) -> TensorSpec:
            signature = detail.get("shape_signature", detail["shape"])
            shape = [None if int(d) < 0 else int(d) for d in signature]
            dtype = np.dtype(detail["dtype"]).name
            scale, zero_point = detail.get("quantization", (0.0, 0))
            if dtype in ("int8", "uint8"):
                return TensorSpec(name=detail["name"], shape=shape, dtype=dtype,
                                  scale=float(scale), zero_point=int(zero_point))
            return TensorSpec(name=detail["name"], shape=shape, dtype=dtype)

        return ([spec(d) for d in interpreter.get_input_details()],
                [spec(d) for d in interpreter.get_output_details()])

    def _one(self, sample: np.ndarray) -> np.ndarray:
        """One sample at batch size 1: set_tensor, invoke, get_tensor (LiteRT copies in and out)."""
        if self._batch != 1:
            return super()._one(sample)  # resizes back to 1 once
        batch = sample.reshape(1, *self.sample_shape)  # 1, *sample_shape (a view)
        if self._quantize_input:
            batch = quantize(batch, self.input_spec.scale, self.input_spec.zero_point, self.input_spec.dtype)
        self._set_tensor(self._input_index, batch)
        self._invoke()
        out = self._get_tensor(self._output_index)[0]  # classes, a copy
        if self._dequantize_output:
            return dequantize(out, self.output_spec.scale, self.output_spec.zero_point)
        return out

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """set_tensor, invoke, get_tensor; resize and reallocate only when N changes."""
        if batch.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input_index, list(batch.shape), strict=False)
            self._interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self._interpreter.set_tensor(self._input_index, batch)
        self._interpreter.invoke()
        return self._interpreter.get_tensor(self._output_index)  # a copy, safe to keep


def _litert_interpreter(model_path: Path, num_threads: int):
    """An allocated LiteRT Interpreter, or CorruptModelError if the file will not load."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError with its own text
        first = str(exc).strip().splitlines()[0][:200]
        raise CorruptModelError(Path(model_path).name, f"LiteRT cannot load {Path(model_path).name}: {first}") from None
    return interpreter
