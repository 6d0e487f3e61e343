"""Private FedAvg without processes: encrypted FedAvg equals plaintext FedAvg for the same updates; config and budgets."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from cloud.private_federated import PrivateFlConfig, encrypted_fedavg, is_refusal, plain_fedavg
from edge.he import KeyHolder, flatten, unflatten
from edge.mlp import PARAM_NAMES, init_params, train_sgd, weighted_average
from edge.private_federated import decode_ciphertexts, device_budget, encode_ciphertexts, is_encrypted, state_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client_updates():
    """Three devices' locally trained MLPs (different data sizes) from one global model."""
    rng = np.random.default_rng(0)
    start = init_params(64, 32, 10, seed=0)
    updates, sizes = [], [90, 120, 150]
    for k, n in enumerate(sizes):
        x = rng.random((n, 64)).astype(np.float32)
        y = rng.integers(0, 10, n)
        updates.append(train_sgd(start, x, y, epochs=2, lr=0.5, batch_size=16, seed=k)[0])
    return updates, sizes


def test_encrypted_fedavg_equals_plain_fedavg_within_1e_5(client_updates):
    # Prepare: the clients share one key; the server gets only the public context.
    from cloud.he_server import server_context

    updates, sizes = client_updates
    holder = KeyHolder.create("8192")
    server = server_context(holder.public_context())
    encrypted = [decode_ciphertexts(encode_ciphertexts(holder.encrypt(flatten(u, PARAM_NAMES)))) for u in updates]

    # Execute
    plain = plain_fedavg(updates, sizes)
    aggregate = encrypted_fedavg(server, encrypted, sizes)
    decrypted = unflatten(holder.decrypt(aggregate, len(flatten(plain, PARAM_NAMES))), plain, PARAM_NAMES)

    # Assert: 2,410 weights in one ciphertext (4,096 slots); same FedAvg as the reference to 1e-5
    assert len(encrypted[0]) == 1
    reference = weighted_average(updates, [float(n) for n in sizes])
    for k in PARAM_NAMES:
        assert plain[k].dtype == np.float32
        np.testing.assert_allclose(plain[k], reference[k], atol=1e-6)
        assert np.max(np.abs(decrypted[k] - plain[k])) < 1e-5


def test_the_server_context_cannot_decrypt_the_aggregate(client_updates):
    from cloud.he_server import assert_cannot_decrypt, server_context

    updates, sizes = client_updates
    holder = KeyHolder.create("8192")
    server = server_context(holder.public_context())
    aggregate = encrypted_fedavg(server, [holder.encrypt(flatten(u, PARAM_NAMES)) for u in updates], sizes)

    message = assert_cannot_decrypt(server, aggregate[0])

    assert "secret_key" in message


def test_ciphertext_records_round_trip_bytes():
    blobs = [b"\x00\x01abc", b"xyz" * 100]

    record = encode_ciphertexts(blobs)

    assert is_encrypted(record)
    assert decode_ciphertexts(record) == blobs


def test_private_app_config_defaults_equal_the_dataclass():
    with open(ROOT / "cloud" / "fedapp_private" / "pyproject.toml", "rb") as f:
        app = tomllib.load(f)["tool"]["flwr"]["app"]

    assert app["config"] == PrivateFlConfig().run_config()
    assert app["components"] == {"serverapp": "cloud.private_federated:app", "clientapp": "edge.private_federated:app"}


def test_config_refuses_unknown_privacy_mode_and_missing_he_context():
    with pytest.raises(ValueError, match="privacy='secret'"):
        PrivateFlConfig.from_run_config({"privacy": "secret"})
    with pytest.raises(FileNotFoundError, match="he-context-path"):
        PrivateFlConfig.from_run_config({"privacy": "dp+he", "he-context-path": "/nonexistent"})


def test_device_budgets_one_for_all_or_one_per_device():
    assert device_budget("8", 2) == 8.0
    assert device_budget("8,8,4.5", 2) == 4.5
    with pytest.raises(ValueError, match="names 2 devices"):
        device_budget("8,4", 2)


def test_state_folder_sits_beside_the_partition_unless_node_config_names_one(tmp_path):
    node = {"partition-id": 1, "data-dir": str(tmp_path)}

    assert state_dir(node, {"partition-set": "iid-dp"}) == tmp_path / "iid-dp" / "state-1"
    assert state_dir({**node, "state-dir": "/var/lib/kit"}, {}) == Path("/var/lib/kit")


def test_a_budget_refusal_is_told_apart_from_a_crash():
    refusal = {"reason": "<class 'edge.privacy.PrivacyBudgetExceeded'>:<'device-2: refusing to train'>"}
    crash = {"reason": "<class 'ZeroDivisionError'>:<'division by zero'>"}

    assert is_refusal(refusal) and not is_refusal(crash)
