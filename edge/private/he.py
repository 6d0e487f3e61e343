"""Homomorphic encryption on the key holder's side (TenSEAL CKKS): keys, packing, encryption, decryption.

The key holder (a device, or in federated learning the clients, who share one secret key) creates
the CKKS context and keeps its secret key. What it sends the cloud is the context serialized
*without* the secret key, plus ciphertexts; the cloud computes on them (cloud/private/he.py) and only
a key holder can read the result.

Packing: a CKKS ciphertext at polynomial degree N holds N/2 numbers ("slots"). A 100,000-value
model update therefore travels as ceil(100,000 / 4,096) = 25 ciphertexts at N = 8192, not as
100,000 ciphertexts of one value each. For inference on a batch of frames the packing is
feature-major: ciphertext j holds feature j of every frame, so a linear model needs only
ciphertext-times-number products and additions (no rotations, so no Galois keys).

Needs ``tenseal`` (imported inside the functions that use it; the edge extra does not install it).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

# Imported inside the functions that use them, to keep this module quick to import: tenseal.


class TenSEALImportOrderError(RuntimeError):
    """TensorFlow was imported before TenSEAL in this process, which crashes TenSEAL's serialization."""


def import_tenseal():
    """Import TenSEAL, refusing when TensorFlow was loaded first.

    Measured here (tensorflow-cpu 2.21, tenseal 0.3.18): with ``import tensorflow`` before
    ``import tenseal`` in one process, ``context.serialize()`` dies with a segmentation fault
    (both bundle their own protobuf). Importing TenSEAL first, or keeping HE in its own
    process, works; this check turns the crash into a message.
    """
    if "tenseal" not in sys.modules and "tensorflow" in sys.modules:
        raise TenSEALImportOrderError(
            "tensorflow is already imported in this process, and TenSEAL imported after it "
            "crashes when serializing; import tenseal before tensorflow, or run the HE code "
            "in its own process"
        )
    import tenseal

    return tenseal


@dataclass(frozen=True)
class HEParams:
    """CKKS parameters: ring degree N, coefficient-modulus primes (bits, last = special prime), scale."""
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    galois_keys: bool = False  # rotations (vector-matrix products, sums across slots) need them

    @property
    def slots(self) -> int:
        """Numbers one ciphertext carries: N / 2."""
        return self.poly_modulus_degree // 2

    @property
    def depth(self) -> int:
        """Multiplications (each followed by a rescale) a fresh ciphertext can take: data primes - 1."""
        return len(self.coeff_mod_bit_sizes) - 2

    def describe(self) -> str:
        """Short label such as 'N=8192 [60,40,60] 2^40'."""
        primes = ",".join(str(b) for b in self.coeff_mod_bit_sizes)
        return f"N={self.poly_modulus_degree} [{primes}] 2^{self.scale_bits}"


# Depth 1 (one plaintext multiplication): enough for weighted aggregation and a linear model.
# At N=4096 the primes may total at most 109 bits (128-bit security), so the scale drops to 2^30.
PRESETS = {
    "8192": HEParams(8192, (60, 40, 60), 40),
    "4096": HEParams(4096, (39, 30, 40), 30),
    # TenSEAL's tutorial parameters (depth 2) with Galois keys: the baseline the bench compares with.
    "8192-depth2": HEParams(8192, (60, 40, 40, 60), 40, galois_keys=True),
}


def pack(values: np.ndarray, slots: int) -> list[np.ndarray]:
    """Cut a flat vector into consecutive chunks of at most `slots` values (the last one shorter).

    Examples
    --------
    >>> [c.tolist() for c in pack(np.arange(5.0), slots=2)]
    [[0.0, 1.0], [2.0, 3.0], [4.0]]
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    return [flat[i : i + slots] for i in range(0, len(flat), slots)] or [flat]


def unpack(chunks: list[np.ndarray], length: int) -> np.ndarray:
    """Join decrypted chunks back into one vector of `length` values (CKKS may return extra slots)."""
    flat = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in chunks]) if chunks else np.zeros(0)
    if len(flat) < length:
        raise ValueError(f"decrypted {len(flat)} values but expected {length}; were all chunks received?")
    return flat[:length]


def flatten(params: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """Concatenate named arrays (in the given order) into one flat float64 vector."""
    return np.concatenate([np.asarray(params[k], dtype=np.float64).ravel() for k in names])


def unflatten(flat: np.ndarray, like: dict[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Split a flat vector back into arrays shaped (and typed) like `like`."""
    out, offset = {}, 0
    for k in names:
        size = like[k].size
        out[k] = flat[offset : offset + size].reshape(like[k].shape).astype(like[k].dtype)
        offset += size
    if offset != len(flat):
        raise ValueError(f"flat vector has {len(flat)} values, the arrays need {offset}")
    return out


class KeyHolder:
    """The party that owns the CKKS secret key: makes the context, encrypts, decrypts."""
    def __init__(self, context, params: HEParams) -> None:
        """Wrap a private TenSEAL context made with `params` (use KeyHolder.create)."""
        self.context = context
        self.params = params

    @classmethod
    def create(cls, params: HEParams | str = "8192") -> KeyHolder:
        """New keys for the given parameters (a preset name or HEParams). Keys are random by design: no seed."""
        ts = import_tenseal()

        params = PRESETS[params] if isinstance(params, str) else params
        context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=params.poly_modulus_degree,
                             coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes))
        context.global_scale = 2.0 ** params.scale_bits
        if params.galois_keys:
            context.generate_galois_keys()
        return cls(context, params)

    @classmethod
    def from_shared_secret(cls, blob: bytes, params: HEParams) -> KeyHolder:
        """Another key holder's full context (with secret key), e.g. shared among FL clients over a secure channel."""
        ts = import_tenseal()

        context = ts.context_from(blob)
        if not context.is_private():
            raise ValueError("this context has no secret key: it is a server's copy, not a key holder's")
        return cls(context, params)

    def public_context(self) -> bytes:
        """The context for the cloud: no secret key; Galois keys only if these parameters need rotations."""
        return self.context.serialize(save_public_key=True, save_secret_key=False,
                                      save_galois_keys=self.params.galois_keys, save_relin_keys=False)

    def shared_secret(self) -> bytes:
        """The full context including the secret key: only for other key holders, never the cloud."""
        return self.context.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False)

    def encrypt(self, values: np.ndarray) -> list[bytes]:
        """Encrypt a flat vector packed into full ciphertexts (N/2 values each); serialized ciphertexts."""
        ts = import_tenseal()

        return [ts.ckks_vector(self.context, chunk).serialize() for chunk in pack(values, self.params.slots)]

    def encrypt_features(self, x: np.ndarray) -> list[bytes]:
        """Encrypt a batch x (B, F) feature-major: ciphertext j holds feature j of every sample (B ≤ N/2)."""
        ts = import_tenseal()

        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) > self.params.slots:
            raise ValueError(f"need a 2-D batch of at most {self.params.slots} samples, got shape {x.shape}; "
                             "split it into smaller batches")
        return [ts.ckks_vector(self.context, x[:, j]).serialize() for j in range(x.shape[1])]

    def decrypt(self, blobs: list[bytes], length: int) -> np.ndarray:
        """Decrypt serialized ciphertexts (from encrypt or from the cloud) into `length` values."""
        ts = import_tenseal()

        return unpack([ts.ckks_vector_from(self.context, b).decrypt() for b in blobs], length)

    def decrypt_columns(self, blobs: list[bytes], rows: int) -> np.ndarray:
        """Decrypt one ciphertext per output column (as from the cloud's batched linear model): (rows, C)."""
        ts = import_tenseal()

        return np.stack([np.asarray(ts.ckks_vector_from(self.context, b).decrypt())[:rows] for b in blobs], axis=1)
