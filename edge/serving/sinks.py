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
