"""Hold processes to a fraction of one CPU core with a Linux cgroup: what a Raspberry Pi 3 or Zero 2 looks like.

cgroup v1 (``/sys/fs/cgroup/cpu/<name>/cpu.cfs_quota_us``) or v2 (``cpu.max``) when this process
may write there (root, or a delegated cgroup); otherwise :class:`CpuLimitUnavailable` says why, so
a test can skip with the reason. The quota is per period: 0.25 of a core is 25 ms of CPU every 100 ms.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class CpuLimitUnavailable(RuntimeError):
    """This machine (or this user) cannot make a CPU-limited cgroup."""


def _cpu_controller() -> tuple[Path, str]:
    """The folder to make cgroups in and its kind ('v1' or 'v2'), or CpuLimitUnavailable."""
    v1 = CGROUP_ROOT / "cpu"
    if (v1 / "cpu.cfs_quota_us").exists():
        base, kind = v1, "v1"
    elif (CGROUP_ROOT / "cgroup.controllers").exists() and "cpu" in (CGROUP_ROOT / "cgroup.controllers").read_text():
        base, kind = CGROUP_ROOT, "v2"
    else:
        raise CpuLimitUnavailable("no cgroup cpu controller under /sys/fs/cgroup")
    if not os.access(base, os.W_OK):
        raise CpuLimitUnavailable(f"{base} is not writable by this user (run as root, or use a delegated cgroup)")
    return base, kind


class CpuLimit:
    """A cgroup holding its processes to ``cores`` of one CPU (0.25 = a quarter core); remove with close()."""

    def __init__(self, cores: float, name: str | None = None) -> None:
        if not 0 < cores <= os.cpu_count():
            raise ValueError(f"cores must be in (0, {os.cpu_count()}], got {cores}")
        base, self.kind = _cpu_controller()
        self.cores = cores
        self.path = base / (name or f"kit-limit-{uuid.uuid4().hex[:8]}")
        self.path.mkdir()
        quota = int(cores * PERIOD_US)
        if self.kind == "v1":
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")

    def add(self, pid: int) -> None:
        """Move a process (and the children it starts later) into the limit."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        """The processes in the limit now."""
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def throttled_s(self) -> float:
        """Seconds its processes were held back by the quota so far (the proof that the limit bites)."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        if self.kind == "v1":
            return int(stat.get("throttled_time", 0)) / 1e9
        return int(stat.get("throttled_usec", 0)) / 1e6

    def close(self) -> None:
        """Move what is left back to the root cgroup and remove this one."""
        if not self.path.exists():
            return
        root = self.path.parent / "cgroup.procs"
        for pid in self.pids():
            try:
                root.write_text(str(pid))
            except (ProcessLookupError, OSError):
                pass
        self.path.rmdir()

    def __enter__(self) -> CpuLimit:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
