"""`make bench-privacy`: DP-SGD epoch time against non-private, and CKKS costs for a 100,000-parameter update."""

from __future__ import annotations

import os
import platform
import time

import numpy as np
from rich.table import Table

from cloud.ml.data import digits_split
from cloud.private.dp import train_plain, train_private
from cloud.private.he import plain_sum, server_context, weighted_sum
from edge.private.he import PRESETS, HEParams, KeyHolder

UPDATE_SIZE = 100_000
CLIENTS = 10
TARGETS = {"dp_epoch_ratio": 2.5, "encrypt_s": 0.3, "bytes_ratio": 10.0}


def bench_dp(console, epochs: int = 3, seed: int = 0) -> list[dict]:
    """Seconds per epoch of the digit CNN with and without DP-SGD (same data, batches, optimizer)."""
    split = digits_split(seed)
    data = (split.x_train, split.y_train, split.x_test, split.y_test)
    plain = train_plain(*data, epochs=epochs, seed=seed)
    rows = [{"setup": "no DP", "s_per_epoch": plain.seconds_per_epoch, "ratio": 1.0, "accuracy": plain.accuracy}]
    for physical, mode in ((64, "hooks"), (256, "hooks"), (256, "functorch")):
        dp = train_private(*data, noise_multiplier=1.0, epochs=epochs, seed=seed, max_physical_batch_size=physical,
                           grad_sample_mode=mode)
        rows.append({"setup": f"DP-SGD, {mode}, physical batch {physical}", "s_per_epoch": dp.seconds_per_epoch,
                     "ratio": dp.seconds_per_epoch / plain.seconds_per_epoch, "accuracy": dp.accuracy})
    return rows


def bench_ckks(console, seed: int = 0) -> list[dict]:
    """Encrypt, aggregate (10 clients) and decrypt a 100,000-value update under several CKKS parameter sets."""
    rng = np.random.default_rng(seed)
    updates = [rng.normal(0, 0.05, UPDATE_SIZE) for _ in range(CLIENTS)]
    counts = rng.integers(100, 200, CLIENTS)
    weights = counts / counts.sum()
    reference = np.average(updates, axis=0, weights=counts)
    setups = [
        ("tutorial depth 2", PRESETS["8192-depth2"], "server weights"),
        ("depth 1 (kit)", PRESETS["8192"], "server weights"),
        ("depth 1", PRESETS["4096"], "server weights"),
        # Depth 0: the server may only add. Clients multiply their update by n_k/n before encrypting.
        ("depth 0, pre-weighted", HEParams(8192, (60, 60), 40), "server adds"),
    ]
    rows = []
    for name, params, mode in setups:
        holder = KeyHolder.create(params)
        server = server_context(holder.public_context())
        start = time.perf_counter()
        first = holder.encrypt(updates[0] * (weights[0] if mode == "server adds" else 1.0))
        encrypt_s = time.perf_counter() - start
        sent = [first] + [holder.encrypt(u * (w if mode == "server adds" else 1.0))
                          for u, w in zip(updates[1:], weights[1:])]
        start = time.perf_counter()
        total = plain_sum(server, sent) if mode == "server adds" else weighted_sum(server, sent, list(weights))
        aggregate_s = time.perf_counter() - start
        start = time.perf_counter()
        average = holder.decrypt(total, UPDATE_SIZE)
        decrypt_s = time.perf_counter() - start
        size = sum(map(len, first))
        rows.append({"setup": name, "params": params.describe(), "aggregation": mode, "ciphertexts": len(first),
                     "encrypt_s": encrypt_s, "mb": size / 1e6, "bytes_ratio": size / (4 * UPDATE_SIZE),
                     "aggregate_s": aggregate_s, "decrypt_s": decrypt_s,
                     "max_error": float(np.abs(average - reference).max()),
                     "public_context_mb": len(holder.public_context()) / 1e6})
    return rows


def main(run, console, *args: str) -> dict:
    """Run both benchmarks, print two tables, write bench-privacy.json; returns the headline numbers."""


    console.print(f"[bold]bench privacy[/] on {platform.machine()} {platform.system()}, "
                  f"{os.cpu_count()} CPUs; DP model: the digit CNN on 1,167 images")
    dp = bench_dp(console)
    table = Table(title=f"DP-SGD epoch time (target ≤ {TARGETS['dp_epoch_ratio']}x non-private)")
    for column in ("setup", "s/epoch", "x non-private", "accuracy"):
        table.add_column(column)
    for row in dp:
        table.add_row(row["setup"], f"{row['s_per_epoch']:.3f}", f"{row['ratio']:.2f}", f"{row['accuracy']:.3f}")
    console.print(table)
    ckks = bench_ckks(console)
    table = Table(title=f"CKKS, {UPDATE_SIZE:,}-value update, {CLIENTS} clients (targets: encrypt ≤ "
                        f"{TARGETS['encrypt_s']} s, ≤ {TARGETS['bytes_ratio']:.0f}x float32)")
    for column in ("setup", "encrypt s", "MB", "x float32", f"sum {CLIENTS} s", "decrypt s", "max err"):
        table.add_column(column)
    for row in ckks:
        table.add_row(f"{row['setup']}: {row['params']}", f"{row['encrypt_s']:.3f}", f"{row['mb']:.2f}",
                      f"{row['bytes_ratio']:.1f}", f"{row['aggregate_s']:.3f}", f"{row['decrypt_s']:.3f}",
                      f"{row['max_error']:.1e}")
    console.print(table)
    best = min(dp[1:], key=lambda r: r["ratio"])
    default = next(r for r in ckks if r["setup"] == "depth 1 (kit)")
    smallest = min(ckks, key=lambda r: r["bytes_ratio"])
    run.write_json("bench-privacy.json", {"dp": dp, "ckks": ckks, "targets": TARGETS})
    return {"dp_epoch_ratio": best["ratio"], "dp_epoch_ratio_met": best["ratio"] <= TARGETS["dp_epoch_ratio"],
            "ckks_encrypt_s": default["encrypt_s"], "ckks_bytes_ratio": default["bytes_ratio"],
            "ckks_smallest_bytes_ratio": smallest["bytes_ratio"], "ckks_smallest_setup": smallest["setup"],
            "ckks_aggregate_10_s": default["aggregate_s"], "ckks_decrypt_s": default["decrypt_s"]}
