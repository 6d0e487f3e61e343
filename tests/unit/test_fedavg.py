"""FedAvg math, partitioning and the federated app's config: exact numbers, no processes."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from cloud.federated.config import FederationError, FlConfig, run_config_string
from cloud.federated.journal import RoundJournal
from cloud.federated.partition import (
    class_histograms,
    dirichlet_partition,
    make_partitions,
    two_class_partition,
    write_partitions,
)
from cloud.federated.strategies import STRATEGIES, JournalledFedAvg, make_strategy
from edge.federated.client_app import params_to_record, record_to_params
from edge.federated.mlp import PARAM_NAMES, evaluate, init_params, loss_and_grads, train_sgd, weighted_average

ROOT = Path(__file__).resolve().parents[2]


def reply(params, num_examples: int, partition_id: int):
    """A train reply as a ClientApp sends it: weights plus num-examples."""
    from flwr.app import Message, MetricRecord, RecordDict

    request = Message(content=RecordDict({"metrics": MetricRecord({"x": 0})}), dst_node_id=100 + partition_id,
                      message_type="train")
    metrics = MetricRecord({"num-examples": num_examples, "train-loss": 0.5 + partition_id,
                            "received-accuracy": 0.1, "partition-id": partition_id, "train-seconds": 0.01})
    return Message(content=RecordDict({"arrays": params_to_record(params), "metrics": metrics}), reply_to=request)


def tiny_clients():
    """Three clients that trained a tiny MLP (3 -> 2 -> 2) on different data sizes."""
    rng = np.random.default_rng(0)
    start = init_params(features=3, hidden=2, classes=2, seed=0)
    clients, sizes = [], [5, 11, 20]
    for i, n in enumerate(sizes):
        x = rng.random((n, 3)).astype(np.float32)
        y = (x.sum(1) > 1.5).astype(np.int64)
        clients.append(train_sgd(start, x, y, epochs=2, lr=0.3, batch_size=4, seed=i)[0])
    return clients, sizes


def test_flower_fedavg_aggregate_is_the_sample_weighted_mean_exactly(in_a_run, tmp_path):
    # Prepare: three trained tiny models with 5, 11 and 20 examples
    clients, sizes = tiny_clients()
    strategy = make_strategy(FlConfig(), RoundJournal(tmp_path / "j.json", FlConfig(), run_id=7))
    # Execute: the kit's strategy aggregates what Flower's FedAvg aggregates
    arrays, metrics = strategy.aggregate_train(1, [reply(p, n, i) for i, (p, n) in enumerate(zip(clients, sizes))])
    aggregated = record_to_params(arrays)
    # Assert: bit for bit the reference sum_k (n_k / n) w_k, and within float32 rounding of float64 math
    reference = weighted_average(clients, sizes)
    for k in PARAM_NAMES:
        assert aggregated[k].dtype == np.float32
        assert np.array_equal(aggregated[k], reference[k]), k
        exact64 = sum(n * p[k].astype(np.float64) for p, n in zip(clients, sizes)) / sum(sizes)
        np.testing.assert_allclose(aggregated[k], exact64, rtol=1e-6, atol=1e-7)
    assert metrics["train-loss"] == pytest.approx((5 * 0.5 + 11 * 1.5 + 20 * 2.5) / 36)


def test_dyadic_weights_average_exactly(in_a_run, tmp_path):
    # Prepare: weights that are exact binary fractions, and 1 : 1 : 2 examples (factors 1/4, 1/4, 1/2)
    shapes = {"w1": (3, 2), "b1": (2,), "w2": (2, 2), "b2": (2,)}
    clients = [{k: np.full(s, v, dtype=np.float32) for k, s in shapes.items()} for v in (1.0, 2.0, 4.0)]
    # Execute
    arrays, _ = JournalledFedAvg.aggregate_train(
        make_strategy(FlConfig(), RoundJournal(tmp_path / "j.json", FlConfig(), 7)), 1,
        [reply(p, n, i) for i, (p, n) in enumerate(zip(clients, [1, 1, 2]))])
    # Assert: 1/4 + 2/4 + 4/2 = 2.75 everywhere, exactly
    for k, value in record_to_params(arrays).items():
        assert np.all(value == np.float32(2.75)), k


def test_journal_records_per_device_rows_and_a_round_with_too_few_replies_fails(in_a_run, tmp_path):
    clients, sizes = tiny_clients()
    journal = RoundJournal(tmp_path / "j.json", FlConfig(), 7)
    strategy = make_strategy(FlConfig(min_nodes=3), journal)
    with pytest.raises(FederationError, match="only 2 node.*min-nodes=3"):
        strategy.aggregate_train(1, [reply(p, n, i) for i, (p, n) in enumerate(zip(clients[:2], sizes[:2]))])
    rows = journal.data["rounds"][0]["train"]
    assert sorted(r["partition_id"] for r in rows) == [0, 1]
    assert journal.data["rounds"][0]["train_loss"] == pytest.approx((5 * 0.5 + 11 * 1.5) / 16)


def test_fedprox_gradient_matches_finite_differences():
    # Prepare: FedProx's local objective around an anchor (the global model)
    rng = np.random.default_rng(1)
    params = {k: v.astype(np.float64) for k, v in init_params(4, 3, 3, seed=1).items()}
    anchor = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in params.items()}
    x, y = rng.random((6, 4)), rng.integers(0, 3, 6)
    # Execute
    _, grads = loss_and_grads(params, x, y, anchor, mu=0.7)
    # Assert: central differences agree on every coordinate of every parameter
    eps = 1e-6
    for k in PARAM_NAMES:
        numeric = np.zeros_like(params[k])
        for idx in np.ndindex(params[k].shape):
            plus = {**params, k: params[k].copy()}
            minus = {**params, k: params[k].copy()}
            plus[k][idx] += eps
            minus[k][idx] -= eps
            numeric[idx] = (loss_and_grads(plus, x, y, anchor, 0.7)[0] - loss_and_grads(minus, x, y, anchor, 0.7)[0]) / (2 * eps)
        np.testing.assert_allclose(grads[k], numeric, rtol=1e-4, atol=1e-7)


def test_local_training_lowers_the_loss():
    rng = np.random.default_rng(0)
    x = rng.random((200, 8)).astype(np.float32)
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype(np.int64)
    start = init_params(8, 16, 2, seed=0)
    trained, _ = train_sgd(start, x, y, epochs=60, lr=0.3, seed=0)
    assert evaluate(trained, x, y)[0] < 0.6 * evaluate(start, x, y)[0]


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "two-class"])
def test_partitions_are_disjoint_cover_everything_and_repeat_with_the_seed(scheme):
    y = np.repeat(np.arange(10), 60)
    first = make_partitions(y, scheme, 5, seed=3, alpha=0.5)
    again = make_partitions(y, scheme, 5, seed=3, alpha=0.5)
    other = make_partitions(y, scheme, 5, seed=4, alpha=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    joined = np.concatenate(first)
    assert len(joined) == len(y) and len(np.unique(joined)) == len(y)


def dominant_share(y: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean over devices of the share of a device's samples in its most common class."""
    hist = class_histograms(y, parts)
    return float(np.mean(hist.max(1) / hist.sum(1)))


def test_dirichlet_alpha_controls_the_label_skew():
    y = np.repeat(np.arange(10), 100)
    skewed = dominant_share(y, dirichlet_partition(y, 5, alpha=0.1, seed=0))
    mild = dominant_share(y, dirichlet_partition(y, 5, alpha=1.0, seed=0))
    near_iid = dominant_share(y, dirichlet_partition(y, 5, alpha=100.0, seed=0))
    assert skewed > 0.4 and near_iid < 0.15
    assert skewed > mild > near_iid


def test_two_class_split_gives_each_device_about_two_classes():
    y = np.repeat(np.arange(10), 50)
    hist = class_histograms(y, two_class_partition(y, 5, seed=0))
    assert ((hist > 0).sum(1) <= 2).all()


def test_bad_partition_arguments_say_what_to_do():
    y = np.repeat(np.arange(10), 5)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        dirichlet_partition(y, 3, alpha=0, seed=0)
    with pytest.raises(ValueError, match="one of"):
        make_partitions(y, "by-colour", 3, seed=0)
    with pytest.raises(ValueError, match="fewer than 10 samples"):
        dirichlet_partition(y, 10, alpha=0.01, seed=0, max_tries=3)


def test_written_partitions_hold_train_and_held_out_parts(tmp_path):
    x, y = np.random.default_rng(0).random((100, 64)).astype(np.float32), np.repeat(np.arange(10), 10)
    paths = write_partitions(x, y, make_partitions(y, "iid", 4, seed=0), tmp_path)
    with np.load(paths[0]) as data:
        assert len(data["y_train"]) == 20 and len(data["y_val"]) == 5 and data["x_train"].shape[1] == 64


def test_app_config_defaults_equal_flconfig():
    config = tomllib.loads((ROOT / "cloud/federated/fedapp/pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert config == FlConfig().run_config()
    components = tomllib.loads((ROOT / "cloud/federated/fedapp/pyproject.toml").read_text())["tool"]["flwr"]["app"]["components"]
    assert components == {"serverapp": "cloud.federated.server_app:app", "clientapp": "edge.federated.client_app:app"}


def test_run_config_string_is_toml():
    values = {"strategy": "fedprox", "lr": 0.05, "num-server-rounds": 4, "fail-on-client-error": False}
    parsed = tomllib.loads("\n".join(run_config_string(values).split(" ")))
    assert parsed == values
    with pytest.raises(ValueError, match="min-nodes must be >= 1, got 3 and 0"):
        FlConfig.from_run_config({"num-server-rounds": 3, "min-nodes": 0})


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_registered_strategy_is_built_from_the_run_config_and_journals(name, tmp_path):
    # Prepare
    config = FlConfig(strategy=name, min_nodes=3, proximal_mu=0.25, server_lr=0.5, lr=0.05)
    journal = RoundJournal(tmp_path / "j.json", config, 7)
    # Execute
    strategy = make_strategy(config, journal)
    # Assert: the registered class, the common settings, and its own options read from the config
    assert type(strategy) is STRATEGIES[name]
    assert strategy.journal is journal and strategy.min_train_nodes == 3 and strategy.num_rounds == 3
    for option, value in STRATEGIES[name].options(config).items():
        assert getattr(strategy, option) == value, option


def test_an_unknown_strategy_names_the_registered_ones(tmp_path):
    with pytest.raises(ValueError, match="strategy='fedsgd'; use one of fedavg, fedprox, fedadam"):
        make_strategy(FlConfig(strategy="fedsgd"), RoundJournal(tmp_path / "j.json", FlConfig(), 7))


def test_fedadam_keeps_the_model_float32(in_a_run, tmp_path):
    clients, sizes = tiny_clients()
    strategy = make_strategy(FlConfig(strategy="fedadam"), RoundJournal(tmp_path / "j.json", FlConfig(), 7))
    strategy.current_arrays = {k: v for k, v in init_params(3, 2, 2, seed=0).items()}  # what configure_train keeps
    arrays, _ = strategy.aggregate_train(1, [reply(p, n, i) for i, (p, n) in enumerate(zip(clients, sizes))])
    assert {a.numpy().dtype for a in arrays.values()} == {np.dtype(np.float32)}


def test_onnx_export_of_the_mlp_matches_numpy_exactly(tmp_path):
    import onnxruntime as ort

    from cloud.federated.deploy import mlp_to_onnx
    from edge.federated.mlp import forward

    params = init_params(seed=5)
    path = mlp_to_onnx(params, tmp_path / "mlp.onnx")
    x = np.random.default_rng(0).random((7, 64)).astype(np.float32)
    logits = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    np.testing.assert_allclose(logits, forward(params, x), rtol=1e-5, atol=1e-5)


def test_both_runtimes_bundles_of_the_mlp_verify_and_agree_with_numpy(tmp_path):
    pytest.importorskip("tensorflow")
    from cloud.federated.deploy import publish_federated_model
    from cloud.ml.publish import bundles_dir
    from edge.federated.mlp import forward
    from edge.serving.bundle import load_bundle
    from edge.serving.keys import PUBLIC_KEY_FILE, load_public_key
    from edge.serving.runners import open_runner

    params = init_params(seed=5)
    x = np.random.default_rng(0).random((7, 64)).astype(np.float32)
    folders = {runtime: publish_federated_model(params, tmp_path, name="fleet", version=2, runtime=runtime)
               for runtime in ("onnxruntime", "litert")}
    key = load_public_key(bundles_dir(tmp_path) / PUBLIC_KEY_FILE)
    for runtime, folder in folders.items():
        runner = open_runner(load_bundle(folder, key))  # verifies the signature and checksums
        assert runner.runtime == runtime and runner.ref == "fleet@2"
        np.testing.assert_allclose(runner.predict_batch(x), forward(params, x), rtol=1e-4, atol=1e-4)
    assert folders["litert"].parent.name == "tflite" and folders["litert"] != folders["onnxruntime"]
    with pytest.raises(ValueError, match="runtime='tensorrt'"):
        publish_federated_model(params, tmp_path, runtime="tensorrt")
