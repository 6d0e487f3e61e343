"""Lab 04: export lab 03's CNNs for the edge (ONNX, TFLite), quantize them to int8, measure, publish signed bundles."""

from __future__ import annotations

import tempfile
from pathlib import Path

from cloud.bench import edge as be
from cloud.ml.data import digits_split
from cloud.ml.edge_artifacts import get_models, publish_digits_bundles
from cloud.ml.export import export_onnx, quantize_onnx_dynamic
from cloud.ml.publish import bundles_dir, ensure_signing_key, publish_model_file
from edge.machine import machine_name
from edge.serving.bundle import load_bundle
from edge.serving.keys import PUBLIC_KEY_FILE, fingerprint, load_public_key
from edge.serving.sources import FRAMES_FILE

TITLE = "Export and quantize for the edge: ONNX and TFLite, fp32 and int8, signed bundles"
DEFAULTS = {
    "seed": 42,
    "epochs": 15,  # torch epochs when lab 03's models are not there
    "keras_epochs": 10,  # ignored: the TFLite bundles carry the torch CNN's weights (kept so old ARGS still parse)
    "calibration": 256,  # calibration / representative samples from the training split
    "repeats": 3000,  # single-sample latency measurements per runtime
    "version": 1,  # version of the published bundles
}
QUICK = {"epochs": 4, "keras_epochs": 4, "repeats": 300}


def run(ctx) -> dict:
    """Models -> ONNX/TFLite fp32 and int8 -> signed bundles -> trade-off table, plot and targets."""
    args = ctx.args
    split = digits_split(ctx.seed)
    ctx.console.print(f"machine: {machine_name()}")

    ctx.step("1. The trained CNNs")
    models = get_models(ctx.settings.artifacts_dir, split, seed=ctx.seed, epochs=args["epochs"],
                           keras_epochs=args["keras_epochs"])
    ctx.console.print(models.origin)

    ctx.step("2. Export, quantize and publish signed bundles")
    key = ensure_signing_key(ctx.settings.artifacts_dir)
    out = bundles_dir(ctx.settings.artifacts_dir)
    bundles = publish_digits_bundles(models, split, out, key, version=args["version"],
                                        calibration_samples=args["calibration"], seed=ctx.seed)
    public = load_public_key(out / PUBLIC_KEY_FILE)
    rows = []
    for kind, path in bundles.items():
        bundle = load_bundle(path, public)  # the device-side check, run here once
        m = bundle.manifest
        rows.append([m.ref, m.runtime, m.precision, f"{m.inputs[0].shape} {m.inputs[0].dtype}",
                     f"{bundle.model_path.stat().st_size / 1024:.1f}", m.files[m.model_file].sha256[:12]])
    ctx.table(f"signed bundles in {out} (key {fingerprint(public)})",
              ["bundle", "runtime", "precision", "input", "KB", "sha256"], rows)
    ctx.console.print(f"devices need: {out / PUBLIC_KEY_FILE} and the bundle folders; "
                      f"frames for simulated devices: {out / FRAMES_FILE}")

    ctx.step("3. Dynamic quantization, for contrast")
    extra = dynamic_quantization_bundles(models, ctx.run.path / "dynamic", key)
    ctx.console.print("dynamic int8 stores int8 weights and quantizes activations at run time; "
                      "see the table: ConvInteger kernels are slow on this CPU, MatMul-only keeps fp32 speed")

    ctx.step("4. The trade-off table (1 thread, same test inputs)")
    results = be.compare_runtimes(models, bundles, split, public, repeats=args["repeats"], extra=extra)
    be.print_table(ctx.console, "digits CNN on the edge runtimes (× eager = torch p50 / runtime p50)", results)
    ctx.run.write_json("tradeoffs.json", {"machine": machine_name(), "rows": results})
    ctx.save_plot(be.plot_tradeoffs(results), "tradeoffs")

    ctx.step("5. Targets")
    targets = be.check_targets(results)
    verdict = {True: "[green]met[/]", False: "[yellow]not met[/]"}
    ctx.console.print(f"best edge runtime {targets['best_runtime']}: {targets['best_speedup']:.1f}x faster than torch "
                      f"eager (target 5x) {verdict[targets['best_speedup_ok']]}")
    for family, label in (("onnx", "ONNX Runtime"), ("tflite", "LiteRT")):
        ctx.console.print(
            f"{label} int8 vs fp32: latency x{targets[f'{family}_int8_latency_ratio']:.2f}, "
            f"{targets[f'{family}_int8_size_ratio']:.1f}x smaller, top-1 change "
            f"{-targets[f'{family}_int8_accuracy_drop']:+.4f} (targets: no slower, >= 3x smaller, within 0.01) "
            f"{verdict[targets[f'{family}_int8_ok']]}")

    by = {r["runtime"]: r for r in results}
    short = {be.TORCH_EAGER: "torch", **{v: k.replace("-", "_") for k, v in be.RUNTIME_LABELS.items()}}
    metrics = {"models": models.origin, "bundles_dir": str(out), "public_key": fingerprint(public)}
    for label, name in short.items():
        r = by[label]
        metrics.update({f"{name}_accuracy": r["accuracy"], f"{name}_agreement": r["agreement"],
                        f"{name}_max_abs_diff": r["max_abs_diff"], f"{name}_size_kb": r["size_kb"],
                        f"{name}_p50_us": r["p50_us"], f"{name}_p99_us": r["p99_us"],
                        f"{name}_batch_per_s": r["batch_per_s"], f"{name}_speedup": r["speedup_p50"]})
    for label in extra:
        metrics[f"{_slug(label)}_p50_us"] = by[label]["p50_us"]
    metrics.update({k: v for k, v in targets.items()})
    return metrics


DYNAMIC_LABELS = ("ORT dynamic int8, conv+matmul", "ORT dynamic int8, matmul only")


def _slug(label: str) -> str:
    """'ORT dynamic int8, matmul only' -> 'ort_dynamic_int8_matmul_only'."""
    return "".join(c if c.isalnum() else "_" for c in label.lower()).replace("__", "_")


def dynamic_quantization_bundles(models, out_dir: Path, key) -> dict[str, Path]:
    """Two dynamically quantized ONNX bundles (all ops; MatMul/Gemm only), signed, in the run folder."""
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(models.torch_model, Path(tmp) / "model.onnx")
        made = {}
        for label, ops, name in ((DYNAMIC_LABELS[0], None, "digits-cnn-onnx-dyn-all"),
                                 (DYNAMIC_LABELS[1], ("MatMul", "Gemm"), "digits-cnn-onnx-dyn-matmul")):
            path = quantize_onnx_dynamic(fp32, Path(tmp) / f"{name}.onnx", op_types=ops)
            made[label] = publish_model_file(path, runtime="onnxruntime", name=name, version=1, out_dir=out_dir,
                                             signing_key=key, precision="int8",
                                             quantization={"method": "onnxruntime dynamic",
                                                           "ops": list(ops) if ops else "all"})
        return made
