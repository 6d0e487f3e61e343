"""Where a device's predictions go: a list (tests), a JSON-lines file, the console, or several at once.

A sink is anything with ``write(prediction)`` and ``close()``; the streaming labs add a Kafka sink.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Prediction:
    """One prediction, tagged with the device and the model version that made it."""

    device: str
    index: int  # the reading's index in the source stream
    model: str  # name@version of the bundle that made it
    predicted: int
    label: str
    confidence: float  # softmax probability of the predicted class
    true_label: int | None
    latency_us: float  # time in the runner, microseconds
    t: float  # time.time() when it was made

    def to_dict(self) -> dict[str, Any]:
        """A plain dict, ready for JSON."""
        return asdict(self)


class Sink(Protocol):
    """What a device writes predictions to."""

    def write(self, prediction: Prediction) -> None:
        """Take one prediction."""

    def close(self) -> None:
        """Flush and release resources."""


class ListSink:
    """Keeps every prediction in ``items`` (for tests and notebooks).

    Examples
    --------
    >>> sink = ListSink()
    >>> sink.write(Prediction("dev", 0, "m@1", 3, "3", 0.9, 3, 20.0, 0.0))
    >>> len(sink), sink.items[0].model
    (1, 'm@1')
    """

    def __init__(self) -> None:
        self.items: list[Prediction] = []

    def write(self, prediction: Prediction) -> None:
        """Append the prediction."""
        self.items.append(prediction)

    def close(self) -> None:
        """Nothing to release."""

    def __len__(self) -> int:
        return len(self.items)


class JsonlSink:
    """Appends one JSON object per prediction to a file, flushed every ``flush_every`` lines."""

    def __init__(self, path: Path, flush_every: int = 1) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._flush_every = max(1, flush_every)
        self._pending = 0

    def write(self, prediction: Prediction) -> None:
        """Write one line; flush every flush_every lines so readers see progress."""
        self._handle.write(json.dumps(prediction.to_dict()) + "\n")
        self._pending += 1
        if self._pending >= self._flush_every:
            self._handle.flush()
            self._pending = 0

    def close(self) -> None:
        """Flush and close the file."""
        if not self._handle.closed:
            self._handle.flush()
            self._handle.close()


class ConsoleSink:
    """Prints every ``every``-th prediction as one line (rich console if given, else print)."""

    def __init__(self, console=None, every: int = 1) -> None:
        self.console = console
        self.every = max(1, every)

    def write(self, prediction: Prediction) -> None:
        """Print a line for every every-th prediction."""
        if prediction.index % self.every:
            return
        truth = "" if prediction.true_label is None else f" true={prediction.true_label}"
        line = (f"{prediction.device} #{prediction.index} {prediction.model}: {prediction.label} "
                f"p={prediction.confidence:.2f}{truth} {prediction.latency_us:.0f} µs")
        if self.console is not None:
            self.console.print(line, highlight=False)
        else:
            print(line, flush=True)

    def close(self) -> None:
        """Nothing to release."""


class MultiSink:
    """Writes each prediction to several sinks in order."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def write(self, prediction: Prediction) -> None:
        """Write to every sink."""
        for sink in self.sinks:
            sink.write(prediction)

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()


class LabelledWindow:
    """Keeps the device's last ``capacity`` labelled frames, as the camera gave them, in a file on the device.

    The file is what a federated ClientApp trains on (``edge.federated.client_app``: ``x_train,
    y_train, x_val, y_val``; every fifth frame held out; ``t_first``, when the oldest frame was
    seen, tells whether the window is all new since some moment), so a device can fine-tune on what it
    sees now without any frame leaving it. ``frame_of(index)`` returns the frame of a reading
    (``DriftingCamera.frame``); ``save()`` writes the file atomically and is called every
    ``save_every`` labelled frames and at ``close()``.

    >>> import numpy as np, tempfile
    >>> frames = {i: np.full(4, i, dtype=np.float32) for i in range(12)}
    >>> path = Path(tempfile.mkdtemp()) / "device-0.npz"
    >>> window = LabelledWindow(path, frames.get, capacity=10, save_every=0)
    >>> for i in range(12):
    ...     window.write(Prediction("cam-0", i, "m@1", 0, "0", 0.9, true_label=i % 3, latency_us=1.0, t=0.0))
    >>> window.close(); saved = np.load(path)
    >>> len(saved["y_train"]), len(saved["y_val"]), float(saved["x_train"][0][0])  # the oldest two fell out
    (8, 2, 2.0)
    """

    def __init__(self, path: Path, frame_of, capacity: int = 400, save_every: int = 50) -> None:
        from collections import deque

        self.path = Path(path)
        self.frame_of = frame_of
        self.save_every = save_every
        self.frames: deque = deque(maxlen=capacity)  # (features, label, time seen)
        self.added = 0

    def write(self, prediction: Prediction) -> None:
        """Keep a labelled reading's frame; save every ``save_every`` of them."""
        if prediction.true_label is None:
            return
        frame = self.frame_of(prediction.index)
        if frame is None:
            return
        self.frames.append((frame, prediction.true_label, prediction.t))
        self.added += 1
        if self.save_every and self.added % self.save_every == 0:
            self.save()

    def save(self) -> int:
        """Write the window as train (4 of 5) and held-out (1 of 5) arrays; returns the frames written."""
        import os

        import numpy as np

        items = list(self.frames)
        if not items:
            return 0
        x = np.stack([f for f, _, _ in items]).astype(np.float32)
        y = np.asarray([label for _, label, _ in items], dtype=np.int64)
        held_out = np.arange(len(items)) % 5 == 4
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.stem + ".tmp.npz")
        np.savez(tmp, x_train=x[~held_out], y_train=y[~held_out], x_val=x[held_out], y_val=y[held_out],
                 t_first=np.float64(items[0][2]))
        os.replace(tmp, self.path)
        return len(items)

    def close(self) -> None:
        """Save what the window holds."""
        self.save()
