"""Data sets the labs use: scikit-learn's bundled sets by default, the digits split everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Digits pixels are integers 0..16; every model in the kit sees them scaled to [0, 1].
DIGITS_PIXEL_MAX = 16.0
DIGITS_SHAPE = (8, 8)
DIGITS_LABELS = [str(d) for d in range(10)]


@dataclass(frozen=True)
class DigitsSplit:
    """The kit's running example: 8x8 digit "camera frames", flat float32 in [0, 1]."""

    x_train: np.ndarray  # N, 64
    y_train: np.ndarray  # N
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    seed: int


def digits_split(seed: int = 42, test_size: float = 0.25, val_size: float = 0.1) -> DigitsSplit:
    """Split scikit-learn's bundled digits (1,797 images) into train, validation and test.

    The split is stratified and reproducible from the seed; the test split is the
    held-out data that simulated edge devices draw their frames from.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / DIGITS_PIXEL_MAX).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_size, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_size / (1 - test_size), stratify=y_rest, random_state=seed
    )
    return DigitsSplit(x_train, y_train, x_val, y_val, x_test, y_test, seed)


def as_images(x: np.ndarray, layout: str = "NCHW") -> np.ndarray:
    """Reshape flat digits (N, 64) to images: NCHW for torch and ONNX, NHWC for Keras/TFLite."""
    n = x.shape[0]
    if layout == "NCHW":
        return x.reshape(n, 1, *DIGITS_SHAPE)
    if layout == "NHWC":
        return x.reshape(n, *DIGITS_SHAPE, 1)
    raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
