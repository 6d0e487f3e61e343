"""`make bench-privacy`: DP-SGD epoch time against non-private, and CKKS costs for a 100,000-parameter update."""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from cloud.bench.report import Measure
from cloud.bench.tables import bench_table
from cloud.ml.data import digits_split
from cloud.private.dp import train_plain, train_private
from cloud.private.he import plain_sum, server_context, weighted_sum
from edge.private.he import PRESETS, HEParams, KeyHolder

UPDATE_SIZE = 100_000
CLIENTS = 10
TARGETS = {"dp_epoch_ratio": 2.5, "encrypt_s": 0.3, "bytes_ratio": 10.0, "dp_accuracy_gap_pt": 3.0}
DP_EPOCHS = 3
DP_NOISE = 1.0


def bench_dp(console, epochs: int = DP_EPOCHS, seed: int = 0) -> list[dict]:
    """Seconds per epoch of the digit CNN with and without DP-SGD (same data, batches, optimizer)."""
    split = digits_split(seed)
    data = (split.x_train, split.y_train, split.x_test, split.y_test)
    plain = train_plain(*data, epochs=epochs, seed=seed)
    rows = [{"setup": "no DP", "s_per_epoch": plain.seconds_per_epoch, "ratio": 1.0, "accuracy": plain.accuracy}]
    for physical, mode in ((64, "hooks"), (256, "hooks"), (256, "functorch")):
        dp = train_private(*data, noise_multiplier=DP_NOISE, epochs=epochs, seed=seed, max_physical_batch_size=physical,
                           grad_sample_mode=mode)
        rows.append({"setup": f"DP-SGD, {mode}, physical batch {physical}", "s_per_epoch": dp.seconds_per_epoch,
                     "ratio": dp.seconds_per_epoch / plain.seconds_per_epoch, "accuracy": dp.accuracy,
                     "epsilon": dp.epsilon.get("prv"), "delta": dp.delta})
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
    table = bench_table(f"DP-SGD epoch time (target ≤ {TARGETS['dp_epoch_ratio']}x non-private)",
                        [("setup", "text"), ("s/epoch", "number"), ("× plain", "number"), ("top-1", "number")])
    for row in dp:
        table.add_row(row["setup"], f"{row['s_per_epoch']:.3f}", f"{row['ratio']:.2f}", f"{row['accuracy']:.3f}")
    console.print(table)
    ckks = bench_ckks(console)
    table = bench_table(f"CKKS, {UPDATE_SIZE:,}-value update, {CLIENTS} clients (targets: encrypt ≤ "
                        f"{TARGETS['encrypt_s']} s, ≤ {TARGETS['bytes_ratio']:.0f}x float32)",
                        [("setup", "text"), ("enc s", "number"), ("MB", "number"), ("× f32", "number"),
                         (f"sum{CLIENTS} s", "number"), ("dec s", "number"), ("max err", "number")])
    for row in ckks:
        table.add_row(f"{row['setup']}: {row['params']}", f"{row['encrypt_s']:.3f}", f"{row['mb']:.2f}",
                      f"{row['bytes_ratio']:.1f}", f"{row['aggregate_s']:.3f}", f"{row['decrypt_s']:.3f}",
                      f"{row['max_error']:.1e}")
    console.print(table)
    best = min(dp[1:], key=lambda r: r["ratio"])
    default = next(r for r in ckks if r["setup"] == "depth 1 (kit)")
    smallest = min(ckks, key=lambda r: r["bytes_ratio"])
    run.write_json("bench-privacy.json", {"dp": dp, "ckks": ckks, "targets": TARGETS})
    return {"dp": dp, "ckks": ckks,
            "dp_epoch_ratio": best["ratio"], "dp_epoch_ratio_met": best["ratio"] <= TARGETS["dp_epoch_ratio"],
            "ckks_encrypt_s": default["encrypt_s"], "ckks_bytes_ratio": default["bytes_ratio"],
            "ckks_smallest_bytes_ratio": smallest["bytes_ratio"], "ckks_smallest_setup": smallest["setup"],
            "ckks_aggregate_10_s": default["aggregate_s"], "ckks_decrypt_s": default["decrypt_s"]}


def measures(result: dict) -> list[Measure]:
    """P5 and P6 of issue 14 from a main() result: CKKS size and encrypt time, DP-SGD time and accuracy."""
    kit = next(r for r in result["ckks"] if r["setup"] == "depth 1 (kit)")
    smallest = min(result["ckks"], key=lambda r: r["bytes_ratio"])
    plain = result["dp"][0]
    best = min(result["dp"][1:], key=lambda r: r["ratio"])
    float32_mb = 4 * UPDATE_SIZE / 1e6
    epsilon = f"ε = {best['epsilon']:.1f}" if best.get("epsilon") is not None else "ε not recorded"
    return [
        Measure("P5-size", f"CKKS {UPDATE_SIZE:,}-value update size", kit["mb"], "MB", baseline=float32_mb,
                baseline_name="float32", compare="ratio", op="<=", target=TARGETS["bytes_ratio"],
                note=f"kit parameters {kit['params']}, {kit['ciphertexts']} ciphertexts; smallest set: "
                     f"{smallest['setup']} at {smallest['bytes_ratio']:.1f}x"),
        Measure("P5-enc", f"CKKS encrypt, {UPDATE_SIZE:,} values", kit["encrypt_s"], "s",
                target=TARGETS["encrypt_s"], note=f"kit parameters {kit['params']}, one client's update"),
        Measure("P6-time", "DP-SGD epoch time", best["s_per_epoch"], "s", baseline=plain["s_per_epoch"],
                baseline_name="non-private", compare="ratio", op="<=", target=TARGETS["dp_epoch_ratio"],
                note=f"fastest setup: {best['setup']}; digit CNN, same data, batches and optimizer"),
        Measure("P6-acc", f"DP-SGD top-1 at {epsilon}", best["accuracy"] * 100, "%", baseline=plain["accuracy"] * 100,
                baseline_name="non-private", compare="points", op=">=", target=-TARGETS["dp_accuracy_gap_pt"],
                note=f"{best['setup']}, noise multiplier {DP_NOISE:g}, {DP_EPOCHS} epochs, δ = {best.get('delta')}, "
                     "PRV accountant; a drop of at most 3 points meets the target"),
    ]
