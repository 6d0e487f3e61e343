"""The edge command as real processes: run (with a live swap and SIGTERM), bench, verify refusals, join."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys

from cloud.stack.procs import free_port, start_process, stop_pid, wait_until
from edge.serving.device import ControlFolder

EDGE = [sys.executable, "-m", "edge.cli"]


def edge(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the edge command to completion."""
    return subprocess.run([*EDGE, *args], capture_output=True, text=True, timeout=timeout)


def test_edge_run_serves_count_readings_to_a_jsonl_file(edge_artifacts, tmp_path):
    # Prepare
    out = tmp_path / "predictions.jsonl"
    # Execute
    done = edge("run", "--bundle", str(edge_artifacts["bundles"]["onnx-int8"]), "--count", "300", "--rate", "0",
                "--out", str(out), "--name", "cam-1", "--print-every", "100")
    # Assert
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(300))
    assert {r["model"] for r in rows} == {"digits-cnn-onnx-int8@1"} and {r["device"] for r in rows} == {"cam-1"}
    assert sum(r["predicted"] == r["true_label"] for r in rows) / 300 >= 0.85
    assert "cam-1: digits-cnn-onnx-int8@1 served 300, accuracy" in done.stdout


def test_edge_run_refuses_a_tampered_bundle_with_the_reason(edge_artifacts, tmp_path):
    bundle = shutil.copytree(edge_artifacts["bundles"]["tflite-int8"], tmp_path / "b")
    (bundle / "model.tflite").write_bytes((bundle / "model.tflite").read_bytes()[:-8])
    done = edge("run", "--bundle", str(bundle), "--key", str(edge_artifacts["public_key"]), "--count", "5",
                "--frames", str(edge_artifacts["frames"]))
    assert done.returncode == 2
    assert "model bundle digits-cnn-tflite-int8@1: model.tflite is truncated: expected" in done.stderr


def test_running_device_process_swaps_on_request_and_stops_on_sigterm(edge_artifacts, tmp_path):
    # Prepare: a device process at 500 readings/s watching a control folder
    bundles, control = edge_artifacts["bundles"], ControlFolder(tmp_path / "control")
    out, log = tmp_path / "p.jsonl", tmp_path / "device.log"
    proc = start_process([*EDGE, "run", "--bundle", str(bundles["onnx-fp32"]), "--rate", "500", "--out", str(out),
                          "--control", str(control.path), "--print-every", "0"], log)
    try:
        wait_until(lambda: out.exists() and out.stat().st_size > 0, "device predicts", 30, proc, log)
        # Execute: swap to TFLite int8 while it runs
        control.request_swap(bundles["tflite-int8"])
        wait_until(lambda: len(control.events()) == 1, "swap event", 10, proc, log)
        wait_until(lambda: out.read_text().count("digits-cnn-tflite-int8@1") >= 50, "50 predictions on the new model",
                   30, proc, log)
    finally:
        stop_pid(proc.pid)
    # Assert: stopped cleanly with a summary; versions in order, no index lost or repeated
    assert proc.wait(5) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    models = [r["model"] for r in rows]
    switch = models.index("digits-cnn-tflite-int8@1")
    assert set(models[:switch]) == {"digits-cnn-onnx-fp32@1"} and set(models[switch:]) == {"digits-cnn-tflite-int8@1"}
    assert len(models) - switch >= 50
    assert control.events()[0]["accepted"] is True
    assert "stopped after" in log.read_text()


def test_edge_bench_reports_latency_throughput_and_accuracy(edge_artifacts):
    done = edge("bench", "--bundle", str(edge_artifacts["bundles"]["tflite-fp32"]), "--repeats", "300",
                "--seconds", "0.2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # Latency and throughput are reported, not asserted as speed targets: a busy or slow machine is slower
    assert 0 < result["p50_us"] <= result["p99_us"]
    assert result["batch_per_s"] > 0 and result["batch"] == 256 and result["accuracy"] >= 0.85
    assert result["bundle"] == "digits-cnn-tflite-fp32@1" and result["threads"] == 1


def test_edge_verify_names_the_wrong_key(edge_artifacts, tmp_path):
    from edge.serving.keys import generate_signing_key, save_public_key

    other = save_public_key(generate_signing_key(), tmp_path / "other.pem")
    ok = edge("verify", "--bundle", str(edge_artifacts["bundles"]["onnx-fp32"]))
    refused = edge("verify", "--bundle", str(edge_artifacts["bundles"]["onnx-fp32"]), "--key", str(other))
    assert ok.returncode == 0 and "digits-cnn-onnx-fp32@1: verified" in ok.stdout
    assert refused.returncode == 2 and "signature does not verify with public key" in refused.stderr


def test_edge_join_reports_which_port_does_not_answer():
    # Prepare: something listens on the "Kafka" port, nothing on the "SuperLink" port
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        kafka_port, superlink_port = listener.getsockname()[1], free_port()
        # Execute
        done = edge("join", "--cloud", "127.0.0.1", "--kafka-port", str(kafka_port),
                    "--superlink-port", str(superlink_port), "--timeout", "1")
    # Assert
    assert done.returncode == 1
    assert f"ok    Kafka broker at 127.0.0.1:{kafka_port} answers" in done.stdout
    assert f"FAIL  Flower SuperLink at 127.0.0.1:{superlink_port}: connection refused" in done.stdout
    assert "1 of 2 services do not answer" in done.stdout
