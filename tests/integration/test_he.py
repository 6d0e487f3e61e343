"""Real TenSEAL: encrypted aggregation and inference against plaintext; the server holds no secret key."""

import numpy as np
import pytest

from cloud.private.he import (
    SecretKeyOnServer,
    assert_cannot_decrypt,
    linear_batch,
    linear_vector,
    server_context,
    weighted_sum,
)
from edge.private.he import HEParams, KeyHolder

N8192_2_40 = HEParams(8192, (60, 40, 60), 40)


@pytest.fixture(scope="module")
def holder():
    return KeyHolder.create(N8192_2_40)


@pytest.fixture(scope="module")
def server(holder):
    return server_context(holder.public_context())


def test_encrypted_sum_and_fedavg_equal_plaintext_within_1e_6(holder, server):
    # Prepare: 8 clients' updates of 10,000 values (3 ciphertexts each at N=8192).
    rng = np.random.default_rng(0)
    updates = [rng.normal(0, 0.5, 10_000) for _ in range(8)]
    counts = rng.integers(50, 200, 8)
    sent = [holder.encrypt(u) for u in updates]
    # Execute: a plain sum (weights 1) and FedAvg weights n_k / n, both computed encrypted.
    total = holder.decrypt(weighted_sum(server, sent, [1.0] * 8), 10_000)
    average = holder.decrypt(weighted_sum(server, sent, list(counts / counts.sum())), 10_000)
    # Assert
    assert len(sent[0]) == 3
    assert np.abs(total - np.sum(updates, axis=0)).max() < 1e-6
    assert np.abs(average - np.average(updates, axis=0, weights=counts)).max() < 1e-6


@pytest.mark.parametrize("preset, bound", [("8192", 1e-4), ("4096", 5e-3)])
def test_encrypted_inference_agrees_with_plaintext(preset, bound):
    # Bounds: measured max |logit error| 3e-6 at N=8192 (2^40) and 5e-4 at N=4096 (2^30).
    from sklearn.linear_model import LogisticRegression

    from cloud.ml.data import digits_split

    split = digits_split(42)
    model = LogisticRegression(max_iter=2000, random_state=0).fit(split.x_train, split.y_train)
    weights, bias = model.coef_.T, model.intercept_
    keys = KeyHolder.create(preset)
    cloud = server_context(keys.public_context())
    x = split.x_test[:200]
    logits = keys.decrypt_columns(linear_batch(cloud, keys.encrypt_features(x), weights, bias), len(x))
    plain = x @ weights + bias
    assert np.abs(logits - plain).max() < bound
    assert np.array_equal(logits.argmax(1), model.predict(x))


def test_one_frame_vector_matrix_product_with_galois_keys():
    keys = KeyHolder.create("8192-depth2")
    cloud = server_context(keys.public_context())
    rng = np.random.default_rng(1)
    x, weights, bias = rng.random(64), rng.normal(size=(64, 10)), rng.normal(size=10)
    out = keys.decrypt([linear_vector(cloud, keys.encrypt(x)[0], weights, bias)], 10)
    assert np.abs(out - (x @ weights + bias)).max() < 1e-4


def test_server_context_has_no_secret_key_and_cannot_decrypt(holder, server):
    public = holder.public_context()
    assert not server.is_private() and not server.has_secret_key()
    assert len(public) < len(holder.shared_secret())
    message = assert_cannot_decrypt(server, holder.encrypt(np.arange(5.0))[0])
    assert "secret_key" in message
    with pytest.raises(SecretKeyOnServer, match="contains the secret key"):
        server_context(holder.shared_secret())
    # Without Galois keys (not needed for sums or the batched linear model) the context stays small.
    assert len(public) < 1_000_000
