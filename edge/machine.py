"""What machine this is, in one line, for benchmark and device output."""

from __future__ import annotations

import os
import platform


def machine_name() -> str:
    """A short description of this machine for benchmark output."""
    uname = platform.uname()
    cpu = platform.processor() or uname.machine
    return f"{uname.node} {uname.system} {uname.release} {cpu} ({os.cpu_count()} cores), Python {platform.python_version()}"
