"""Lab 10: homomorphic encryption - encrypted inference and encrypted aggregation with TenSEAL CKKS."""

from __future__ import annotations

import time

import numpy as np

from cloud.labkit.plots import _pyplot
from cloud.ml.data import digits_split
from cloud.private.he import (
    SecretKeyOnServer,
    assert_cannot_decrypt,
    linear_batch,
    linear_vector,
    plain_sum,
    server_context,
    weighted_sum,
)
from edge.federated.mlp import PARAM_NAMES, evaluate, init_params, train_sgd, weighted_average
from edge.private.he import KeyHolder, flatten, unflatten

# Imported inside the functions that use them, to keep this module quick to import: sklearn.

TITLE = "Homomorphic encryption: encrypted inference and aggregation with CKKS (TenSEAL)"
DEFAULTS = {
    "seed": 42,
    "samples": 450,  # test frames sent encrypted in one batch (≤ N/2 = 2048 at N=4096)
    "clients": 10,  # devices whose model updates are aggregated encrypted
    "single": True,  # also time one frame through a vector-matrix product (needs Galois keys)
}
QUICK = {"samples": 100, "clients": 4}


def train_model(ctx, split):
    """The plaintext model the cloud owns: multinomial logistic regression on the digits."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=2000, random_state=ctx.seed).fit(split.x_train, split.y_train)
    return model.coef_.T.copy(), model.intercept_.copy()  # W: 64 x 10, b: 10


def keys_and_server(ctx, holders) -> dict:
    """What the cloud receives from each key holder, and proof that it cannot decrypt."""
    ctx.step("1. Keys stay on the device: what the cloud receives")
    rows, servers = [], {}
    for name, holder in holders.items():
        public = holder.public_context()
        servers[name] = server_context(public)
        refused = assert_cannot_decrypt(servers[name], holder.encrypt(np.ones(4))[0])
        try:
            server_context(holder.shared_secret())
            guarded = "NO"
        except SecretKeyOnServer:
            guarded = "refused"
        rows.append([holder.params.describe(), holder.params.slots, holder.params.depth,
                     f"{len(public) / 1e6:.2f}", f"{len(holder.shared_secret()) / 1e6:.2f}", guarded])
    ctx.table("Contexts (MB): the cloud gets the public one",
              ["parameters", "slots", "depth", "public", "with secret key", "secret to cloud"], rows)
    ctx.console.print(f"decrypting on the server: ValueError: {refused}")
    return servers


def inference(ctx, split, holders, servers, weights, bias) -> dict:
    """Encrypted batch of frames -> cloud's linear model -> device decrypts and applies softmax."""
    n = ctx.args["samples"]
    ctx.step(f"2. Encrypted inference: {n} frames, feature-major packing, logistic regression in the cloud")
    x, y = split.x_test[:n], split.y_test[:n]
    plain = x @ weights + bias  # n, 10
    rows, results = [], {}
    for name, holder in holders.items():
        t0 = time.perf_counter()
        up = holder.encrypt_features(x)  # 64 ciphertexts, one per pixel, each holding n frames
        t1 = time.perf_counter()
        down = linear_batch(servers[name], up, weights, bias)  # 10 ciphertexts, one per class
        t2 = time.perf_counter()
        logits = holder.decrypt_columns(down, n)
        t3 = time.perf_counter()
        error = float(np.abs(logits - plain).max())
        agree = float((logits.argmax(1) == plain.argmax(1)).mean())
        results[name] = {"error": error, "agree": agree, "accuracy": float((logits.argmax(1) == y).mean())}
        rows.append([f"N={holder.params.poly_modulus_degree}", f"{error:.1e}", agree, results[name]["accuracy"],
                     f"{(t1 - t0) / n * 1e3:.2f} / {(t2 - t1) / n * 1e3:.2f} / {(t3 - t2) / n * 1e3:.3f}",
                     f"{sum(map(len, up)) / n / 1e3:.1f} / {sum(map(len, down)) / n / 1e3:.2f}"])
    ctx.table(f"Encrypted vs plaintext logistic regression ({n} frames; plaintext accuracy "
              f"{float((plain.argmax(1) == y).mean()):.3f}); per-frame ms and kB",
              ["ring", "max |logit err|", "same class", "accuracy", "ms: encrypt / cloud / decrypt",
               "kB: up / down"], rows)
    return results


def single_frame(ctx, split, weights, bias) -> dict:
    """One frame in one ciphertext: the vector-matrix product needs rotations, so Galois keys."""
    ctx.step("3. One frame at a time: vector-matrix product with Galois keys")
    holder = KeyHolder.create("8192-depth2")
    public = holder.public_context()
    server = server_context(public)
    x = split.x_test[0]
    t0 = time.perf_counter()
    up = holder.encrypt(x)[0]
    t1 = time.perf_counter()
    down = linear_vector(server, up, weights, bias)
    t2 = time.perf_counter()
    logits = holder.decrypt([down], weights.shape[1])
    error = float(np.abs(logits - (x @ weights + bias)).max())
    ctx.table("One frame, N=8192 [60,40,40,60] 2^40 with Galois keys",
              ["public ctx MB", "encrypt ms", "cloud ms", "kB up", "kB down", "max |logit err|"],
              [[f"{len(public) / 1e6:.1f}", f"{(t1 - t0) * 1e3:.1f}", f"{(t2 - t1) * 1e3:.0f}",
                f"{len(up) / 1e3:.0f}", f"{len(down) / 1e3:.0f}", f"{error:.1e}"]])
    return {"single_error": error, "single_cloud_ms": (t2 - t1) * 1e3, "galois_context_mb": len(public) / 1e6}


def aggregation(ctx, split, holders, servers) -> dict:
    """Devices' MLP updates encrypted, averaged by the cloud without decrypting, decrypted by a key holder."""
    k = ctx.args["clients"]
    ctx.step(f"4. Encrypted aggregation: FedAvg of {k} devices' MLP weights")
    start = init_params(seed=ctx.seed)
    shards = np.array_split(np.random.default_rng(ctx.seed).permutation(len(split.x_train)), k)
    local = [train_sgd(start, split.x_train[s], split.y_train[s], epochs=20, lr=0.2, seed=ctx.seed + i)[0]
             for i, s in enumerate(shards)]
    counts = [len(s) for s in shards]
    reference = weighted_average(local, counts)
    size = flatten(reference, PARAM_NAMES).size
    rows, results = [], {}
    for name, holder in holders.items():
        shares = [c / sum(counts) for c in counts]  # FedAvg weights n_k / n
        preweighted = holder.params.depth == 0  # no level to multiply on the server: clients weight first
        t0 = time.perf_counter()
        sent = [holder.encrypt(flatten(p, PARAM_NAMES) * (w if preweighted else 1.0)) for p, w in zip(local, shares)]
        t1 = time.perf_counter()
        total = plain_sum(servers[name], sent) if preweighted else weighted_sum(servers[name], sent, shares)
        t2 = time.perf_counter()
        average = unflatten(holder.decrypt(total, size), reference, PARAM_NAMES)
        t3 = time.perf_counter()
        error = max(float(np.abs(average[p] - reference[p]).max()) for p in PARAM_NAMES)
        accuracy = evaluate(average, split.x_test, split.y_test)[1]
        per_client = sum(map(len, sent[0]))
        results[name] = {"error": error, "accuracy": accuracy, "ratio": per_client / (4 * size)}
        rows.append([name, len(sent[0]), f"{per_client / 1e3:.0f}",
                     f"{per_client / (4 * size):.1f}x",
                     f"{(t1 - t0) / k * 1e3:.1f} / {(t2 - t1) * 1e3:.1f} / {(t3 - t2) * 1e3:.1f}",
                     f"{error:.1e}", accuracy])
    ctx.table(f"FedAvg of {size:,} weights: encrypted vs plaintext (plaintext accuracy "
              f"{evaluate(reference, split.x_test, split.y_test)[1]:.4f})",
              ["preset", "cts", "kB", "× f32", "ms: enc / cloud / dec", "max |err|", "top-1"], rows)
    return results


def plot(ctx, infer, agg) -> None:
    """Error of encrypted inference and aggregation for each preset (log scale)."""
    plt = _pyplot()
    names = list(agg)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    pos = np.arange(len(names))
    ax.bar(pos[:len(infer)] - 0.2, [infer[n]["error"] for n in names if n in infer], 0.4,
           label="inference: max |logit error|")
    ax.bar(pos + 0.2, [agg[n]["error"] for n in names], 0.4, label="aggregation: max |weight error|")
    ax.set(yscale="log", xticks=pos, xticklabels=names, ylabel="absolute error",
           title="CKKS error against plaintext")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ctx.save_plot(fig, "ckks_error")


def run(ctx) -> dict:
    """Keys, encrypted inference at N = 4096 and 8192, one-frame inference, encrypted aggregation with the kit's preset too."""
    split = digits_split(ctx.seed)
    weights, bias = train_model(ctx, split)
    # Inference needs room for logits (|value| < 256 at "4096") and one multiplication; the FedAvg
    # presets hold model weights only, and "4096-preweighted" has no multiplication at all.
    names = ("4096", "8192", "4096-fedavg", "4096-preweighted")
    holders = {name: KeyHolder.create(name) for name in names}
    servers = keys_and_server(ctx, holders)
    inference_names = ["4096", "8192"]
    infer = inference(ctx, split, {n: holders[n] for n in inference_names},
                      {n: servers[n] for n in inference_names}, weights, bias)
    single = single_frame(ctx, split, weights, bias) if ctx.args["single"] else {}
    agg = aggregation(ctx, split, holders, servers)
    plot(ctx, infer, agg)
    metrics = {f"inference_error_{n}": r["error"] for n, r in infer.items()}
    metrics |= {f"inference_agreement_{n}": r["agree"] for n, r in infer.items()}
    metrics |= {f"aggregation_error_{n}": r["error"] for n, r in agg.items()}
    metrics |= {f"aggregation_bytes_ratio_{n}": r["ratio"] for n, r in agg.items()}
    metrics |= {f"aggregation_accuracy_{n}": r["accuracy"] for n, r in agg.items()}
    return metrics | single
