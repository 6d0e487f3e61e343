"""One benchmark report: a row per measure (value, same-run baseline, ratio, target, met), as Markdown and JSON.

Each benchmark defines its own measures and targets (``measures(result)`` in its module); the report only
computes ratios, checks targets and writes ``report.md`` and ``report.json``. How a row is compared:

- ``compare="ratio"``: ratio = value / baseline, shown as ``1.08×`` (int8 time over fp32 time, bytes over float32);
- ``compare="percent"``: the same ratio shown as a percentage of the baseline (a rate against a bare rate);
- ``compare="speedup"``: ratio = baseline / value, how many times faster than the baseline (latencies);
- ``compare="points"``: ratio = value - baseline, a gap in percentage points (accuracies given in %);
- ``compare="value"``: the target applies to the value itself (seconds); a baseline, if any, is context.

A measure whose value is None was not measured; its note says why, and it is neither met nor missed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rich.table import Table

from cloud.bench.tables import bench_table, render_text

COMPARES = ("value", "ratio", "percent", "speedup", "points")
OPS = ("<=", ">=", "within")
REPORT_MD = "report.md"
REPORT_JSON = "report.json"


@dataclass(frozen=True)
class Measure:
    """One measured figure against the baseline measured in the same run and its target.

    Examples
    --------
    >>> m = Measure("P2", "device pipeline", 700.0, "events/s", baseline=1000.0, baseline_name="raw produce",
    ...             compare="percent", op=">=", target=0.7)
    >>> round(m.ratio, 2), m.met, m.target_text
    (0.7, True, '≥ 70%')
    """

    id: str
    measure: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    compare: str = "value"
    op: str = "<="
    target: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        """Refuse a comparison or operator the report cannot check."""
        if self.compare not in COMPARES:
            raise ValueError(f"measure {self.id}: compare={self.compare!r}; use one of {', '.join(COMPARES)}")
        if self.op not in OPS:
            raise ValueError(f"measure {self.id}: op={self.op!r}; use one of {', '.join(OPS)}")
        if self.compare != "value" and self.value is not None and self.baseline is None:
            raise ValueError(f"measure {self.id}: compare={self.compare!r} needs a baseline; got none")

    @property
    def ratio(self) -> float | None:
        """The value against the baseline, as ``compare`` says; None without both."""
        if self.value is None or self.baseline is None:
            return None
        if self.compare == "speedup":
            return self.baseline / self.value if self.value else math.inf
        if self.compare == "points":
            return self.value - self.baseline
        return self.value / self.baseline if self.baseline else math.inf

    @property
    def checked(self) -> float | None:
        """The number the target applies to: the value for ``compare="value"``, else the ratio."""
        return self.value if self.compare == "value" else self.ratio

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None when there is no target or no measurement."""
        checked = self.checked
        if self.target is None or checked is None or math.isnan(checked):
            return None
        if self.op == "within":
            return abs(checked) <= self.target
        return checked <= self.target if self.op == "<=" else checked >= self.target

    @property
    def target_text(self) -> str:
        """The target as a reader sees it: ``≥ 10×``, ``≤ 1×``, ``± 0.5 pt``, ``≥ 70%``, ``≤ 4 s``."""
        if self.target is None:
            return "—"
        sign = {"<=": "≤ ", ">=": "≥ ", "within": "± "}[self.op]
        bound = {"speedup": f"{self.target:g}×", "ratio": f"{self.target:g}×", "percent": f"{self.target:.0%}",
                 "points": f"{self.target:g} pt", "value": f"{self.target:g} {self.unit}".strip()}[self.compare]
        return sign + bound

    def to_dict(self) -> dict[str, Any]:
        """The fields plus the computed ratio and met, for report.json."""
        return {**asdict(self), "ratio": self.ratio, "met": self.met}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measure:
        """A measure from its report.json entry (computed fields are recomputed, not read)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def format_number(value: float | None) -> str:
    """A figure in about three significant digits, thousands separated; ``—`` for None."""
    if value is None:
        return "—"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.01 or size == 0:
        return f"{value:.2f}"
    return f"{value:.2g}"


def format_checked(number: float | None, compare: str, unit: str = "") -> str:
    """A ratio (or value) the way its comparison reads: ``12.3×``, ``74%``, ``-0.3 pt``, ``3.10 s``."""
    if number is None:
        return "—"
    if compare in ("speedup", "ratio"):
        return f"{format_number(number)}×"
    if compare == "percent":
        return f"{number:.0%}"
    if compare == "points":
        return f"{number:+.1f} pt" if number else "0.0 pt"
    return f"{format_number(number)} {unit}".strip()


def met_text(met: bool | None) -> str:
    """``yes``, ``no``, or ``—`` where there is no target or no measurement."""
    return "—" if met is None else ("yes" if met else "no")


def report_rows(measures: list[Measure]) -> list[list[str]]:
    """The report's rows as text: id, measure, value, baseline, baseline name, ratio, target, met."""
    rows = []
    for m in measures:
        value = f"{format_number(m.value)} {m.unit}".strip() if m.value is not None else "not measured"
        baseline = format_number(m.baseline) if m.baseline is not None else "—"
        ratio = format_checked(m.ratio, m.compare) if m.compare != "value" else "—"
        rows.append([m.id, m.measure, value, baseline, m.baseline_name or "—", ratio, m.target_text,
                     met_text(m.met)])
    return rows


REPORT_COLUMNS = ("id", "measure", "value", "baseline", "baseline is", "ratio", "target", "met")


def report_table(measures: list[Measure], machine: str) -> Table:
    """The report as a rich table that fits 80 columns: the measure wraps (baseline named in it), figures do not."""
    table = bench_table(f"bench report on {machine}", [("id", "fixed"), ("measure", "text"), ("value", "number"),
                                                      ("baseline", "number"), ("ratio", "number"),
                                                      ("target", "number"), ("met", "fixed")])
    for m, (id_, measure, value, baseline, name, ratio, target, met) in zip(measures, report_rows(measures)):
        if m.baseline is not None and name != "—":
            measure = f"{measure} (vs {name})"
        table.add_row(id_, measure, value, baseline, ratio, target, met)
    return table


def markdown(measures: list[Measure], machine: str, plots: list[str] | None = None) -> str:
    """report.md: the machine, the table, each row's note, and the plots."""
    lines = ["# Benchmark report", "", f"Machine: {machine}", "",
             "| " + " | ".join(REPORT_COLUMNS) + " |", "|" + "|".join("---" for _ in REPORT_COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in report_rows(measures)]
    notes = [f"- **{m.id}** {m.measure}: {m.note}" for m in measures if m.note]
    if notes:
        lines += ["", "Notes:", "", *notes]
    if plots:
        lines += ["", "Plots:", "", *[f"- [{Path(p).name}]({p})" for p in plots]]
    return "\n".join(lines) + "\n"


def write_report(run_path: Path, measures: list[Measure], machine: str, plots: list[str] | None = None,
                 extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write report.md and report.json into run_path; return both paths."""
    run_path = Path(run_path)
    md = run_path / REPORT_MD
    md.write_text(markdown(measures, machine, plots))
    data = {"machine": machine, "measures": [m.to_dict() for m in measures], "plots": list(plots or []),
            **(extra or {})}
    js = run_path / REPORT_JSON
    js.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")
    return md, js


def read_report(path: Path) -> tuple[list[Measure], str]:
    """The measures and machine of a report.json (a file or the run folder holding it)."""
    path = Path(path)
    data = json.loads((path / REPORT_JSON if path.is_dir() else path).read_text())
    return [Measure.from_dict(m) for m in data["measures"]], data["machine"]


def print_report(console, measures: list[Measure], machine: str) -> None:
    """Print the report table and the count of targets met."""
    console.print(report_table(measures, machine))
    checked = [m.met for m in measures if m.met is not None]
    console.print(f"targets met: {sum(checked)} of {len(checked)}; "
                  f"not measured: {sum(m.value is None for m in measures)}")


def report_text(measures: list[Measure], machine: str, width: int = 80) -> str:
    """The report table as plain text at a given width (for logs and tests)."""
    return render_text(report_table(measures, machine), width)
