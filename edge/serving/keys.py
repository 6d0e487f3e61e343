"""Ed25519 keys for model bundles: the cloud signs with the private key, devices verify with the public one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_FILE = "public_key.pem"
PRIVATE_KEY_FILE = "signing_key.pem"


class KeyFileError(ValueError):
    """A key file is missing or is not an Ed25519 key."""


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 private key (the cloud's signing key)."""
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: Path) -> Path:
    """Write the private key as unencrypted PKCS#8 PEM, readable by its owner only (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def save_public_key(key: Ed25519PublicKey | Ed25519PrivateKey, path: Path) -> Path:
    """Write the public half as SubjectPublicKeyInfo PEM (safe to copy to every device)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 private key from PEM, or say what the file holds instead."""
    key = serialization.load_pem_private_key(_read_key_file(path), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key, got {type(key).__name__}")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key from PEM, or say what the file holds instead."""
    try:
        key = serialization.load_pem_public_key(_read_key_file(path))
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM public key ({exc}); copy public_key.pem from the cloud") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: expected an Ed25519 public key, got {type(key).__name__}")
    return key


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Short hex id of a public key (first 16 hex digits of the sha256 of its raw bytes)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_key_file(path: Path) -> bytes:
    """Bytes of a key file, or an error that says where keys come from."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(
            f"key file {path} does not exist; the cloud writes {PUBLIC_KEY_FILE} next to its bundles "
            "(lab 04), copy it to the device"
        )
    return path.read_bytes()
