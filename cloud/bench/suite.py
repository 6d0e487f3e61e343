"""Run benchmarks into one run folder and gather their measures into one report (``make bench``).

``cloud bench all`` runs every benchmark, each in its own process, into ``runs/bench/<timestamp>/<name>/`` and
writes ``report.md`` and ``report.json`` at the top; ``cloud bench NAME`` runs one into
``runs/bench-NAME/<timestamp>/`` with its own report. Each benchmark module has ``main(run, console, *tokens)``
and ``measures(result)``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

from cloud.bench.report import REPORT_JSON, Measure, print_report, read_report, write_report
from cloud.labkit.runs import RunFolder
from edge.machine import machine_name

BENCHMARKS = ("edge", "stream", "fl", "privacy")


def split_tokens(names: tuple[str, ...], tokens: list[str]) -> dict[str, list[str]]:
    """Route ``name.key=value`` tokens to each benchmark; a bare ``key=value`` is only allowed for one benchmark."""
    routed: dict[str, list[str]] = {name: [] for name in names}
    for token in tokens:
        prefix, dot, rest = token.partition(".")
        if dot and prefix in routed and "=" in rest:
            routed[prefix].append(rest)
        elif len(names) == 1:
            routed[names[0]].append(token)
        else:
            raise ValueError(f"argument {token!r}: with several benchmarks say which one it is for, "
                             f"e.g. edge.quick=1 (one of {', '.join(names)})")
    return routed


def run_one(name: str, run: RunFolder, console, tokens: list[str]) -> list[Measure]:
    """Run one benchmark into a run folder, record its results and write its report; return its measures."""
    module = importlib.import_module(f"cloud.bench.{name}")
    results = module.main(run, console, *tokens) or {}
    run.record(benchmark=name, **results)
    measures = module.measures(results)
    write_report(run.path, measures, machine_name(), plot_paths(run.path), extra={"benchmarks": [name]})
    return measures


def plot_paths(folder: Path) -> list[str]:
    """The PNG plots under a run folder, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*.png"))


def run_benchmarks(names: tuple[str, ...], runs_dir: Path, console, tokens: list[str],
                   into: Path | None = None) -> Path:
    """Run the named benchmarks, write one report in the run folder, print it, and return the folder.

    One benchmark runs in this process (into ``into`` if given). Several run one after another, each in
    its own Python process (TensorFlow from one must not meet TenSEAL in another, and a crash stays
    in its benchmark), into subfolders; their reports are gathered into one.
    """
    routed = split_tokens(names, tokens)
    if len(names) == 1:
        if into is not None:
            Path(into).mkdir(parents=True, exist_ok=True)
        run = RunFolder(Path(into).resolve()) if into is not None else RunFolder.create(runs_dir, f"bench-{names[0]}")
        measures = run_one(names[0], run, console, routed[names[0]])
    else:
        run = RunFolder.create(runs_dir, "bench")
        measures = []
        for name in names:
            console.rule(f"bench {name}")
            sub = run.path / name
            done = subprocess.run([sys.executable, "-m", "cloud.cli", "bench", name, "--into", str(sub),
                                   *routed[name]], check=False)
            if done.returncode == 0 and (sub / REPORT_JSON).exists():
                measures += read_report(sub)[0]
            else:
                console.print(f"[bold red]bench {name} failed[/] (exit status {done.returncode}); "
                              "its rows say not measured", highlight=False)
                measures.append(Measure(name, f"bench-{name}", None, "",
                                        note=f"not measured: bench-{name} exited with status {done.returncode} "
                                             "(its output is in the log above)"))
    machine = machine_name()
    plots = plot_paths(run.path)
    md, js = write_report(run.path, measures, machine, plots, extra={"benchmarks": list(names)})
    print_report(console, measures, machine)
    console.print(f"report: {md}\n        {js}" + "".join(f"\nplot: {run.path / p}" for p in plots))
    return run.path
