"""The cloud's side of homomorphic encryption: compute on CKKS ciphertexts with a context that has no secret key.

Every entry point starts from the bytes a key holder sent. ``server_context`` loads them and
refuses (SecretKeyOnServer) if they carry a secret key, so no code path here can decrypt;
``assert_cannot_decrypt`` proves it on a real ciphertext. Ciphertexts are combined with ``a + b``,
``add_`` and ``* number``; never ``.copy()``, which deep-copies the whole context each time.
"""

from __future__ import annotations

import numpy as np

from edge.private.he import import_tenseal


class SecretKeyOnServer(RuntimeError):
    """The cloud was handed a context holding the secret key: it must never have one."""


def server_context(blob: bytes):
    """Load a key holder's public context; raise SecretKeyOnServer if it holds the secret key."""
    ts = import_tenseal()

    context = ts.context_from(blob)
    if context.is_private() or context.has_secret_key():
        raise SecretKeyOnServer(
            f"the context received ({len(blob):,} bytes) contains the secret key; the key holder must "
            "send context.serialize(save_secret_key=False); refusing to compute with it")
    return context


def assert_cannot_decrypt(context, blob: bytes) -> str:
    """Try to decrypt a ciphertext with the server's context; return the error text, raise if it worked."""
    ts = import_tenseal()

    vector = ts.ckks_vector_from(context, blob)
    try:
        vector.decrypt()
    except ValueError as refused:
        return str(refused)
    raise SecretKeyOnServer("the server decrypted a ciphertext: its context has a secret key")


def weighted_sum(context, updates: list[list[bytes]], weights: list[float]) -> list[bytes]:
    """Σ_k w_k · update_k over clients' packed, encrypted updates, without decrypting (FedAvg: w_k = n_k / n).

    Each update is a list of serialized ciphertexts (chunk i of every client lines up). One
    ciphertext-times-number product per chunk and client: it uses one level (a rescale).
    """
    ts = import_tenseal()

    if not updates or len(updates) != len(weights):
        raise ValueError(f"need one weight per update, got {len(updates)} updates and {len(weights)} weights")
    chunks = {len(u) for u in updates}
    if len(chunks) != 1:
        raise ValueError(f"clients sent different numbers of ciphertexts {sorted(chunks)}; "
                         "they must pack the same-shaped update with the same parameters")
    total = []
    for i in range(chunks.pop()):
        acc = None
        for update, weight in zip(updates, weights):
            try:
                term = ts.ckks_vector_from(context, update[i]) * float(weight)  # a new ciphertext, no copy
            except ValueError as error:  # TenSEAL says "scale out of bounds" when no level is left
                raise ValueError(f"cannot weight ciphertexts in this context ({error}): it has no level for a "
                                 "multiplication (a depth-0 preset such as '4096-preweighted'); clients multiply "
                                 "their update by n_k / n before encrypting and the server uses plain_sum") from error
            acc = term if acc is None else acc.add_(term)  # in place
        total.append(acc.serialize())
    return total


def plain_sum(context, updates: list[list[bytes]]) -> list[bytes]:
    """Σ_k update_k without any multiplication (uses no level): FedAvg for pre-weighted updates at depth 0.

    With a depth-0 preset ("4096-preweighted") client k sends Enc((n_k / n) · w_k), so the sum is
    the FedAvg aggregate; the server needs no level and the ciphertexts one data prime only.
    """
    ts = import_tenseal()

    total = []
    for i in range(len(updates[0])):
        acc = ts.ckks_vector_from(context, updates[0][i])
        for update in updates[1:]:
            acc.add_(ts.ckks_vector_from(context, update[i]))
        total.append(acc.serialize())
    return total


def linear_batch(context, feature_blobs: list[bytes], weights: np.ndarray, bias: np.ndarray) -> list[bytes]:
    """Logits of a linear model on a feature-major encrypted batch: column c = Σ_j x_j · W[j, c] + b[c].

    feature_blobs[j] encrypts feature j of every sample; the result is one ciphertext per class,
    holding that class's logit for every sample. Needs no rotations, so no Galois keys.
    """
    ts = import_tenseal()

    weights = np.asarray(weights, dtype=np.float64)  # F, C
    if weights.shape[0] != len(feature_blobs):
        raise ValueError(f"model expects {weights.shape[0]} features, got {len(feature_blobs)} ciphertexts")
    features = [ts.ckks_vector_from(context, b) for b in feature_blobs]
    outputs = []
    for c in range(weights.shape[1]):
        acc = None
        for j, feature in enumerate(features):
            if weights[j, c] == 0.0:
                continue
            term = feature * float(weights[j, c])
            acc = term if acc is None else acc.add_(term)
        outputs.append((acc + float(bias[c])).serialize())
    return outputs


def linear_vector(context, blob: bytes, weights: np.ndarray, bias: np.ndarray) -> bytes:
    """Logits of a linear model on ONE encrypted sample (vector-matrix product; needs Galois keys)."""
    ts = import_tenseal()

    vector = ts.ckks_vector_from(context, blob)
    return (vector.mm(np.asarray(weights, dtype=np.float64).tolist()) + np.asarray(bias).tolist()).serialize()
