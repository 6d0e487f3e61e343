"""One interface over ONNX Runtime and LiteRT: load a verified bundle, predict one sample or a batch.

Every runner takes flat float32 samples (``features`` per sample, as the bundle's preprocessing
says), reshapes them to the model's input layout, quantizes them when the model wants int8,
runs the model and returns float32 logits (dequantized when the model gives int8).
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
        single = x.ndim == 1
        if x.shape[-1] != self.features or x.ndim not in (1, 2):
            raise ValueError(
                f"{self.ref}: expected shape ({self.features},) or (N, {self.features}), got {x.shape}"
            )
        batch = x.reshape(-1, *self.sample_shape)  # N, *sample_shape (a view: the input is not modified)
        if self.input_spec.dtype in ("int8", "uint8"):
            batch = quantize(batch, self.input_spec.scale, self.input_spec.zero_point, self.input_spec.dtype)
        out = self._run(np.ascontiguousarray(batch))  # N, classes
        if self.output_spec.dtype in ("int8", "uint8"):
            out = dequantize(out, self.output_spec.scale, self.output_spec.zero_point)
        out = out.astype(np.float32, copy=False)
        return out[0] if single else out

    def predict_one(self, x: np.ndarray) -> np.ndarray:
        """Logits for one flat sample (features,) -> (classes,)."""
        return self.predict(np.asarray(x).reshape(self.features))

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
        super().__init__(bundle, num_threads)
        self._session = _ort_session(bundle.model_path, num_threads)
        self._input_name = self.input_spec.name
        self._output_name = self.output_spec.name

    @classmethod
    def inspect(cls, model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Inputs and outputs as ONNX Runtime sees them (symbolic axes become None)."""
        session = _ort_session(model_path, 1)

        def spec(arg) -> TensorSpec:
            shape = [d if isinstance(d, int) else None for d in arg.shape]
            return TensorSpec(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, arg.type))

        return [spec(a) for a in session.get_inputs()], [spec(a) for a in session.get_outputs()]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        """One session.run call."""
        return self._session.run([self._output_name], {self._input_name: batch})[0]


def _ort_session(model_path: Path, num_threads: int):
    """An InferenceSession with explicit threads, or CorruptModelError if the file will not load."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
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
