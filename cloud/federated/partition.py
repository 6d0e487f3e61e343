"""Split a data set across simulated devices: IID, Dirichlet(alpha) label skew, or two classes per device.

Every scheme is reproducible from its seed. ``write_partitions`` saves one ``device-{i}.npz``
per device (its training part and its own held-out part), which is what a SuperNode reads.

Run as a module to prepare data for real devices (a Raspberry Pi copies its file)::

    python -m cloud.federated.partition --devices 5 --scheme dirichlet --alpha 0.3 --out fl-data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cloud.ml.data import digits_split

# Imported inside the functions that use them, to keep this module quick to import: matplotlib.

SCHEMES = ("iid", "dirichlet", "two-class")


def iid_partition(y: np.ndarray, num_partitions: int, seed: int) -> list[np.ndarray]:
    """Shuffle the indices and deal them out in equal parts."""
    _check(num_partitions, len(y))
    order = np.random.default_rng(seed).permutation(len(y))
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet_partition(y: np.ndarray, num_partitions: int, alpha: float, seed: int,
                        min_size: int = 10, max_tries: int = 100) -> list[np.ndarray]:
    """Label skew: each class is split across devices in proportions drawn from Dirichlet(alpha).

    Small alpha (0.1) gives each device a few dominant classes; large alpha (100) is close to IID.
    Draws again (up to max_tries) until every device holds at least min_size samples.
    """
    _check(num_partitions, len(y))
    if alpha <= 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}; try 0.1 (very skewed) to 100 (near IID)")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_partitions)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for device, chunk in enumerate(np.split(idx, cuts)):
                parts[device].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(
        f"Dirichlet(alpha={alpha}) left a device with fewer than {min_size} samples in {max_tries} draws "
        f"({len(y)} samples, {num_partitions} devices); use fewer devices or a larger alpha"
    )


def two_class_partition(y: np.ndarray, num_partitions: int, seed: int, shards_per_device: int = 2) -> list[np.ndarray]:
    """The pathological split of McMahan et al. (2017): sort by label, cut into shards, two shards per device.

    Each device sees about two classes (a shard can straddle a class boundary).
    """
    _check(num_partitions * shards_per_device, len(y))
    rng = np.random.default_rng(seed)
    by_label = np.argsort(y, kind="stable")
    shards = np.array_split(by_label, num_partitions * shards_per_device)
    order = rng.permutation(len(shards))
    return [np.sort(np.concatenate([shards[s] for s in order[d::num_partitions]]))
            for d in range(num_partitions)]


def make_partitions(y: np.ndarray, scheme: str, num_partitions: int, seed: int,
                    alpha: float = 0.5) -> list[np.ndarray]:
    """Indices per device for a scheme name: 'iid', 'dirichlet' (uses alpha) or 'two-class'."""
    if scheme == "iid":
        return iid_partition(y, num_partitions, seed)
    if scheme == "dirichlet":
        return dirichlet_partition(y, num_partitions, alpha, seed)
    if scheme == "two-class":
        return two_class_partition(y, num_partitions, seed)
    raise ValueError(f"partitioning scheme must be one of {SCHEMES}, got {scheme!r}")


def set_name(scheme: str, alpha: float | None = None) -> str:
    """Folder name of a partitioning: 'iid', 'dirichlet-0.1', 'two-class'."""
    return f"dirichlet-{alpha:g}" if scheme == "dirichlet" else scheme


def class_histograms(y: np.ndarray, parts: list[np.ndarray], classes: int = 10) -> np.ndarray:
    """Samples per class on each device: (devices, classes)."""
    return np.stack([np.bincount(y[p], minlength=classes) for p in parts])


def write_partitions(x: np.ndarray, y: np.ndarray, parts: list[np.ndarray], out_dir: Path,
                     val_fraction: float = 0.2, seed: int = 0) -> list[Path]:
    """Save ``device-{i}.npz`` per device: its data split into train and its own held-out part."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for device, idx in enumerate(parts):
        idx = rng.permutation(idx)
        n_val = max(1, int(round(len(idx) * val_fraction)))
        val, train = idx[:n_val], idx[n_val:]
        path = out_dir / f"device-{device}.npz"
        np.savez(path, x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val])
        paths.append(path)
    return paths


def plot_histograms(histograms: dict[str, np.ndarray]):
    """One stacked bar chart per partitioning: samples of each class on each device."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(histograms), figsize=(4.2 * len(histograms), 3.4), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, (name, hist) in zip(axes[0], histograms.items()):
        bottom = np.zeros(hist.shape[0])
        for c in range(hist.shape[1]):
            ax.bar(np.arange(hist.shape[0]), hist[:, c], bottom=bottom, color=colors[c % 10], label=str(c))
            bottom += hist[:, c]
        ax.set_title(name)
        ax.set_xlabel("device")
        ax.set_xticks(np.arange(hist.shape[0]))
    axes[0][0].set_ylabel("samples")
    axes[0][-1].legend(title="class", fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def write_digits_federation(out_dir: Path, devices: int, partitionings: list[tuple[str, float | None]],
                            seed: int) -> tuple[dict[str, np.ndarray], Path]:
    """Write each partitioning of the digits (train + validation part) under out_dir/<set name>/, and
    the central test split as out_dir/central_test.npz; returns (class histograms by set name, test path)."""

    split = digits_split(seed)
    x, y = np.concatenate([split.x_train, split.x_val]), np.concatenate([split.y_train, split.y_val])
    histograms = {}
    for scheme, alpha in partitionings:
        name = set_name(scheme, alpha)
        parts = make_partitions(y, scheme, devices, seed, alpha if alpha is not None else 0.5)
        write_partitions(x, y, parts, Path(out_dir) / name, seed=seed)
        histograms[name] = class_histograms(y, parts)
    test_path = Path(out_dir) / "central_test.npz"
    np.savez(test_path, x_test=split.x_test, y_test=split.y_test)
    return histograms, test_path


def _check(parts: int, samples: int) -> None:
    """Raise when the number of devices does not fit the data."""
    if parts < 1 or parts > samples:
        raise ValueError(f"number of partitions must be between 1 and {samples} (samples), got {parts}")


def main(argv: list[str] | None = None) -> int:
    """Write digits partitions for real devices: one folder per scheme, one file per device."""
    parser = argparse.ArgumentParser(prog="python -m cloud.federated.partition", description=main.__doc__)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--scheme", choices=SCHEMES, default="iid")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="data folder (a device's data-dir)")
    args = parser.parse_args(argv)
    split = digits_split(args.seed)
    x, y = np.concatenate([split.x_train, split.x_val]), np.concatenate([split.y_train, split.y_val])
    parts = make_partitions(y, args.scheme, args.devices, args.seed, args.alpha)
    folder = args.out / set_name(args.scheme, args.alpha)
    paths = write_partitions(x, y, parts, folder, seed=args.seed)
    for path, hist in zip(paths, class_histograms(y, parts)):
        print(f"{path}: {hist.sum()} samples, per class {hist.tolist()}")
    np.savez(args.out / "central_test.npz", x_test=split.x_test, y_test=split.y_test)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
