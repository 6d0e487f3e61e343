"""Model bundles: a model file, a signed manifest and the checks a device runs before it trusts them.

A bundle is a folder (or a .tar.gz / .zip archive of one)::

    digits-cnn-onnx-int8@1/
        model.onnx        the model (model.tflite for LiteRT)
        manifest.json     name, version, runtime, inputs/outputs, quantization, labels, metrics, sha256s
        manifest.sig      Ed25519 signature (64 raw bytes) over the canonical manifest

Loading checks, in order: the manifest parses, a signature is present, the signature verifies
with the device's public key, every file has the size and sha256 the manifest lists, and the
model's real inputs and outputs match the manifest. Each failure raises its own BundleError
subclass whose message names the bundle, what was expected and what was seen.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from edge.serving.keys import fingerprint
from edge.serving.manifest import (
    ARCHIVE_SUFFIXES,
    MANIFEST_FILE,
    MODEL_FILES,
    SIGNATURE_FILE,
    Bundle,
    BundleFormatError,
    ChecksumError,
    Manifest,
    Preprocessing,
    SignatureError,
    TensorSpec,
    UnsignedBundleError,
    canonical_bytes,
    sha256_file,
)
from edge.serving.runners import check_model_against_manifest


def _short(digest: str) -> str:
    """First 12 hex digits of a digest, for messages."""
    return digest[:12] + "..."



def write_bundle(
    model_file: Path,
    out_dir: Path,
    *,
    name: str,
    version: int,
    runtime: str,
    precision: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    preprocessing: Preprocessing,
    labels: list[str],
    signing_key: Ed25519PrivateKey,
    metrics: dict[str, float] | None = None,
    quantization: dict[str, Any] | None = None,
) -> Path:
    """Copy a model into ``out_dir/name@version/``, write its manifest and sign it; returns the folder.

    The manifest's inputs and outputs should come from the model itself
    (``edge.serving.runners.inspect_model``) so that loading on the device agrees.
    """
    if runtime not in MODEL_FILES:
        raise ValueError(f"runtime must be one of {sorted(MODEL_FILES)}, got {runtime!r}")
    folder = Path(out_dir) / f"{name}@{version}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    target = folder / MODEL_FILES[runtime]
    shutil.copyfile(model_file, target)
    manifest = Manifest(
        name=name,
        version=version,
        runtime=runtime,
        model_file=target.name,
        precision=precision,
        quantization=quantization or {},
        inputs=inputs,
        outputs=outputs,
        preprocessing=preprocessing,
        labels=labels,
        metrics={k: float(v) for k, v in (metrics or {}).items()},
        files={},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        signed_by=fingerprint(signing_key),
    )
    (folder / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    sign_bundle(folder, signing_key)
    return folder


def sign_bundle(folder: Path, signing_key: Ed25519PrivateKey, refresh_checksums: bool = True) -> Path:
    """(Re)compute the manifest's file checksums and write manifest.sig; returns the signature path.

    With ``refresh_checksums=False`` the manifest is signed exactly as it is on disk.
    """
    folder = Path(folder)
    data = json.loads((folder / MANIFEST_FILE).read_text())
    if refresh_checksums:
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.name not in (MANIFEST_FILE, SIGNATURE_FILE))
        data["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files}
        data["signed_by"] = fingerprint(signing_key)
        (folder / MANIFEST_FILE).write_text(json.dumps(data, indent=2) + "\n")
    signature = folder / SIGNATURE_FILE
    signature.write_bytes(signing_key.sign(canonical_bytes(data)))
    return signature


def pack_bundle(folder: Path, archive: Path) -> Path:
    """Pack a bundle folder into a .tar.gz, .tgz or .zip archive (one top-level folder)."""
    folder, archive = Path(folder), Path(archive)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive, "w:gz") as tar:
            for path in files:
                tar.add(path, arcname=f"{folder.name}/{path.name}")
    elif archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, arcname=f"{folder.name}/{path.name}")
    else:
        raise ValueError(f"archive name must end in one of {ARCHIVE_SUFFIXES}, got {archive.name!r}")
    return archive


def read_manifest(path: Path) -> Manifest:
    """Read a bundle's manifest without verifying anything (for listing and messages)."""
    folder, tmp = _open_folder(Path(path))
    try:
        return _parse_manifest(folder, Path(path))[1]
    finally:
        if tmp is not None:
            tmp.cleanup()


def load_bundle(path: Path, public_key: Ed25519PublicKey, check_model: bool = True) -> Bundle:
    """Verify a bundle folder or archive and return it; raise a BundleError subclass if any check fails.

    Parameters
    ----------
    path
        A bundle folder, or a ``.tar.gz``/``.tgz``/``.zip`` archive of one.
    public_key
        The cloud's Ed25519 public key (``edge.serving.keys.load_public_key``).
    check_model
        Also open the model with its runtime and compare inputs/outputs with the manifest.

    Examples
    --------
    >>> from pathlib import Path
    >>> from edge.serving.keys import generate_signing_key
    >>> load_bundle(Path("no-such-bundle"), generate_signing_key().public_key())
    Traceback (most recent call last):
    ...
    edge.serving.manifest.BundleFormatError: model bundle no-such-bundle: path does not exist; ...
    """
    path = Path(path)
    folder, tmp = _open_folder(path)
    try:
        raw, manifest = _parse_manifest(folder, path)
        _verify_signature(folder, raw, manifest, public_key)
        _verify_files(folder, manifest)
        bundle = Bundle(manifest=manifest, folder=folder, source=path, _tempdir=tmp)
        if check_model:
            check_model_against_manifest(bundle)
        return bundle
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise


def _open_folder(path: Path) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """The folder holding manifest.json: the path itself, or a safe extraction of an archive."""
    ref = path.name
    if not path.exists():
        raise BundleFormatError(ref, f"path does not exist; expected a bundle folder or {'/'.join(ARCHIVE_SUFFIXES)} archive")
    if path.is_dir():
        return path, None
    if not path.name.endswith(ARCHIVE_SUFFIXES):
        raise BundleFormatError(ref, f"not a folder and not an archive ({'/'.join(ARCHIVE_SUFFIXES)}): {path}")
    tmp = tempfile.TemporaryDirectory(prefix="edge-bundle-")
    target = Path(tmp.name)
    try:
        _extract(path, target)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as exc:
        tmp.cleanup()
        raise BundleFormatError(ref, f"cannot read archive {path}: {exc}") from None
    except BundleFormatError:
        tmp.cleanup()
        raise
    entries = [p for p in target.iterdir()]
    if (target / MANIFEST_FILE).exists():
        return target, tmp
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0], tmp
    tmp.cleanup()
    raise BundleFormatError(ref, f"archive {path} holds no {MANIFEST_FILE} at its top or in one top-level folder")


def _safe_member(ref: str, name: str) -> None:
    """Refuse archive members that would land outside the extraction folder."""
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts:
        raise BundleFormatError(ref, f"archive member {name!r} has an unsafe path; refusing to extract")


def _extract(archive: Path, target: Path) -> None:
    """Extract regular files and folders only (no links), refusing unsafe paths."""
    ref = archive.name
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _safe_member(ref, info.filename)
            zf.extractall(target)
        return
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _safe_member(ref, member.name)
            if not (member.isfile() or member.isdir()):
                raise BundleFormatError(ref, f"archive member {member.name!r} is a link or device; refusing it")
        for member in members:
            out = target / member.name
            if member.isdir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _parse_manifest(folder: Path, source: Path) -> tuple[dict[str, Any], Manifest]:
    """The manifest as raw JSON (what is signed) and as a validated Manifest."""
    ref = source.name
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleFormatError(ref, f"no {MANIFEST_FILE} in {folder}; is this a bundle folder?")
    try:
        raw = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleFormatError(ref, f"{MANIFEST_FILE} is not valid JSON ({exc})") from None
    if isinstance(raw, dict) and "name" in raw and "version" in raw:
        ref = f"{raw['name']}@{raw['version']}"
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BundleFormatError(
            ref, f"{MANIFEST_FILE} field {where!r}: {first['msg']} (seen {first.get('input')!r})"
        ) from None
    return raw, manifest


def _verify_signature(folder: Path, raw: dict[str, Any], manifest: Manifest, key: Ed25519PublicKey) -> None:
    """Check manifest.sig against the canonical manifest with the device's public key."""
    sig_path = folder / SIGNATURE_FILE
    if not sig_path.is_file():
        raise UnsignedBundleError(
            manifest.ref,
            f"no signature ({SIGNATURE_FILE} missing); only bundles signed by the cloud are accepted "
            "(publish it with cloud.ml.publish, which signs it)",
        )
    signature = sig_path.read_bytes()
    try:
        key.verify(signature, canonical_bytes(raw))
    except InvalidSignature:
        expected, seen = fingerprint(key), manifest.signed_by
        why = (
            f"it was signed by key {seen}, this device trusts key {expected}"
            if seen != expected
            else "the manifest was changed after it was signed"
        )
        raise SignatureError(
            manifest.ref, f"signature does not verify with public key {expected} ({why})"
        ) from None


def _verify_files(folder: Path, manifest: Manifest) -> None:
    """Check every listed file's size and sha256, and that the model file is listed."""
    if manifest.model_file not in manifest.files:
        raise ChecksumError(manifest.ref, f"model file {manifest.model_file} has no checksum in the manifest")
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ChecksumError(manifest.ref, f"{name} is missing (the manifest lists it)")
        size = path.stat().st_size
        if size != entry.bytes:
            kind = "truncated" if size < entry.bytes else "larger than signed"
            raise ChecksumError(
                manifest.ref, f"{name} is {kind}: expected {entry.bytes:,} bytes, got {size:,}"
            )
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ChecksumError(
                manifest.ref,
                f"sha256 mismatch for {name} (expected {_short(entry.sha256)}, got {_short(digest)}); "
                "the file was changed after signing",
            )
