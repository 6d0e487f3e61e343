"""What a model bundle promises: its manifest schema, the errors a device raises, and a verified bundle.

The format and the checks live in edge.serving.bundle; edge.serving.runners compares a model's real
inputs and outputs with the TensorSpecs here.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BUNDLE_FORMAT = "edge-bundle/1"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"
MODEL_FILES = {"onnxruntime": "model.onnx", "litert": "model.tflite"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip")


# ----------------------------------------------------------------------------- errors


class BundleError(ValueError):
    """A bundle was refused; the message says which check failed, expected vs seen."""

    def __init__(self, ref: str, problem: str) -> None:
        self.ref = ref
        self.problem = problem
        super().__init__(f"model bundle {ref}: {problem}")


class BundleFormatError(BundleError):
    """The path is not a bundle: no manifest, unreadable manifest, unsafe archive."""


class UnsignedBundleError(BundleError):
    """The bundle carries no signature file."""


class SignatureError(BundleError):
    """The signature does not verify with the device's public key."""


class ChecksumError(BundleError):
    """A file listed in the manifest is missing, has the wrong size or the wrong sha256."""


class CorruptModelError(BundleError):
    """The runtime cannot load the model file (it was signed in a broken state)."""


class ModelMismatchError(BundleError):
    """The model's real inputs or outputs differ from what the manifest promises."""


# ----------------------------------------------------------------------------- manifest


class TensorSpec(BaseModel):
    """One model input or output: name, shape (None for a free axis such as batch), dtype.

    int8 tensors also carry their affine quantization: ``real = scale * (q - zero_point)``.
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int | None]
    dtype: Literal["float32", "int8", "uint8", "int32", "int64"]
    scale: float | None = None
    zero_point: int | None = None


class Preprocessing(BaseModel):
    """How a device turns a flat sample into the model's input."""

    model_config = ConfigDict(extra="forbid")

    features: int = Field(64, description="flat float32 features per sample the device feeds")
    layout: Literal["NCHW", "NHWC", "NF"] = Field(description="layout of the model's input tensor")
    value_range: tuple[float, float] = (0.0, 1.0)
    description: str = ""


class FileEntry(BaseModel):
    """Size and sha256 of one file in the bundle."""

    model_config = ConfigDict(extra="forbid")

    sha256: str
    bytes: int


class Manifest(BaseModel):
    """Everything a device needs to know to trust and run a model."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["edge-bundle/1"] = BUNDLE_FORMAT
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: int = Field(ge=1)
    runtime: Literal["onnxruntime", "litert"]
    model_file: str
    precision: Literal["fp32", "int8"]
    quantization: dict[str, Any] = Field(default_factory=dict)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: Preprocessing
    labels: list[str]
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, FileEntry]
    created: str
    signed_by: str = Field(description="fingerprint of the public key that verifies this manifest")

    @property
    def ref(self) -> str:
        """``name@version``, the bundle's name in messages and prediction tags."""
        return f"{self.name}@{self.version}"


def canonical_bytes(data: dict[str, Any]) -> bytes:
    """The bytes that are signed: JSON with sorted keys, no spaces, ASCII only."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- the bundle


@dataclass
class Bundle:
    """A verified bundle: its manifest and the folder its files are in."""

    manifest: Manifest
    folder: Path
    source: Path
    _tempdir: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def ref(self) -> str:
        """``name@version``."""
        return self.manifest.ref

    @property
    def model_path(self) -> Path:
        """Path of the model file."""
        return self.folder / self.manifest.model_file
