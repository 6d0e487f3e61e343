"""Run benchmarks into one run folder and gather their measures into one report (``make bench``).

``cloud bench all`` runs every benchmark into ``runs/bench/<timestamp>/<name>/`` and writes ``report.md`` and
``report.json`` at the top; ``cloud bench NAME`` runs one into ``runs/bench-NAME/<timestamp>/`` with its own
report. Each benchmark module has ``main(run, console, *tokens)`` and ``measures(result)``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from cloud.bench.report import Measure, print_report, write_report
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


def run_benchmarks(names: tuple[str, ...], runs_dir: Path, console, tokens: list[str]) -> Path:
    """Run the named benchmarks, write one report in the run folder, print it, and return the folder."""
    routed = split_tokens(names, tokens)
    together = len(names) > 1
    run = RunFolder.create(runs_dir, "bench" if together else f"bench-{names[0]}")
    measures: list[Measure] = []
    for name in names:
        module = importlib.import_module(f"cloud.bench.{name}")
        sub = run
        if together:
            console.rule(f"bench {name}")
            (run.path / name).mkdir()
            sub = RunFolder(run.path / name)
        try:
            results = module.main(sub, console, *routed[name]) or {}
            sub.record(benchmark=name, **results)
            measures += module.measures(results)
        except Exception as error:  # noqa: BLE001 - one failed benchmark must not lose the others' rows
            if not together:
                raise
            console.print(f"[bold red]bench {name} failed:[/] {error}", highlight=False)
            measures.append(Measure(name, f"bench-{name}", None, "",
                                    note=f"not measured: bench-{name} failed: {type(error).__name__}: {error}"))
    machine = machine_name()
    plots = sorted(str(p.relative_to(run.path)) for p in run.path.rglob("*.png"))
    md, js = write_report(run.path, measures, machine, plots, extra={"benchmarks": list(names)})
    print_report(console, measures, machine)
    console.print(f"report: {md}\n        {js}" + "".join(f"\nplot: {run.path / p}" for p in plots))
    return run.path
