"""Edge runtime benchmark: torch eager vs ONNX Runtime and LiteRT (fp32, int8) on the same digits inputs.

``main(run, console)`` is what ``cloud bench edge`` / ``make bench-edge`` calls. Lab 04 compares its
runtimes with the same ``compare_runtimes``; the models and bundles come from cloud.ml.edge_artifacts.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cloud.bench.report import Measure
from cloud.bench.tables import bench_table
from cloud.labkit.runner import parse_args
from cloud.ml.data import DigitsSplit, as_images, digits_split
from cloud.ml.edge_artifacts import (
    EdgeModels,
    get_models,
    publish_digits_bundles,
    set_single_thread,
)
from cloud.ml.publish import ensure_signing_key
from cloud.settings import StackSettings
from edge.machine import machine_name
from edge.serving.bundle import load_bundle
from edge.serving.keys import PUBLIC_KEY_FILE, load_public_key
from edge.serving.runners import open_runner

# Imported inside the functions that use them, to keep this module quick to import: matplotlib, torch.

TORCH_EAGER = "torch eager fp32"
RUNTIME_LABELS = {
    "onnx-fp32": "ONNX Runtime fp32",
    "onnx-int8": "ONNX Runtime int8",
    "tflite-fp32": "LiteRT fp32",
    "tflite-int8": "LiteRT int8",
}


def latencies_us(predict_one: Callable[[np.ndarray], Any], x: np.ndarray, repeats: int, warmup: int = 50) -> np.ndarray:
    """Per-call latency in microseconds of predict_one over samples of x (warm-up calls not counted)."""
    for i in range(warmup):
        predict_one(x[i % len(x)])
    times = np.empty(repeats)
    clock = time.perf_counter_ns
    for i in range(repeats):
        sample = x[i % len(x)]
        start = clock()
        predict_one(sample)
        times[i] = (clock() - start) / 1e3
    return times


def throughput(predict_batch: Callable[[np.ndarray], Any], batch: np.ndarray, seconds: float = 0.3) -> float:
    """Samples per second of predict_batch on one batch, repeated for at least ``seconds`` (one warm-up)."""
    predict_batch(batch)
    calls, start = 0, time.perf_counter()
    while True:
        predict_batch(batch)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls * len(batch) / elapsed


def torch_file_bytes(model) -> int:
    """Size of the torch state dict as torch.save writes it."""
    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def compare_runtimes(models: EdgeModels, bundles: dict[str, Path], split: DigitsSplit, public_key,
                     repeats: int = 2000, rounds: int = 3, batch_size: int = 256,
                     extra: dict[str, Path] | None = None) -> list[dict[str, Any]]:
    """One row per runtime: size, accuracy, agreement with its source model, p50/p99 latency, batch rate.

    Latency rounds interleave the runtimes, so a burst of load on a shared CPU hits all of them.
    ``extra`` adds more bundles (e.g. dynamic quantization) by label.
    """
    import torch

    set_single_thread()
    x, y = split.x_test, split.y_test  # N, 64 and N
    batch = np.resize(x, (batch_size, x.shape[1])).astype(np.float32)  # the test frames, repeated to fill it
    torch_model = models.torch_model.eval()
    with torch.inference_mode():
        torch_logits = torch_model(torch.from_numpy(as_images(x))).numpy()
    keras_logits = np.asarray(models.keras_model(as_images(x, "NHWC"), training=False))

    def torch_one(sample: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch_model(torch.from_numpy(sample.reshape(1, 1, 8, 8))).numpy()

    def torch_batch(samples: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch_model(torch.from_numpy(as_images(samples))).numpy()

    entries = [(TORCH_EAGER, torch_one, torch_batch, torch_logits, torch_logits, torch_file_bytes(torch_model), "torch")]
    labelled = {RUNTIME_LABELS.get(k, k): p for k, p in bundles.items()}
    labelled.update(extra or {})
    for label, path in labelled.items():
        runner = open_runner(load_bundle(path, public_key), num_threads=1)
        # LiteRT's source is the Keras twin: the torch weights, NHWC (logits agree with torch to about 1e-7).
        reference = torch_logits if runner.bundle.manifest.runtime == "onnxruntime" else keras_logits
        size = runner.bundle.model_path.stat().st_size
        entries.append((label, runner.predict_one, runner.predict_batch, runner.predict_batch(x), reference, size,
                        runner.bundle.ref))

    samples = {label: [] for label, *_ in entries}
    per_round = max(1, repeats // rounds)
    for _ in range(rounds):
        for label, one, *_ in entries:
            samples[label].append(latencies_us(one, x, per_round))
    rows = []
    for label, one, many, logits, reference, size, source in entries:
        lat = np.concatenate(samples[label])
        rows.append({
            "runtime": label,
            "model": source,
            "size_kb": size / 1024,
            "accuracy": float((logits.argmax(1) == y).mean()),
            "agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(logits - reference).max()),
            "p50_us": float(np.percentile(lat, 50)),
            "p99_us": float(np.percentile(lat, 99)),
            "batch_per_s": throughput(many, batch),
        })
    eager = rows[0]
    for row in rows:
        row["speedup_p50"] = eager["p50_us"] / row["p50_us"]
        row["throughput_ratio"] = row["batch_per_s"] / eager["batch_per_s"]
    return rows


def check_targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets: best edge runtime >= 5x torch eager; int8 no slower, within 1 point, >= 3x smaller."""
    by = {r["runtime"]: r for r in rows}
    edge_rows = [r for r in rows if r["runtime"] in RUNTIME_LABELS.values()]
    best = max(edge_rows, key=lambda r: r["speedup_p50"])
    result: dict[str, Any] = {"best_runtime": best["runtime"], "best_speedup": best["speedup_p50"],
                              "best_speedup_ok": best["speedup_p50"] >= 5.0}
    for family in ("ONNX Runtime", "LiteRT"):
        fp32, int8 = by[f"{family} fp32"], by[f"{family} int8"]
        key = "onnx" if family == "ONNX Runtime" else "tflite"
        result[f"{key}_int8_latency_ratio"] = int8["p50_us"] / fp32["p50_us"]
        result[f"{key}_int8_accuracy_drop"] = fp32["accuracy"] - int8["accuracy"]
        result[f"{key}_int8_size_ratio"] = fp32["size_kb"] / int8["size_kb"]
        result[f"{key}_int8_ok"] = (int8["p50_us"] <= fp32["p50_us"] * 1.0
                                    and fp32["accuracy"] - int8["accuracy"] <= 0.01
                                    and fp32["size_kb"] / int8["size_kb"] >= 3.0)
    return result


# Short headers so the table fits 80 columns: |diff| is the largest logit difference from the source model,
# × eager is torch eager p50 / runtime p50.
TABLE_COLUMNS = ("runtime", "KB", "top-1", "agree", "|diff|", "p50 µs", "p99 µs", "batch/s", "× eager")
# Issue 14's targets for `make bench`; check_targets keeps lab 04's.
TARGETS = {"ort_speedup": 10.0, "int8_latency_ratio": 1.0, "litert_top1_gap_pt": 0.5}


# Why int8 lands where it does on one 8x8 sample (profiled; edge.serving.runners' docstring has the numbers).
INT8_WHY = {
    "ort": "ORT's optimized int8 graph runs 10 kernels (Quantize, 2 Transposes NCHW<->NHWC, 2 QLinearConv, "
           "max-pool, Reshape, 2 QGemm, Dequantize) against fp32's 7; each costs 1-3 µs of fixed overhead, "
           "more than int8 saves; QDQ/QOperator, s8/u8 activations, per-channel/per-tensor all measured 1.1-1.2x",
    "lite": "full-integer with float input/output (quantize inside the graph, XNNPACK int8 kernels); "
            "int8 input/output quantized in numpy cost about 15 µs around a 6 µs invoke",
}
P1_WHY = ("runner: pre-bound IOBinding through the C session (no feed dict, no per-call validation, no allocation); "
          "what is left is ORT's 7 kernels (NCHWc Conv, Conv, MaxPool, ReorderOutput, Reshape, FusedGemm, Gemm) "
          "plus about 2 µs of Python call")


def table_rows(rows: list[dict[str, Any]]) -> list[list[Any]]:
    """Rows for a rich table, formatted."""
    return [[r["runtime"], f"{r['size_kb']:.1f}", f"{r['accuracy']:.4f}", f"{r['agreement']:.4f}",
             f"{r['max_abs_diff']:.2g}", f"{r['p50_us']:.1f}", f"{r['p99_us']:.1f}",
             f"{r['batch_per_s']:,.0f}", f"{r['speedup_p50']:.1f}"] for r in rows]


def plot_tradeoffs(rows: list[dict[str, Any]]):
    """Accuracy against p50 latency and against file size, one point per runtime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    markers = "osD^v<>p*"
    for i, r in enumerate(rows):
        style = {"s": 60, "marker": markers[i % len(markers)], "label": r["runtime"]}
        left.scatter(r["p50_us"], r["accuracy"], **style)
        right.scatter(r["size_kb"], r["accuracy"], **style)
    left.set(xscale="log", xlabel="single-sample p50 latency (µs, log, 1 thread)", ylabel="top-1 accuracy (test split)",
             title="accuracy vs latency")
    right.set(xscale="log", xlabel="model file size (KB, log)", title="accuracy vs size")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def print_table(console, title: str, rows: list[dict[str, Any]]) -> None:
    """Print the comparison as a table that fits 80 columns."""
    table = bench_table(title, [(c, "text" if c == "runtime" else "number") for c in TABLE_COLUMNS])
    for row in table_rows(rows):
        table.add_row(*row)
    console.print(table)


def main(run, console, *tokens: str) -> dict[str, Any]:
    """Run the edge benchmark into a run folder: table (printed and JSON), plot, and the targets.

    ``tokens`` are ``key=value`` overrides: ``quick=1`` (4 epochs, 300 repeats), ``seed=42``,
    ``repeats=3000``.
    """
    options = parse_args(tokens, {"quick": False, "seed": 42, "repeats": 0})  # repeats 0: by mode
    quick, seed = options["quick"], options["seed"]
    repeats = options["repeats"] or (300 if quick else 3000)

    started = time.monotonic()
    console.print(f"machine: {machine_name()}")
    split = digits_split(seed)
    models = get_models(StackSettings().artifacts_dir, split, seed=seed, epochs=4 if quick else 15)
    console.print(models.origin)
    # Bundles for the benchmark live in the run folder, signed by a key kept there too.
    key = ensure_signing_key(run.path)
    bundles = publish_digits_bundles(models, split, run.path / "bundles", key, seed=seed)
    public_key = load_public_key(run.path / "bundles" / PUBLIC_KEY_FILE)
    rows = compare_runtimes(models, bundles, split, public_key, repeats=repeats)
    targets = check_targets(rows)
    print_table(console, "edge runtimes, digits CNN, 1 thread (ratios vs torch eager)", rows)
    console.print(
        f"best edge runtime: {targets['best_runtime']} at {targets['best_speedup']:.1f}x torch eager "
        f"(target >= 5x: {'met' if targets['best_speedup_ok'] else 'NOT met'}); "
        f"ONNX int8: {targets['onnx_int8_latency_ratio']:.2f}x fp32 latency, "
        f"{targets['onnx_int8_size_ratio']:.1f}x smaller, accuracy drop {targets['onnx_int8_accuracy_drop']:+.4f}; "
        f"LiteRT int8: {targets['tflite_int8_latency_ratio']:.2f}x fp32 latency, "
        f"{targets['tflite_int8_size_ratio']:.1f}x smaller, accuracy drop {targets['tflite_int8_accuracy_drop']:+.4f}"
    )
    console.print(f"ONNX Runtime fp32: {P1_WHY}\nONNX Runtime int8: {INT8_WHY['ort']}\nLiteRT int8: {INT8_WHY['lite']}")
    result = {"machine": machine_name(), "rows": rows, "targets": targets,
              "seconds": round(time.monotonic() - started, 1)}
    run.write_json("bench_edge.json", result)
    plot = run.save_plot(plot_tradeoffs(rows), "edge_tradeoffs")
    console.print(f"table: {run.path / 'bench_edge.json'}\nplot: {plot}")
    return result


def measures(result: dict[str, Any]) -> list[Measure]:
    """P1, P1b, P1c of issue 14 from a main() result: p50 against torch eager, int8 against fp32, LiteRT top-1."""
    by = {r["runtime"]: r for r in result["rows"]}
    eager = by[TORCH_EAGER]
    out = []
    for key, label in (("ort", "ONNX Runtime fp32"), ("lite", "LiteRT fp32")):
        target = TARGETS["ort_speedup"] if key == "ort" else None
        out.append(Measure(f"P1-{key}", f"single-sample p50, {label}", by[label]["p50_us"], "µs",
                           baseline=eager["p50_us"], baseline_name="torch eager", compare="speedup", op=">=",
                           target=target, note="1 thread, interleaved rounds; ratio = torch p50 / runtime p50"
                           + (f"; {P1_WHY}" if target else "; issue 14 sets the target on ONNX Runtime only")))
    for key, family in (("ort", "ONNX Runtime"), ("lite", "LiteRT")):
        fp32, int8 = by[f"{family} fp32"], by[f"{family} int8"]
        out.append(Measure(f"P1b-{key}", f"int8 p50, {family}", int8["p50_us"], "µs", baseline=fp32["p50_us"],
                           baseline_name=f"{family} fp32", compare="ratio", op="<=",
                           target=TARGETS["int8_latency_ratio"],
                           note=f"int8 top-1 {int8['accuracy']:.4f} vs fp32 {fp32['accuracy']:.4f}; "
                                f"{fp32['size_kb'] / int8['size_kb']:.1f}x smaller; " + INT8_WHY[key]))
    lite = by["LiteRT fp32"]
    out.append(Measure("P1c", "top-1, LiteRT fp32", lite["accuracy"] * 100, "%", baseline=eager["accuracy"] * 100,
                       baseline_name="torch eager", compare="points", op="within",
                       target=TARGETS["litert_top1_gap_pt"],
                       note="LiteRT runs the torch CNN's own weights (its Keras twin, NHWC); it agrees with "
                            f"torch on {lite['agreement']:.2%} of the test digits"))
    return out
