"""Data sets the labs use: scikit-learn's bundled sets by default, the digits split everywhere."""

from __future__ import annotations

import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.serving.bundle import sha256_file

# Imported inside the functions that use them, to keep this module quick to import: pandas, sklearn.

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


# ---------------------------------------------------------------------------
# A small catalogue of tabular sets that ship with scikit-learn (no download).
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TabularSet:
    """A named table: features as a pandas DataFrame, the target as a Series."""
    name: str
    task: str  # "classification" or "regression"
    frame: object  # pandas.DataFrame, N x features
    target: object  # pandas.Series, N
    target_names: tuple[str, ...]  # class names (empty for regression)
    description: str

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, feature columns)."""
        return self.frame.shape


# name -> (scikit-learn loader, task, one-line description)
BUNDLED_SETS = {
    "digits": ("load_digits", "classification", "8x8 handwritten digits, 1,797 images, 10 classes"),
    "iris": ("load_iris", "classification", "iris flowers, 150 rows, 4 measurements, 3 species"),
    "wine": ("load_wine", "classification", "wine chemistry, 178 rows, 13 features, 3 cultivars"),
    "breast_cancer": ("load_breast_cancer", "classification",
                      "breast tumour cell nuclei, 569 rows, 30 features, malignant/benign"),
    "diabetes": ("load_diabetes", "regression",
                 "diabetes progression after one year, 442 patients, 10 baseline features"),
}


def list_datasets() -> list[str]:
    """Names of the bundled sets (no network needed)."""
    return list(BUNDLED_SETS)


def load_dataset(name: str) -> TabularSet:
    """Load a bundled scikit-learn set by name as a TabularSet (pandas frame and target)."""
    import sklearn.datasets

    if name not in BUNDLED_SETS:
        raise ValueError(f"unknown data set {name!r}; bundled sets: {', '.join(BUNDLED_SETS)}")
    loader, task, description = BUNDLED_SETS[name]
    bunch = getattr(sklearn.datasets, loader)(as_frame=True)
    names = tuple(str(n) for n in bunch.get("target_names", ())) if task == "classification" else ()
    return TabularSet(name, task, bunch.data, bunch.target, names, description)


# ---------------------------------------------------------------------------
# Optional online sources, for learners with internet. Labs and tests never need them.
# ---------------------------------------------------------------------------

# Public CSVs a learner may try; no checksum is pinned because the kit could not
# download them when it was written: fetch_csv prints the digest to pin on first use.
ONLINE_CSVS = {
    "titanic": "https://raw.githubusercontent.com/datasciencedojo/datasets/master/titanic.csv",
    "california_housing": (
        "https://raw.githubusercontent.com/ageron/handson-ml2/master/datasets/housing/housing.csv"
    ),
}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file (the same digest model bundles use)."""
    return sha256_file(path)


def fetch_csv(url: str, cache_dir: Path, sha256: str | None = None, timeout_s: float = 30.0) -> Path:
    """Download a CSV once into cache_dir (http, https or file URL) and check its sha256.

    A cached file with the right digest is reused without touching the network. A
    mismatch removes the download and raises, saying both digests.
    """
    name = Path(urllib.parse.urlparse(url).path).name or "download.csv"
    cache_dir = Path(cache_dir)
    target = cache_dir / name
    if target.exists() and (sha256 is None or sha256_of(target) == sha256):
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OSError(f"could not fetch {url}: {error}; check the address or your connection, "
                      f"or use a bundled set ({', '.join(BUNDLED_SETS)})") from error
    seen = sha256_of(partial)
    if sha256 is not None and seen != sha256:
        partial.unlink()
        raise ValueError(f"{url}: sha256 mismatch (expected {sha256}, got {seen}); "
                         "the file changed upstream or the download was corrupted")
    partial.replace(target)
    if sha256 is None:
        print(f"fetched {url} -> {target} (sha256 {seen}; pass it as sha256= to pin this file)")
    return target


def load_online_csv(name_or_url: str, cache_dir: Path, sha256: str | None = None):
    """Fetch (or reuse from cache) a CSV from ONLINE_CSVS or any URL, as a pandas DataFrame."""
    import pandas as pd

    url = ONLINE_CSVS.get(name_or_url, name_or_url)
    return pd.read_csv(fetch_csv(url, cache_dir, sha256))


# ---------------------------------------------------------------------------
# Planted anomalies: faulty "camera frames" with known labels, for scoring detectors.
# ---------------------------------------------------------------------------

FAULT_KINDS = ("noise", "shuffled", "dead_block")


def faulty_frames(x: np.ndarray, n: int, seed: int = 42) -> tuple[np.ndarray, list[str]]:
    """n corrupted copies of flat digits x (N, 64), cycling through FAULT_KINDS.

    noise: uniform random pixels (a broken sensor); shuffled: the frame's own pixels in a
    random order (right brightness, no shape); dead_block: a saturated 4x4 block pasted over
    a real digit (stuck pixels). Returns (frames n x 64 float32 in [0, 1], kind per frame).
    """
    rng = np.random.default_rng(seed)
    frames, kinds = [], []
    for i in range(n):
        kind = FAULT_KINDS[i % len(FAULT_KINDS)]
        base = x[rng.integers(len(x))].copy()  # 64
        if kind == "noise":
            frame = rng.random(base.shape)
        elif kind == "shuffled":
            frame = rng.permutation(base)
        else:
            image = base.reshape(DIGITS_SHAPE)  # 8, 8
            row, col = rng.integers(0, 5, size=2)
            image[row:row + 4, col:col + 4] = 1.0
            frame = image.ravel()
        frames.append(frame.astype(np.float32))
        kinds.append(kind)
    return np.stack(frames), kinds


# ---------------------------------------------------------------------------
# A sequence task for attention: "read the token the pointer points at".
# ---------------------------------------------------------------------------


def pointer_sequences(n: int, length: int = 8, values: int = 10, seed: int = 42):
    """n sequences whose first token names a position p; the label is the value stored at p.

    Tokens 0..values-1 are values; token values + p means "look at position p" (1 <= p < length).
    Solving it needs content-based look-up, which is what attention does. Returns
    (x: n x length int64 tokens, y: n int64 labels, vocabulary size).
    """
    rng = np.random.default_rng(seed)
    x = rng.integers(0, values, size=(n, length))  # n, length
    pointer = rng.integers(1, length, size=n)  # n
    y = x[np.arange(n), pointer]  # n
    x[:, 0] = values + pointer
    return x.astype(np.int64), y.astype(np.int64), values + length
