"""CKKS presets without TenSEAL: security level, room for values, the default, and the encrypt guard."""

import numpy as np
import pytest

from edge.private.he import (
    DEFAULT_PRESET,
    PRESETS,
    SECURITY_MAX_BITS,
    HEParams,
    KeyHolder,
    max_abs_value,
    security_bits,
)


def test_every_preset_reaches_128_bit_security():
    for name, params in PRESETS.items():
        assert security_bits(params) >= 128, name
    assert SECURITY_MAX_BITS[128][4096] == 109 and SECURITY_MAX_BITS[128][8192] == 218


def test_security_bits_steps_down_with_more_modulus_bits():
    assert security_bits(HEParams(4096, (30, 28), 25)) == 256  # 58 bits: the 256-bit limit at N=4096
    assert security_bits(HEParams(4096, (30, 29), 25)) == 192
    assert security_bits(HEParams(4096, (40, 35), 30)) == 192
    assert security_bits(HEParams(4096, (40, 36), 30)) == 128
    assert security_bits(HEParams(4096, (40, 30, 40), 30)) == 0  # 110 bits: below 128


def test_default_preset_is_the_add_only_fedavg_set_and_fedavg_keeps_one_level():
    default, fedavg = PRESETS[DEFAULT_PRESET], PRESETS["4096-fedavg"]
    assert DEFAULT_PRESET == "4096-preweighted" and default.depth == 0  # the server only adds (plain_sum)
    assert default.poly_modulus_degree == 4096 and len(default.coeff_mod_bit_sizes) == 2
    assert fedavg.depth == 1 and fedavg.scale_bits >= 32  # weighted_sum multiplies once; 2^32 for ≤ 1e-5
    assert max_abs_value(fedavg) == 4.0


def test_room_for_values_at_each_depth():
    assert max_abs_value(PRESETS["4096"]) == 256.0  # logits of the encrypted linear model
    assert max_abs_value(PRESETS["4096-preweighted"]) == 512.0  # depth 0: q0 / (2 · scale)
    assert max_abs_value(PRESETS["8192"]) == 2.0**19


def test_encrypt_refuses_values_that_would_wrap_around():
    holder = KeyHolder(context=None, params=PRESETS["4096-fedavg"])  # the guard runs before any TenSEAL call
    with pytest.raises(ValueError, match="largest \\|value\\| 4.5 does not fit N=4096"):
        holder.encrypt(np.array([0.1, -4.5]))
    with pytest.raises(ValueError, match="nan"):
        holder.encrypt(np.array([np.nan]))
