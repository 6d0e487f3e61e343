"""The bench report: ratios and met against targets, report.json round trip, and tables that fit 80 columns."""

import json

import pytest

from cloud.bench.report import Measure, read_report, report_rows, report_text, write_report
from cloud.bench.tables import bench_console, bench_table, render_text

MACHINE = "bench-host Linux 6.1 x86_64 (2 cores), Python 3.11"


def sample_measures() -> list[Measure]:
    """One measure of each comparison, met and missed, and one not measured."""
    return [
        Measure("P1-ort", "single-sample p50, ONNX Runtime fp32", 40.0, "µs", baseline=600.0,
                baseline_name="torch eager", compare="speedup", op=">=", target=10.0),
        Measure("P1b-ort", "int8 p50, ONNX Runtime", 44.0, "µs", baseline=40.0, baseline_name="ONNX Runtime fp32",
                compare="ratio", op="<=", target=1.0),
        Measure("P1c", "top-1, LiteRT fp32", 96.4, "%", baseline=96.7, baseline_name="torch eager",
                compare="points", op="within", target=0.5),
        Measure("P2", "device pipeline rate", 6000.0, "events/s", baseline=10000.0, baseline_name="raw produce",
                compare="percent", op=">=", target=0.7),
        Measure("P4", "FL round time, 3 SuperNodes", 3.5, "s", target=4.0),
        Measure("P6-acc", "DP-SGD top-1", 90.0, "%", baseline=94.0, baseline_name="non-private",
                compare="points", op=">=", target=-3.0),
        Measure("P7", "lab 07 start to first processed prediction", None, "s", target=4.0,
                note="not measured by make bench"),
    ]


def test_ratios_follow_each_comparison():
    # Prepare
    by = {m.id: m for m in sample_measures()}

    # Execute
    ratios = {key: m.ratio for key, m in by.items()}

    # Assert
    assert ratios["P1-ort"] == pytest.approx(15.0)  # 600 / 40: times faster
    assert ratios["P1b-ort"] == pytest.approx(1.1)  # 44 / 40
    assert ratios["P1c"] == pytest.approx(-0.3)  # 96.4 - 96.7 points
    assert ratios["P2"] == pytest.approx(0.6)
    assert ratios["P4"] is None and ratios["P7"] is None


def test_met_column_reads_yes_no_or_dash():
    # Prepare
    measures = sample_measures()

    # Execute
    met = {row[0]: row[-1] for row in report_rows(measures)}

    # Assert
    assert met == {"P1-ort": "yes", "P1b-ort": "no", "P1c": "yes", "P2": "no", "P4": "yes", "P6-acc": "no",
                   "P7": "—"}


def test_rows_show_value_baseline_ratio_and_target():
    # Prepare
    measures = sample_measures()

    # Execute
    rows = {row[0]: row for row in report_rows(measures)}

    # Assert
    assert rows["P1-ort"][1:] == ["single-sample p50, ONNX Runtime fp32", "40.0 µs", "600", "torch eager", "15.0×",
                                  "≥ 10×", "yes"]
    assert rows["P1b-ort"][5:] == ["1.10×", "≤ 1×", "no"]
    assert rows["P1c"][5:] == ["-0.3 pt", "± 0.5 pt", "yes"]
    assert rows["P2"][5:] == ["60%", "≥ 70%", "no"]
    assert rows["P4"][2:] == ["3.50 s", "—", "—", "—", "≤ 4 s", "yes"]
    assert rows["P7"][2] == "not measured"


def test_bounds_are_inclusive():
    # Prepare
    at = Measure("P3", "processor", 80.0, "events/s", baseline=100.0, compare="percent", op=">=", target=0.8)
    over = Measure("P5-enc", "encrypt", 0.31, "s", target=0.3)

    # Execute, Assert
    assert at.met is True and over.met is False


def test_report_json_round_trips(tmp_path):
    # Prepare
    measures = sample_measures()

    # Execute
    md, js = write_report(tmp_path, measures, MACHINE, plots=["edge/edge_tradeoffs.png"])
    again, machine = read_report(tmp_path)
    data = json.loads(js.read_text())

    # Assert
    assert again == measures and machine == MACHINE
    assert [m["met"] for m in data["measures"]] == [True, False, True, False, True, False, None]
    assert data["measures"][0]["ratio"] == pytest.approx(15.0)
    text = md.read_text()
    assert f"Machine: {MACHINE}" in text and "| P2 | device pipeline rate | 6,000 events/s | 10,000 |" in text
    assert "[edge_tradeoffs.png](edge/edge_tradeoffs.png)" in text


def test_a_ratio_without_a_baseline_is_refused():
    with pytest.raises(ValueError, match="needs a baseline"):
        Measure("P2", "device pipeline rate", 6000.0, "events/s", compare="percent", target=0.7)


def header_lines(text: str, headers: list[str]) -> tuple[str, list[str]]:
    """The rendered line holding the first header, and every line of the text."""
    lines = text.splitlines()
    return next(line for line in lines if line.split()[:1] == [headers[0].split()[0]]), lines


def test_report_table_keeps_headers_on_one_line_at_80_columns():
    # Prepare
    headers = ["id", "measure", "value", "baseline", "ratio", "target", "met"]

    # Execute
    text = report_text(sample_measures(), MACHINE, width=80)

    # Assert
    header, lines = header_lines(text, headers)
    assert header.split() == headers
    assert max(len(line.rstrip()) for line in lines) <= 80
    figures = ["40.0 µs", "6,000 events/s", "not measured", "≥ 70%", "± 0.5 pt", "15.0×"]
    assert all(any(figure in line for line in lines) for figure in figures)  # no figure is split over lines


def test_a_wide_table_fits_80_columns_with_numbers_whole():
    # Prepare: the edge benchmark's nine columns and its longest runtime name
    headers = ["runtime", "KB", "top-1", "agree", "|diff|", "p50 µs", "p99 µs", "batch/s", "× eager"]
    table = bench_table("edge runtimes", [(h, "text" if h == "runtime" else "number") for h in headers])
    table.add_row("ONNX Runtime int8 (dynamic)", "412.3", "0.9722", "0.9972", "2.1e-06", "1043.2", "2087.5",
                  "1,234,567", "17.4")

    # Execute
    text = render_text(table, width=80)

    # Assert
    header, lines = header_lines(text, headers)
    assert header.split() == ["runtime", "KB", "top-1", "agree", "|diff|", "p50", "µs", "p99", "µs", "batch/s",
                              "×", "eager"]  # one line; split() only cuts the two-word headers
    assert max(len(line.rstrip()) for line in lines) <= 80
    assert "1,234,567" in text and "2.1e-06" in text and "1043.2" in text


def test_bench_console_in_a_log_is_wider_than_rich_default(tmp_path, monkeypatch):
    # Prepare
    monkeypatch.delenv("COLUMNS", raising=False)

    # Execute
    with open(tmp_path / "log.txt", "w") as log:
        width = bench_console(log).width

    # Assert
    assert width == 100
