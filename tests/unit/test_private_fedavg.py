"""Private FedAvg without processes: encrypted FedAvg equals plaintext FedAvg for the same updates; config and budgets."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from cloud.federated.private_server_app import PrivateFlConfig, encrypted_fedavg, is_refusal, plain_fedavg
from edge.federated.mlp import PARAM_NAMES, init_params, train_sgd, weighted_average
from edge.federated.private_client_app import (
    decode_ciphertexts,
    device_budget,
    encode_ciphertexts,
    is_encrypted,
    state_dir,
)
from edge.private.he import KeyHolder, flatten, unflatten

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
    from cloud.private.he import server_context

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
    from cloud.private.he import assert_cannot_decrypt, server_context

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
    with open(ROOT / "cloud" / "federated" / "fedapp_private" / "pyproject.toml", "rb") as f:
        app = tomllib.load(f)["tool"]["flwr"]["app"]

    assert app["config"] == PrivateFlConfig().run_config()
    assert app["components"] == {"serverapp": "cloud.federated.private_server_app:app", "clientapp": "edge.federated.private_client_app:app"}


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
    refusal = {"reason": "<class 'edge.private.dp.PrivacyBudgetExceeded'>:<'device-2: refusing to train'>"}
    crash = {"reason": "<class 'ZeroDivisionError'>:<'division by zero'>"}

    assert is_refusal(refusal) and not is_refusal(crash)


class FakeGrid:
    """A Grid whose three devices answer at once: train on tiny data, device 2 refuses from `refuse_from` on."""

    def __init__(self, refuse_from: int) -> None:
        rng = np.random.default_rng(1)
        self.data = {node: (rng.random((40, 64)).astype(np.float32), rng.integers(0, 10, 40)) for node in (1, 2, 3)}
        self.refuse_from = refuse_from
        self.pending: dict[str, object] = {}

    def get_node_ids(self):
        return [1, 2, 3]

    def push_messages(self, messages):
        ids = []
        for i, message in enumerate(messages):
            message.metadata._message_id = f"m{len(self.pending)}-{i}"  # the SuperLink assigns ids
            self.pending[message.metadata.message_id] = message
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, ids):
        return [self.answer(self.pending.pop(i)) for i in list(ids)]

    def answer(self, request):
        from flwr.app import Error, Message, MetricRecord, RecordDict

        from edge.federated.client_app import params_to_record, record_to_params

        node, config = request.metadata.dst_node_id, request.content["config"]
        x, y = self.data[node]
        base = {"num-examples": len(y), "partition-id": node - 1}
        if request.metadata.message_type == "evaluate":
            return Message(RecordDict({"metrics": MetricRecord({**base, "eval-accuracy": 0.5})}), reply_to=request)
        if node == 3 and int(config["server-round"]) >= self.refuse_from:
            reason = "<class 'edge.private.dp.PrivacyBudgetExceeded'>:<'device-2: refusing to train: ε would reach 5.2 > budget 5'>"
            return Message(Error(code=2, reason=reason), reply_to=request)
        new, loss = train_sgd(record_to_params(request.content["arrays"]), x, y, epochs=1, lr=0.1, seed=node)
        metrics = MetricRecord({**base, "train-loss": loss, "received-accuracy": 0.1})
        return Message(RecordDict({"arrays": params_to_record(new), "metrics": metrics}), reply_to=request)


def run_server(tmp_path, grid, **config):
    """Run the private ServerApp's main loop on a fake grid; return its journal."""
    import json
    from types import SimpleNamespace

    from cloud.federated.private_server_app import main

    test = tmp_path / "test.npz"
    np.savez(test, x_test=np.random.default_rng(2).random((20, 64)).astype(np.float32), y_test=np.arange(20) % 10)
    run_config = {**PrivateFlConfig(num_server_rounds=3, test_path=str(test), out_dir=str(tmp_path / "out"),
                                    poll_interval=0.0, round_timeout=5.0, **config).run_config()}
    main(grid, SimpleNamespace(run_config=run_config, run_id=1))
    return json.loads((tmp_path / "out" / "fl-metrics.json").read_text())


def test_server_goes_on_without_a_refusing_device_while_min_nodes_train(tmp_path, in_a_run):
    journal = run_server(tmp_path, FakeGrid(refuse_from=2), min_nodes=2)

    assert journal["status"] == "completed" and "stopped" not in journal
    assert [len(r["refusals"]) for r in journal["rounds"]] == [0, 1, 1]
    assert [len(r["train"]) for r in journal["rounds"]] == [3, 2, 2]
    assert all(r["aggregated"] and r["errors"] == [] for r in journal["rounds"])
    assert journal["rounds_aggregated"] == 3


def test_server_stops_early_when_refusals_leave_fewer_than_min_nodes(tmp_path, in_a_run):
    journal = run_server(tmp_path, FakeGrid(refuse_from=2), min_nodes=3)

    assert journal["status"] == "completed"
    assert journal["stopped"].startswith("round 2: 2 device(s) trained, fewer than min-nodes=3 (1 refused")
    assert journal["rounds_aggregated"] == 1 and len(journal["rounds"]) == 2
    assert len(journal["rounds"][1]["evaluate"]) == 3  # every device still scores the last aggregated model


def test_a_crashing_device_still_fails_the_run_loudly(tmp_path, in_a_run):
    from cloud.federated.config import FederationError

    class CrashingGrid(FakeGrid):
        def answer(self, request):
            from flwr.app import Error, Message

            if request.metadata.dst_node_id == 3:
                return Message(Error(code=2, reason="<class 'ZeroDivisionError'>:<'division by zero'>"), reply_to=request)
            return super().answer(request)

    with pytest.raises(FederationError, match="round 1 train: 1 client\\(s\\) failed: node 3: .*ZeroDivisionError"):
        run_server(tmp_path, CrashingGrid(refuse_from=99), min_nodes=2)


def test_a_run_starts_from_the_deployed_weights_when_given(tmp_path, in_a_run):
    from edge.federated.mlp import evaluate, init_params

    deployed = init_params(64, 32, 10, seed=7)
    path = tmp_path / "deployed.npz"
    np.savez(path, **deployed)
    journal = run_server(tmp_path, FakeGrid(refuse_from=99), min_nodes=2, initial_model_path=str(path))

    with np.load(tmp_path / "test.npz") as test:
        loss, accuracy = evaluate(deployed, test["x_test"], test["y_test"])
    assert journal["central_initial"] == {"loss": loss, "accuracy": accuracy}  # round 0 is the deployed model
    assert journal["config"]["initial_model_path"] == str(path)
