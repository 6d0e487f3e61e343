"""Sensor sources for simulated devices: digit "camera frames" (with noise and drift), a camera that turns upside down, and a vibration series.

A source is any iterable of Reading. The device side cannot import the cloud's data code, so
the cloud writes the held-out frames to a .npz file (``save_frames``) that devices read back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Reading:
    """One sensor reading: its index in the stream, flat float32 features and the true label if known."""
    index: int
    features: np.ndarray  # (features,)
    label: int | None = None
    t: float = 0.0  # time.time() when it was read


# The held-out digit frames a device reads, written by the cloud next to its bundles (lab 04).
FRAMES_FILE = "digits_test_frames.npz"


def save_frames(path: Path, x: np.ndarray, y: np.ndarray | None = None) -> Path:
    """Write frames (N, features) float32 and optional labels (N,) to an .npz a device can read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x": np.asarray(x, dtype=np.float32)}
    if y is not None:
        arrays["y"] = np.asarray(y, dtype=np.int64)
    np.savez_compressed(path, **arrays)
    return path


def load_frames(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read frames and labels written by save_frames."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"frames file {path} does not exist; the cloud writes {FRAMES_FILE} next to its "
            "bundles (lab 04), copy it to the device"
        )
    with np.load(path) as data:
        return data["x"], (data["y"] if "y" in data.files else None)


class DigitFrames:
    """Digit frames from a held-out split, in a seeded random order, with optional noise and drift.

    Noise adds Gaussian pixel noise with standard deviation ``noise``. Drift darkens the
    camera over time: frame ``i`` is scaled by ``max(0, 1 - drift * i / 1000)``, so
    ``drift=0.1`` loses 10% brightness per thousand frames. Values are clipped to [0, 1].

    Parameters
    ----------
    x, y
        Frames (N, 64) in [0, 1] and labels (N,) (labels may be None).
    count
        How many readings to yield; None cycles through the frames forever.
    rate_hz
        Readings per second (None for as fast as the consumer takes them).

    Examples
    --------
    >>> import numpy as np
    >>> frames = DigitFrames(np.full((3, 64), 0.5, np.float32), np.arange(3), count=4, noise=0.0, drift=100.0, seed=0)
    >>> [round(float(r.features.mean()), 2) for r in frames]
    [0.5, 0.45, 0.4, 0.35]
    """
    def __init__(self, x: np.ndarray, y: np.ndarray | None = None, *, count: int | None = None,
                 noise: float = 0.0, drift: float = 0.0, seed: int = 0, rate_hz: float | None = None) -> None:
        self.x = np.asarray(x, dtype=np.float32)
        self.y = None if y is None else np.asarray(y)
        if self.x.ndim != 2:
            raise ValueError(f"frames must be (N, features), got shape {self.x.shape}")
        self.count, self.noise, self.drift, self.seed, self.rate_hz = count, noise, drift, seed, rate_hz

    @classmethod
    def from_file(cls, path: Path, **kwargs) -> DigitFrames:
        """Frames from an .npz written by save_frames."""
        x, y = load_frames(path)
        return cls(x, y, **kwargs)

    def __iter__(self) -> Iterator[Reading]:
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(self.x))
        interval = None if not self.rate_hz else 1.0 / self.rate_hz
        next_at = time.monotonic()
        i = 0
        while self.count is None or i < self.count:
            k = order[i % len(order)]
            frame = self.x[k]
            if self.drift:
                frame = frame * max(0.0, 1.0 - self.drift * i / 1000.0)
            if self.noise:
                frame = frame + rng.normal(0.0, self.noise, size=frame.shape).astype(np.float32)
            if self.drift or self.noise:
                frame = np.clip(frame, 0.0, 1.0).astype(np.float32)
            if interval is not None:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            label = None if self.y is None else int(self.y[k])
            yield Reading(index=i, features=frame, label=label, t=time.time())
            i += 1


def rotate_180(frame: np.ndarray) -> np.ndarray:
    """An 8x8 frame turned upside down (the camera was remounted): flat (64,) in, flat (64,) out."""
    return frame.reshape(8, 8)[::-1, ::-1].ravel().copy()


class DriftingCamera:
    """Wraps a source: from ``drift_at`` (epoch seconds) on, frames arrive upside down; some frames glitch.

    A glitch (probability ``glitch_rate``) over-exposes the frame, as a sensor fault would. The true
    label stays, so the cloud sees the edge model's error rate jump when the drift starts.

    Examples
    --------
    >>> import numpy as np
    >>> frames = [Reading(i, np.arange(64, dtype=np.float32) / 64, 0) for i in range(2)]
    >>> cam = DriftingCamera(frames, drift_at=0.0)
    >>> [float(r.features[0]) for r in cam]
    [0.984375, 0.984375]
    """
    def __init__(self, source: Iterable[Reading], drift_at: float | None = None, glitch_rate: float = 0.0,
                 seed: int = 0) -> None:
        self.source = source
        self.drift_at = drift_at
        self.glitch_rate = glitch_rate
        self.seed = seed
        self.last: Reading | None = None
        self._recent: dict[int, np.ndarray] = {}  # index -> frame, the last RECENT readings (a device may read ahead)

    RECENT = 256

    def frame(self, index: int) -> np.ndarray | None:
        """The frame this camera gave for reading ``index``, if it is among the last ``RECENT``."""
        return self._recent.get(index)

    def __iter__(self) -> Iterator[Reading]:
        rng = np.random.default_rng(self.seed + 7919)
        for reading in self.source:
            frame = reading.features
            if self.drift_at is not None and time.time() >= self.drift_at:
                frame = rotate_180(frame)
            if self.glitch_rate and rng.random() < self.glitch_rate:
                frame = np.clip(frame + 0.8, 0.0, 1.0).astype(np.float32)
            self.last = Reading(reading.index, frame, reading.label, reading.t)
            self._recent[reading.index] = frame
            if len(self._recent) > self.RECENT:
                del self._recent[next(iter(self._recent))]  # the oldest (dicts keep insertion order)
            yield self.last


class VibrationSource:
    """A vibration-like time series cut into windows: two sine tones plus noise, with injected faults.

    Each reading is a window of ``window`` samples; its label is 1 when a fault (a burst of a
    high-frequency tone with larger amplitude) was injected, else 0.

    Examples
    --------
    >>> src = VibrationSource(count=200, window=32, fault_rate=0.5, seed=1)
    >>> readings = list(src)
    >>> len(readings), readings[0].features.shape, sum(r.label for r in readings) > 50
    (200, (32,), True)
    """
    def __init__(self, *, count: int | None = None, window: int = 64, sample_rate: float = 1000.0,
                 fault_rate: float = 0.02, noise: float = 0.05, seed: int = 0, rate_hz: float | None = None) -> None:
        self.count, self.window, self.sample_rate = count, window, sample_rate
        self.fault_rate, self.noise, self.seed, self.rate_hz = fault_rate, noise, seed, rate_hz

    def __iter__(self) -> Iterator[Reading]:
        rng = np.random.default_rng(self.seed)
        interval = None if not self.rate_hz else 1.0 / self.rate_hz
        next_at = time.monotonic()
        i = 0
        while self.count is None or i < self.count:
            t = (i * self.window + np.arange(self.window)) / self.sample_rate  # seconds
            signal = 0.6 * np.sin(2 * np.pi * 50 * t) + 0.3 * np.sin(2 * np.pi * 120 * t)
            fault = bool(rng.random() < self.fault_rate)
            if fault:
                signal = signal + 1.2 * np.sin(2 * np.pi * 310 * t + rng.uniform(0, 2 * np.pi))
            signal = signal + rng.normal(0.0, self.noise, self.window)
            if interval is not None:
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
            yield Reading(index=i, features=signal.astype(np.float32), label=int(fault), t=time.time())
            i += 1
