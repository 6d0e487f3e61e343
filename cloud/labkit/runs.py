"""Run folders: one per lab run, holding logs, metrics as JSON and plots as PNG."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Imported inside the functions that use them, to keep this module quick to import: matplotlib.


@dataclass
class RunFolder:
    """A run's folder: ``runs/<name>/<timestamp>/`` with metrics.json and PNG plots."""
    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, runs_dir: Path, name: str) -> RunFolder:
        """Make a fresh, uniquely named folder under runs_dir/name."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(runs_dir) / name
        path = base / stamp
        n = 1
        while path.exists():
            n += 1
            path = base / f"{stamp}-{n}"
        path.mkdir(parents=True)
        return cls(path=path.resolve())  # absolute: services in containers see the same path

    def save_plot(self, figure, name: str) -> Path:
        """Save a matplotlib figure as PNG in the run folder and close it."""
        import matplotlib.pyplot as plt

        target = self.path / (name if name.endswith(".png") else f"{name}.png")
        figure.savefig(target, dpi=110, bbox_inches="tight")
        plt.close(figure)
        return target

    def record(self, **values: Any) -> None:
        """Add values to the run's metrics and write metrics.json."""
        self.metrics.update(values)
        self.write_json("metrics.json", self.metrics)

    def write_json(self, name: str, data: Any) -> Path:
        """Write data as indented JSON in the run folder."""
        target = self.path / name
        target.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
        return target


def _jsonable(value: Any) -> Any:
    """Turn numpy scalars, arrays and paths into JSON-friendly values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
