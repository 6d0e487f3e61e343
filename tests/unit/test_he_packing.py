"""Packing model updates into CKKS slots, without TenSEAL: chunk counts, round trips, parameter facts."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.private.he import PRESETS, flatten, pack, unflatten, unpack


def test_a_100k_update_fills_25_ciphertexts_at_n8192():
    chunks = pack(np.zeros(100_000), PRESETS["8192"].slots)
    assert PRESETS["8192"].slots == 4096
    assert len(chunks) == 25 and all(len(c) == 4096 for c in chunks[:-1]) and len(chunks[-1]) == 1696


@settings(max_examples=50, deadline=None)
@given(length=st.integers(1, 3000), slots=st.integers(1, 600))
def test_pack_then_unpack_gives_the_vector_back(length, slots):
    values = np.random.default_rng(length).normal(size=length)
    chunks = pack(values, slots)
    assert len(chunks) == -(-length // slots)
    padded = [np.concatenate([c, np.zeros(slots - len(c))]) for c in chunks]  # CKKS returns full slots
    assert np.array_equal(unpack(padded, length), values)


def test_unpack_says_when_chunks_are_missing():
    with pytest.raises(ValueError, match="expected 10"):
        unpack([np.zeros(4)], 10)


def test_flatten_unflatten_round_trip_keeps_shapes_and_dtypes():
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, dtype=np.float32)}
    flat = flatten(params, ("w", "b"))
    back = unflatten(flat, params, ("w", "b"))
    assert flat.shape == (9,) and back["w"].dtype == np.float32
    assert all(np.array_equal(back[k], params[k]) for k in params)
    with pytest.raises(ValueError, match="10 values"):
        unflatten(np.zeros(10), params, ("w", "b"))


def test_presets_stay_within_128_bit_security_and_depth():
    limits = {4096: 109, 8192: 218}  # SEAL's total coefficient-modulus bits for 128-bit security
    for params in PRESETS.values():
        assert sum(params.coeff_mod_bit_sizes) <= limits[params.poly_modulus_degree]
    for name, params in PRESETS.items():  # one plaintext multiplication: weighting or a linear layer
        assert params.depth >= 1 or name.endswith("preweighted"), name  # depth 0: the server only adds
