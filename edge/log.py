"""How the kit's processes log: one flushed line on stdout, so a lab or a test reading the log sees it at once."""

from __future__ import annotations


def log_line(line: str) -> None:
    """Print one line and flush it (a process's log is a file another process tails)."""
    print(line, flush=True)
