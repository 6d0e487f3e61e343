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


# SEAL's largest total coefficient-modulus bits per ring degree N for 128, 192 and 256-bit security
# (the HomomorphicEncryption.org standard, as CoeffModulus::MaxBitCount). TenSEAL's default context
# refuses anything above the 128-bit column.
SECURITY_MAX_BITS = {
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
}


def security_bits(params: HEParams) -> int:
    """The highest standard security level (256, 192 or 128 bits) these parameters reach; 0 below 128.

    Examples
    --------
    >>> security_bits(HEParams(4096, (35, 32, 42), 32)), security_bits(HEParams(8192, (60, 40, 60), 40))
    (128, 128)
    >>> security_bits(HEParams(4096, (40, 40, 40), 30))
    0
    """
    total = sum(params.coeff_mod_bit_sizes)
    for level in (256, 192, 128):
        if total <= SECURITY_MAX_BITS[level].get(params.poly_modulus_degree, 0):
            return level
    return 0


def max_abs_value(params: HEParams) -> float:
    """About the largest |value| a decrypted FedAvg result may have before it wraps around modulo q0.

    After the last rescale one data prime q0 is left, and it must hold value x scale:
    |value| < q0 / (2 scale). At depth 0 (add-only) the scale is the encryption scale; after
    one ciphertext-times-weight product it is scale^2 / q1. Inputs of a weighted average (weights
    summing to 1) obey the same bound; a plain sum of K inputs needs K times the room.

    Examples
    --------
    >>> max_abs_value(HEParams(4096, (35, 32, 42), 32)), max_abs_value(HEParams(4096, (45, 60), 35))
    (4.0, 512.0)
    """
    bits = params.coeff_mod_bit_sizes
    final_scale = params.scale_bits if params.depth < 1 else 2 * params.scale_bits - bits[1]
    return 2.0 ** (bits[0] - 1 - final_scale)


# Measured by `make bench-privacy` (100,000 values, 10 clients, FedAvg; issue 14 row P5) and, in
# brackets, on lab 10's 2,410 MLP weights (|w| up to about 2):
#   8192              depth 1  14.7x float32, max error 3e-8 [2e-7]
#   4096              depth 1  10.5x, 1.6e-5 [5e-5]
#   4096-fedavg       depth 1   9.9x, 5e-6 [4e-5]; |values| < 4 (q0 = 35 bits over a scale of 2^32)
#   4096-preweighted  depth 0   6.8x, 5e-7 [3e-7]; |values| < 512; the server may only add ciphertexts
# At N=4096 the primes may total at most 109 bits (128-bit security). A fresh ciphertext costs
# about 2 x N x (data-prime bits) / 8 bytes after SEAL's compression: fewer data primes, smaller updates.
PRESETS = {
    # Depth 1 (one plaintext multiplication): weighted aggregation (cloud.private.he.weighted_sum)
    # and the encrypted linear model.
    "8192": HEParams(8192, (60, 40, 60), 40),
    # Encrypted inference at N=4096: logits need room (|value| < 256), so q0 = 39 bits over 2^30.
    "4096": HEParams(4096, (39, 30, 40), 30),
    # The smallest depth-1 set under 10x float32 whose weighted aggregate stays within 1e-5 on small
    # updates; it only holds values with |v| < 4 (KeyHolder.encrypt refuses larger ones).
    "4096-fedavg": HEParams(4096, (35, 32, 42), 32),
    # Depth 0: no multiplication at all, so one data prime. Clients multiply their update by
    # n_k / n before encrypting and the server only adds (cloud.private.he.plain_sum).
    "4096-preweighted": HEParams(4096, (45, 60), 35),
    # TenSEAL's tutorial parameters (depth 2) with Galois keys: the baseline the bench compares with.
    "8192-depth2": HEParams(8192, (60, 40, 40, 60), 40, galois_keys=True),
}
# The kit's default for encrypted FedAvg: smallest, most precise and quickest to sum of the
# candidates (issue 14, P5). It needs pre-weighting clients and an add-only server; code that
# weights on the server (weighted_sum) names "4096-fedavg" or "8192" instead.
DEFAULT_PRESET = "4096-preweighted"


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
    def create(cls, params: HEParams | str = DEFAULT_PRESET) -> KeyHolder:
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
        """Encrypt a flat vector packed into full ciphertexts (N/2 values each); ValueError if it would not fit."""
        values = np.asarray(values, dtype=np.float64)
        limit = max_abs_value(self.params)
        largest = float(np.abs(values).max()) if values.size else 0.0
        if not largest < limit:  # also refuses NaN
            raise ValueError(f"largest |value| {largest:.3g} does not fit {self.params.describe()}: a FedAvg "
                             f"aggregate must stay below {limit:g} or it wraps around silently; use a preset "
                             "with more room (PRESETS['8192'] holds values up to 2^19)")
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
