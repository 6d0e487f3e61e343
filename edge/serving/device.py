"""A simulated edge device: read a sensor, predict with the current model, write the prediction; swap models live.

The source, runner and sink are injected (``EdgeDevice(runner, source, sink)``), so a unit test
uses a list sink and a lab a file or Kafka sink. A new model is only ever taken between two
predictions, so no input is dropped or predicted twice, and each prediction names its model.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.serving.bundle import load_bundle
from edge.serving.manifest import BundleError
from edge.serving.runners import open_runner
from edge.serving.sinks import Prediction, Sink
from edge.serving.sources import Reading

SWAP_REQUEST_FILE = "swap-request.json"
EVENTS_FILE = "events.jsonl"


@dataclass(frozen=True)
class SwapResult:
    """What happened to an offered bundle: accepted (the new model serves next) or refused (why)."""

    accepted: bool
    serving: str  # name@version serving after the offer
    offered: str  # the path that was offered
    message: str

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, ready for JSON."""
        return asdict(self)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


class EdgeDevice:
    """Runs ``runner`` over every reading of ``source`` and writes each prediction to ``sink``.

    Parameters
    ----------
    runner
        An ``edge.serving.runners.Runner`` (anything with ``ref``, ``labels`` and ``predict_one``).
    source
        An iterable of ``edge.serving.sources.Reading``.
    sink
        Anything with ``write(prediction)`` and ``close()``.
    name
        The device's name in predictions and messages.
    public_key
        The cloud's Ed25519 public key, needed to accept new bundles with ``offer_bundle``.

    Examples
    --------
    >>> import numpy as np
    >>> from edge.serving.sinks import ListSink
    >>> from edge.serving.sources import DigitFrames
    >>> class Argmax:  # a stand-in runner: the brightest pixel's index modulo 10
    ...     ref, labels = "toy@1", [str(d) for d in range(10)]
    ...     def predict_one(self, x):
    ...         return np.eye(10, dtype=np.float32)[int(x.argmax()) % 10]
    >>> frames = DigitFrames(np.eye(64, dtype=np.float32), count=5, seed=0)
    >>> sink = ListSink()
    >>> EdgeDevice(Argmax(), frames, sink, name="cam-0").run()
    5
    >>> [(p.index, p.model) for p in sink.items][:2]
    [(0, 'toy@1'), (1, 'toy@1')]
    """

    def __init__(self, runner, source: Iterable[Reading], sink: Sink, name: str = "device",
                 public_key=None, num_threads: int = 1,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.runner = runner
        self.source = source
        self.sink = sink
        self.name = name
        self.public_key = public_key
        self.num_threads = num_threads
        self.on_event = on_event
        self.served = 0
        self.served_by_model: dict[str, int] = {}  # predictions per model ref (``name@version``)
        self._pending = None  # a runner waiting to take over before the next prediction
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        """``name@version`` of the model serving now."""
        return self.runner.ref

    def swap_to(self, runner) -> None:
        """Queue an already verified runner; it serves from the next prediction on (thread-safe)."""
        with self._lock:
            self._pending = runner

    def offer_bundle(self, path: Path) -> SwapResult:
        """Verify a bundle and queue it; if any check fails, refuse it and keep serving the current model."""
        if self.public_key is None:
            raise ValueError(f"device {self.name}: no public key, so it cannot verify bundles; pass public_key=")
        current = self.model
        try:
            runner = open_runner(load_bundle(Path(path), self.public_key), num_threads=self.num_threads)
        except BundleError as exc:
            result = SwapResult(False, current, str(path), f"refused: {exc}; keeping {current}")
        else:
            self.swap_to(runner)
            result = SwapResult(True, runner.ref, str(path), f"accepted {runner.ref}, replacing {current}")
        self._emit({"event": "swap", "device": self.name, "index": self.served, **result.to_dict()})
        return result

    def step(self, reading: Reading) -> Prediction:
        """Predict one reading with the current model (taking a queued model first) and write it."""
        if self._pending is not None:
            with self._lock:
                self.runner, self._pending = self._pending, None
        start = time.perf_counter_ns()
        logits = self.runner.predict_one(reading.features)  # classes
        latency_us = (time.perf_counter_ns() - start) / 1e3
        probs = softmax(np.asarray(logits, dtype=np.float64))
        k = int(probs.argmax())
        prediction = Prediction(
            device=self.name, index=reading.index, model=self.runner.ref, predicted=k,
            label=self.runner.labels[k], confidence=float(probs[k]), true_label=reading.label,
            latency_us=latency_us, t=time.time(),
        )
        self.sink.write(prediction)
        self.served += 1
        self.served_by_model[prediction.model] = self.served_by_model.get(prediction.model, 0) + 1
        return prediction

    def step_many(self, readings: list[Reading]) -> list[Prediction]:
        """Predict several readings with one runner call (one model for all of them) and write each, in order.

        A runner call has a fixed cost (ONNX Runtime: about 11 us of a 18 us call for one 8x8 frame here, 7 us a
        frame in a batch of 16), so a device whose source is ahead of it predicts a few readings together.
        Each prediction's ``latency_us`` is its share of the batch's time.
        """
        if len(readings) == 1 or not hasattr(self.runner, "predict_batch"):
            return [self.step(reading) for reading in readings]
        if self._pending is not None:
            with self._lock:
                self.runner, self._pending = self._pending, None
        runner = self.runner
        start = time.perf_counter_ns()
        logits = runner.predict_batch(np.stack([r.features for r in readings]))  # N, classes
        latency_us = (time.perf_counter_ns() - start) / 1e3 / len(readings)
        probs = softmax(np.asarray(logits, dtype=np.float64))  # N, classes
        best = probs.argmax(axis=1)  # N
        confidences = probs[np.arange(len(readings)), best].tolist()  # N
        now, out = time.time(), []
        for reading, k, confidence in zip(readings, best.tolist(), confidences):
            prediction = Prediction(
                device=self.name, index=reading.index, model=runner.ref, predicted=k, label=runner.labels[k],
                confidence=confidence, true_label=reading.label, latency_us=latency_us, t=now,
            )
            self.sink.write(prediction)
            self.served += 1
            out.append(prediction)
        self.served_by_model[runner.ref] = self.served_by_model.get(runner.ref, 0) + len(out)
        return out

    def run(self, max_items: int | None = None, stop: threading.Event | None = None,
            control: ControlFolder | None = None, control_interval_s: float = 0.1, batch: int = 1) -> int:
        """Serve readings until the source ends, max_items are done or stop is set; returns how many.

        With a ``control`` folder the device also takes swap requests from it between predictions.
        ``batch`` > 1 predicts that many readings per runner call (``step_many``): only for a source that is
        ahead of the device (a recording replayed at full speed), since a live source would make the first
        reading of each batch wait for the last. Every reading taken from the source is served.
        """
        next_check = time.monotonic()
        count = 0
        taken: list[Reading] = []
        try:
            for reading in self.source:
                if stop is not None and stop.is_set():
                    break
                if control is not None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + control_interval_s
                    requested = control.poll()
                    if requested is not None:
                        control.report(self.offer_bundle(requested))
                taken.append(reading)
                if len(taken) >= batch or (max_items is not None and count + len(taken) >= max_items):
                    self.step_many(taken)
                    count += len(taken)
                    taken = []
                if max_items is not None and count >= max_items:
                    break
            if taken:  # the source ended or stop was set with readings already taken: serve them
                self.step_many(taken)
                count += len(taken)
        finally:
            self.sink.close()
        return count

    def _emit(self, event: dict[str, Any]) -> None:
        """Hand an event (a swap accepted or refused) to on_event, if set."""
        if self.on_event is not None:
            self.on_event(event)


class ControlFolder:
    """A folder through which another process asks a running device to swap its model.

    The requester writes ``swap-request.json`` (``{"bundle": PATH}``), atomically with
    ``request_swap``; the device takes it, tries the bundle, and appends the outcome to
    ``events.jsonl`` in the same folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def poll(self) -> Path | None:
        """The bundle path of a pending request (taking the request), or None."""
        request = self.path / SWAP_REQUEST_FILE
        if not request.exists():
            return None
        taken = self.path / f"{SWAP_REQUEST_FILE}.taken"
        os.replace(request, taken)
        try:
            return Path(json.loads(taken.read_text())["bundle"])
        except (json.JSONDecodeError, KeyError) as exc:
            self._append({"event": "bad-request", "message": f"{SWAP_REQUEST_FILE} unreadable: {exc}"})
            return None

    def report(self, result: SwapResult) -> None:
        """Append a swap outcome to events.jsonl."""
        self._append({"event": "swap", **result.to_dict()})

    def events(self) -> list[dict[str, Any]]:
        """Every event written so far."""
        path = self.path / EVENTS_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def request_swap(self, bundle: Path) -> None:
        """Ask the device to swap to a bundle (written atomically: temp file, then rename)."""
        tmp = self.path / f".{SWAP_REQUEST_FILE}.tmp"
        tmp.write_text(json.dumps({"bundle": str(Path(bundle).resolve())}))
        os.replace(tmp, self.path / SWAP_REQUEST_FILE)

    def _append(self, event: dict[str, Any]) -> None:
        """One JSON line in events.jsonl, with a timestamp."""
        with open(self.path / EVENTS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"t": time.time(), **event}) + "\n")
