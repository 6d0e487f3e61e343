"""Benchmark tables that read on an 80-column terminal and in a log: figures never wrap, text columns do.

Rich assumes 80 columns when stdout is not a terminal and then folds every column to a word or less. The
benchmarks print through ``bench_console()`` (a fixed width for logs) and build tables with ``bench_table``:
short headers kept on one line, numeric columns ``no_wrap``, and only the descriptive columns wrap.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table

LOG_WIDTH = 100  # when stdout is a file or a pipe (make bench | tee, CI logs) and COLUMNS is unset
KINDS = ("text", "number", "fixed")


def bench_console(file: TextIO | None = None) -> Console:
    """A console for benchmark output: the terminal's width, or LOG_WIDTH (or $COLUMNS) in a log."""
    stream = file or sys.stdout
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    width = None if is_tty or os.environ.get("COLUMNS") else LOG_WIDTH
    return Console(file=file, width=width)


def bench_table(title: str, columns: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> Table:
    """A table of (header, kind) columns: ``text`` wraps; ``number`` (right-aligned) and ``fixed`` never do."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), title_justify="left")
    for header, kind in columns:
        if kind not in KINDS:
            raise ValueError(f"column {header!r}: kind {kind!r}; use one of {', '.join(KINDS)}")
        longest_word = max(len(word) for word in header.split()) if header.strip() else 1
        table.add_column(header, justify="right" if kind == "number" else "left",
                         no_wrap=kind != "text", overflow="ellipsis" if kind == "fixed" else "fold",
                         min_width=len(header) if kind != "text" else max(longest_word, len(header)))
    return table


def render_text(table: Table, width: int = 80) -> str:
    """The table as plain text, as a non-terminal console of the given width prints it."""
    buffer = io.StringIO()
    Console(file=buffer, width=width, force_terminal=False, color_system=None, no_color=True).print(table)
    return buffer.getvalue()
