"""Find numbered labs under labs/, parse their key=value arguments and run them."""

from __future__ import annotations

import difflib
import importlib.util
import re
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from rich.console import Console
from rich.table import Table

from cloud.labkit.runs import RunFolder
from cloud.settings import KIT_ROOT, StackSettings
from cloud.stack.local import stack_for_lab

LAB_DIR_PATTERN = re.compile(r"^(\d\d)-[a-z0-9-]+$")


class LabError(RuntimeError):
    """A lab was asked for wrongly (unknown number, unknown or malformed argument)."""


@dataclass(frozen=True)
class LabInfo:
    """A lab folder: its number, slug and path."""
    number: str
    slug: str
    path: Path

    @property
    def name(self) -> str:
        """The run-folder name, ``lab-NN``."""
        return f"lab-{self.number}"


def discover_labs(labs_dir: Path | None = None) -> dict[str, LabInfo]:
    """Every ``labs/NN-slug/lab.py``, keyed by its two-digit number."""
    labs_dir = labs_dir or KIT_ROOT / "labs"
    found = {}
    for path in sorted(labs_dir.iterdir()) if labs_dir.exists() else []:
        match = LAB_DIR_PATTERN.match(path.name)
        if match and (path / "lab.py").exists():
            found[match.group(1)] = LabInfo(match.group(1), path.name, path)
    return found


def find_lab(number: str, labs_dir: Path | None = None) -> LabInfo:
    """The lab with this number, or a LabError listing the available ones."""
    labs = discover_labs(labs_dir)
    key = number.removeprefix("lab-").zfill(2)
    if key not in labs:
        listing = ", ".join(f"lab-{n} ({info.slug[3:]})" for n, info in labs.items())
        raise LabError(f"no lab {number!r}; available labs: {listing}")
    return labs[key]


def load_lab_module(info: LabInfo) -> ModuleType:
    """Import a lab's lab.py by path (lab folders are not Python packages)."""
    spec = importlib.util.spec_from_file_location(f"lab_{info.number}", info.path / "lab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for required in ("TITLE", "DEFAULTS", "run"):
        if not hasattr(module, required):
            raise LabError(f"{info.path / 'lab.py'} lacks {required}")
    return module


def _convert(key: str, raw: str, default: Any) -> Any:
    """Convert a command-line string to the type of the lab's default."""
    try:
        if isinstance(default, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise LabError(
            f"argument {key}={raw!r}: expected {type(default).__name__} like {key}={default}"
        ) from None
    return raw


def parse_args(tokens: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """Parse ``key=value`` tokens against a lab's defaults; hyphens and underscores match."""
    values = dict(defaults)
    by_key = {k.replace("-", "_"): k for k in defaults}
    for token in tokens:
        key, sep, raw = token.partition("=")
        if not sep:
            raise LabError(f"argument {token!r} is not key=value; valid keys: {', '.join(defaults)}")
        norm = key.strip().lstrip("-").replace("-", "_")
        if norm not in by_key:
            close = difflib.get_close_matches(norm, list(by_key), n=1)
            hint = f"did you mean {by_key[close[0]]}=? " if close else ""
            raise LabError(f"unknown argument {key!r}; {hint}valid keys: {', '.join(defaults)}")
        real = by_key[norm]
        values[real] = _convert(real, raw, defaults[real])
    return values


@dataclass
class LabContext:
    """What a lab's run() gets: its arguments, run folder, console and settings."""
    info: LabInfo
    args: dict[str, Any]
    quick: bool
    runtime: str
    run: RunFolder
    console: Console
    settings: StackSettings
    started: float = field(default_factory=time.monotonic)

    @property
    def seed(self) -> int:
        """The lab's seed (every lab has a ``seed`` argument)."""
        return int(self.args.get("seed", 0))

    def step(self, text: str) -> None:
        """Print a step heading."""
        self.console.rule(f"[bold]{text}")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
        """Print a small results table and return it."""
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*[_fmt(v) for v in row])
        self.console.print(table)
        return table

    def save_plot(self, figure, name: str) -> Path:
        """Save a figure as PNG in the run folder and say where."""
        path = self.run.save_plot(figure, name)
        self.console.print(f"plot: {path}")
        return path

    @contextmanager
    def stack(self, services: Sequence[str] = ("broker", "superlink")) -> Iterator[Any]:
        """Bring up the stack for this lab (or reuse one `cloud up` started), down on exit."""
        with stack_for_lab(self.settings, self.runtime, self.run.path, services, self.console) as s:
            yield s


def _fmt(value: Any) -> str:
    """Format a table cell: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class _Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM arrives, so cleanup runs as for Ctrl-C."""


def _raise_interrupt(signum, frame) -> None:
    """Signal handler: turn SIGTERM into an exception that unwinds context managers."""
    raise _Interrupted(f"signal {signum}")


def run_lab(
    number: str,
    tokens: Sequence[str] = (),
    quick: bool = False,
    runtime: str | None = None,
    settings: StackSettings | None = None,
    console: Console | None = None,
) -> tuple[dict[str, Any], Path]:
    """Run a lab and return (metrics, run folder). Stops what it started on any exit."""
    settings = settings or StackSettings()
    info = find_lab(number)
    module = load_lab_module(info)
    defaults = dict(module.DEFAULTS)
    if quick:
        defaults.update(getattr(module, "QUICK", {}))
    args = parse_args(tokens, defaults)
    console = console or Console(record=True)
    run = RunFolder.create(settings.runs_dir, info.name)
    ctx = LabContext(info, args, quick, runtime or settings.runtime, run, console, settings)
    console.print(
        f"[bold]{info.name}: {module.TITLE}[/]  mode={'quick' if quick else 'full'} "
        f"seed={ctx.seed} args={' '.join(f'{k}={v}' for k, v in args.items())}"
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        metrics = module.run(ctx) or {}
        seconds = time.monotonic() - ctx.started
        run.record(lab=info.name, quick=quick, args=args, seconds=round(seconds, 2), **metrics)
        console.print(f"[green]done in {seconds:.1f} s[/]; run folder: {run.path}")
        return run.metrics, run.path
    finally:
        signal.signal(signal.SIGTERM, previous)
        if console.record:
            console.save_text(str(run.path / "output.txt"), clear=False)
