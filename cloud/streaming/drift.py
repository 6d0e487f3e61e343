"""Drift response: on a drift alert, retrain the edge CNN on a recent labelled window, sign it, tell the devices.

The responder reads ``alerts`` and keeps the newest labelled predictions (features and true label)
from ``predictions``. On a ``drift`` alert about the model it last published, it waits for
``window`` labelled events that arrived after the alert, fine-tunes the current CNN on 80% of them,
scores old and new model on the other 20% (before/after accuracy), exports ONNX, signs the bundle,
and publishes a ``model-update`` notice carrying the bundle (about 150 KB, base64). Devices verify
and swap it. With ``--tflite`` it then copies the weights into the Keras twin of the CNN, converts
it to TFLite, signs that bundle too and publishes a second notice (``runtime="litert"``) for devices
that run TFLite; ONNX devices skip it. The TFLite step comes after the ONNX notice, so its cost
(TensorFlow's import, about 5 s, and the conversion) never delays the ONNX devices' swap.
Results go to a JSON file, one entry per update. Kafka goes through the processor's client interface
(``clients.open_reader``: no group, every partition), so ``--client`` picks kafka-python or confluent.

Run it with ``python -m cloud.streaming.drift --bootstrap HOST:9092 --weights digits_cnn.pt --bundles DIR``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from cloud.ml.data import as_images
from cloud.ml.export import OnnxWeightsTemplate, keras_twin
from cloud.ml.models import build_torch_cnn
from cloud.ml.publish import ensure_signing_key, publish_onnx_bundle, publish_tflite_bundle
from cloud.ml.training import torch_accuracy, torch_predict
from cloud.settings import load_settings
from cloud.stack.broker import ensure_topics
from cloud.streaming.clients import CLIENTS, open_reader
from edge.log import log_line
from edge.serving.bundle import load_bundle, pack_bundle
from edge.serving.runners import open_runner
from edge.wire.events import ModelUpdate, new_event_id, parse_event
from edge.wire.topics import ALERTS, MODEL_UPDATES, PREDICTIONS

# Imported inside the functions that use them, to keep this module quick to import: torch.

MODEL_NAME = "digits-stream"  # the streamed model's name: devices start on digits-stream@1, each update adds one


def fine_tune(model, x: np.ndarray, y: np.ndarray, epochs: int = 15, lr: float = 2e-3, seed: int = 0):
    """Train a copy of the CNN further on (x, y) flat frames; returns the new model."""
    import torch
    from torch import nn


    torch.manual_seed(seed)
    new = copy.deepcopy(model).train()
    images = torch.from_numpy(as_images(x.astype(np.float32)))  # N, 1, 8, 8
    labels = torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.Adam(new.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), 32):
            idx = order[start:start + 32]
            opt.zero_grad()
            loss_fn(new(images[idx]), labels[idx]).backward()
            opt.step()
    return new.eval()


def publish_tflite_twin(torch_cnn, version: int, bundles_dir: Path, signing_key,
                        metrics: dict[str, float] | None = None) -> Path:
    """Sign the torch CNN as a TFLite bundle in ``bundles_dir/tflite/digits-stream@version``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    return publish_tflite_bundle(keras_twin(torch_cnn), MODEL_NAME, version, Path(bundles_dir) / "tflite",
                                 signing_key, metrics=metrics)


class DriftResponder:
    """Follows alerts and labelled predictions; retrains and publishes when drift is confirmed."""
    def __init__(self, bootstrap: str, weights: Path, bundles_dir: Path, signing_key_dir: Path,
                 version: int = 1, window: int = 600, epochs: int = 15, seed: int = 0,
                 results: Path | None = None, log=print, tflite: bool = False,
                 since: float | None = None, client: str = "kafka-python") -> None:
        self.bootstrap = bootstrap
        self.client = client
        self.weights = Path(weights)
        self.bundles_dir = Path(bundles_dir)
        self.signing_key_dir = Path(signing_key_dir)
        self.version = version
        self.window = window
        self.epochs = epochs
        self.seed = seed
        self.tflite = tflite
        self.since = since
        self.results_path = Path(results) if results else None
        self.log = log
        self.samples: deque[tuple[float, list[float], int]] = deque(maxlen=window * 4)
        self.pending_alert = None
        self.alert_seen_at = 0.0  # monotonic time the pending alert was read
        self.template: OnnxWeightsTemplate | None = None
        self.updates: list[dict[str, Any]] = []
        self.stop = threading.Event()

    @property
    def model_ref(self) -> str:
        """``name@version`` of the model devices should be running."""
        return f"{MODEL_NAME}@{self.version}"

    def run(self, ready_file: Path | None = None) -> list[dict[str, Any]]:
        """Follow the topics until stopped; returns the updates published."""
        # torch is heavy (seconds): only a running responder pays for it
        import torch


        torch.set_num_threads(1)
        ensure_topics(self.bootstrap)
        self.model = build_torch_cnn()
        self.model.load_state_dict(torch.load(self.weights, map_location="cpu"))
        self.model.eval()
        self.key = ensure_signing_key(self.signing_key_dir)
        # No group: every partition of both topics, from --since or from now on; notices carry a bundle (~200 KB).
        kafka = open_reader(self.client, self.bootstrap, [ALERTS, PREDICTIONS], since=self.since,
                            producer_overrides={"max_request_size": 8 * 1024 * 1024})
        if ready_file is not None:
            Path(ready_file).write_text(json.dumps({"pid": os.getpid(), "t": time.time()}))
        self.log(f"drift responder: following {ALERTS} and {PREDICTIONS} with {self.client}; "
                 f"devices run {self.model_ref}")
        self._warm_up()
        try:
            while not self.stop.is_set():
                self._poll_once(kafka)
                if self.pending_alert is not None and self._post_alert_samples() >= self.window:
                    self._respond(kafka)
        finally:
            kafka.close()
        return self.updates

    def _warm_up(self) -> None:
        """Before any drift: export the ONNX graph once and run one training step, so a response only fine-tunes.

        The topics are read from ``since`` on, so nothing that arrives meanwhile is missed.
        """
        started = time.monotonic()
        self.template = OnnxWeightsTemplate(self.model)
        x = np.zeros((32, 64), dtype=np.float32)
        fine_tune(self.model, x, np.zeros(32, dtype=np.int64), epochs=1, seed=self.seed)  # autograd's first-call cost
        self.log(f"drift responder: warmed up in {time.monotonic() - started:.1f} s (ONNX graph exported once)")

    def _poll_once(self, kafka) -> None:
        """Read what arrived: keep labelled samples, note a drift alert about the current model."""
        for record in kafka.poll(0.2):
            parsed = parse_event(record.value)
            if not parsed.ok:
                continue
            event = parsed.event
            if event.kind == "prediction" and event.true_label is not None and len(event.features) == 64:
                self.samples.append((event.ts, event.features, event.true_label))
            elif event.kind == "alert" and event.alert == "drift":
                if event.model == self.model_ref and self.pending_alert is None:
                    self.pending_alert, self.alert_seen_at = event, time.monotonic()
                    self.log(f"drift responder: drift confirmed on {event.model} ({event.detail}); "
                             f"collecting {self.window} labelled events to retrain on")

    def _post_alert_samples(self) -> int:
        """Labelled samples made after the pending alert."""
        since = self.pending_alert.ts
        return sum(1 for ts, _, _ in self.samples if ts >= since)

    def _respond(self, kafka) -> None:
        """Retrain on the window, write ONNX, verify, sign, publish the notice; record each phase's seconds."""
        phases = {"collect window": time.monotonic() - self.alert_seen_at}
        clock = time.monotonic()
        alert = self.pending_alert
        recent = [s for s in self.samples if s[0] >= alert.ts][-self.window:]
        x = np.asarray([s[1] for s in recent], dtype=np.float32)  # N, 64
        y = np.asarray([s[2] for s in recent], dtype=np.int64)
        cut = int(len(x) * 0.8)
        before = torch_accuracy(self.model, x[cut:], y[cut:])
        new_model = fine_tune(self.model, x[:cut], y[:cut], epochs=self.epochs, seed=self.seed)
        after = torch_accuracy(new_model, x[cut:], y[cut:])
        phases["fine-tune"], clock = time.monotonic() - clock, time.monotonic()
        version = self.version + 1
        folder = publish_onnx_bundle(new_model, MODEL_NAME, version, self.bundles_dir, self.key,
                                     metrics={"window_accuracy": after}, template=self.template)
        problem = self._check_bundle(folder, new_model, x[cut:])
        phases["write and verify ONNX"], clock = time.monotonic() - clock, time.monotonic()
        if problem:
            self.log(f"drift responder: refusing to publish {MODEL_NAME}@{version}: {problem}; "
                     f"devices keep {self.model_ref}")
            self.pending_alert = None
            return
        archive = pack_bundle(folder, self.bundles_dir / f"{MODEL_NAME}@{version}.tar.gz")
        data = archive.read_bytes()
        notice = ModelUpdate(device_id="cloud", model=f"{MODEL_NAME}@{version}", version=version,
                             archive_sha256=hashlib.sha256(data).hexdigest(),
                             bundle_b64=base64.b64encode(data).decode(),
                             reason=f"drift alert {alert.event_id[:8]}: {alert.detail}",
                             accuracy_before=before, accuracy_after=after)
        kafka.send(MODEL_UPDATES, notice.to_bytes())
        kafka.flush(30)  # raises if the broker did not take the notice
        phases["sign and send"] = time.monotonic() - clock
        self.model, self.version, self.pending_alert = new_model, version, None
        update = {"model": notice.model, "alert_ts": alert.ts, "alert_source_event": alert.source_event_id,
                  "window": len(x), "train": cut, "held_out": len(x) - cut,
                  "accuracy_before": before, "accuracy_after": after, "published_at": time.time(),
                  "retrain_s": round(sum(phases.values()) - phases["collect window"], 2), "bundle_bytes": len(data),
                  "phases_s": {k: round(v, 3) for k, v in phases.items()}, "onnx_bundle": str(folder)}
        self.updates.append(update)
        self._save()
        self.log(f"drift responder: published {notice.model} ({len(data) / 1024:.0f} KB) "
                 + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items())
                 + f"; held-out window accuracy {before:.3f} -> {after:.3f}")
        if self.tflite:
            try:
                self._publish_tflite(kafka, new_model, version, notice, update)
            except Exception as exc:  # noqa: BLE001 - the ONNX update is out; a TFLite failure must not stop the responder
                self.log(f"drift responder: TFLite bundle for {notice.model} not published ({type(exc).__name__}: "
                         f"{exc}); ONNX devices already have it. Is tensorflow installed (pip install -e '.[cloud]')?")

    def _check_bundle(self, folder: Path, model, x: np.ndarray) -> str | None:
        """Load the new bundle as a device would (signature, checksums, model) and compare its logits with torch's."""
        got = open_runner(load_bundle(folder, self.key.public_key())).predict_batch(x)
        want = torch_predict(model, x)
        if not np.allclose(got, want, rtol=1e-4, atol=1e-4):
            return f"its ONNX logits differ from torch's by up to {float(np.abs(got - want).max()):.2g}"
        return None

    def _publish_tflite(self, kafka, model, version: int, onnx_notice: ModelUpdate, update: dict) -> None:
        """The same model as a signed TFLite bundle and a second notice for TFLite devices."""
        started = time.monotonic()
        folder = publish_tflite_twin(model, version, self.bundles_dir, self.key,
                                     metrics={"window_accuracy": update["accuracy_after"]})
        archive = pack_bundle(folder, self.bundles_dir / f"{MODEL_NAME}@{version}-litert.tar.gz")
        data = archive.read_bytes()
        notice = onnx_notice.model_copy(update={
            "event_id": new_event_id(), "ts": time.time(), "runtime": "litert", "archive_sha256": hashlib.sha256(data).hexdigest(),
            "bundle_b64": base64.b64encode(data).decode()})
        kafka.send(MODEL_UPDATES, notice.to_bytes())
        kafka.flush(30)
        update.update({"tflite_bundle": str(folder), "tflite_bundle_bytes": len(data),
                       "tflite_s": round(time.monotonic() - started, 2)})
        self._save()
        self.log(f"drift responder: published {notice.model} for TFLite devices ({len(data) / 1024:.0f} KB) "
                 f"in {update['tflite_s']} s more")

    def _save(self) -> None:
        """Rewrite the results file with every update so far."""
        if self.results_path is not None:
            self.results_path.write_text(json.dumps(self.updates, indent=2))


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m cloud.streaming.drift --bootstrap HOST:9092 --weights PT --bundles DIR``."""
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m cloud.streaming.drift", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=settings.kafka_bootstrap_servers,
                        help="broker host:port (default: KAFKA_BOOTSTRAP_SERVERS, else %(default)s)")
    parser.add_argument("--weights", required=True, help="the torch CNN devices run now (state dict .pt)")
    parser.add_argument("--bundles", required=True, help="folder for the new signed bundles")
    parser.add_argument("--keys", default=str(settings.artifacts_dir),
                        help="artifacts folder holding keys/signing_key.pem, created if missing (ARTIFACTS_DIR)")
    parser.add_argument("--version", type=int, default=1, help="version of the bundle devices run now")
    parser.add_argument("--window", type=int, default=600, help="labelled events to retrain on")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=None, help="JSON file of updates published")
    parser.add_argument("--ready-file", default=None, help="written once following")
    parser.add_argument("--since", type=float, default=None,
                        help="read alerts and predictions from this epoch time (default: from now on)")
    parser.add_argument("--tflite", action="store_true",
                        help="also publish each update as a signed TFLite bundle (imports TensorFlow, ~5 s more)")
    parser.add_argument("--client", choices=CLIENTS, default=settings.processor_kafka_client,
                        help="Kafka client library, as the processor's (PROCESSOR_KAFKA_CLIENT)")
    args = parser.parse_args(argv)
    log = log_line
    responder = DriftResponder(args.bootstrap, Path(args.weights), Path(args.bundles), Path(args.keys),
                               args.version, args.window, args.epochs, args.seed,
                               Path(args.results) if args.results else None, log, tflite=args.tflite,
                               since=args.since, client=args.client)
    signal.signal(signal.SIGTERM, lambda *_: responder.stop.set())
    signal.signal(signal.SIGINT, lambda *_: responder.stop.set())
    responder.run(Path(args.ready_file) if args.ready_file else None)
    log(f"drift responder: stopped after {len(responder.updates)} update(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
