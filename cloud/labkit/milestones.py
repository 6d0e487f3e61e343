"""Milestones: a scenario lab waits for what it is waiting for, under one cap, and says which one it waits on.

A lab on a busy laptop, a slow Raspberry Pi or in containers takes longer, but it passes the same
milestones in the same order. A :class:`Milestones` object gives every wait the time the whole
scenario has left (its cap), prints a progress line naming the milestone it is on, records when
each one was reached, and when the cap passes raises :class:`MilestoneMissed` naming the
milestone, how long it waited and the log to read.

>>> now = [0.0]  # a fake clock: sleeping moves it on
>>> m = Milestones(cap_s=10, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s),
...                progress=print, progress_every_s=2, interval_s=1)
>>> m.wait("lamp on", lambda: now[0] >= 3)
    2 s  waiting for: lamp on
    3 s  reached: lamp on
3.0
>>> m.reached
[('lamp on', 3.0)]
>>> m.wait("reply", lambda: False, failed=lambda: "the device exited with code 1", log="runs/device.log")
Traceback (most recent call last):
...
cloud.labkit.milestones.MilestoneMissed: milestone 'reply' not reached: waited 0 s; the device exited with code 1; read runs/device.log
"""

from __future__ import annotations

import time
from collections.abc import Callable


class MilestoneMissed(RuntimeError):
    """A milestone did not arrive before the scenario's cap."""

    def __init__(self, name: str, waited_s: float, cap_s: float, log: str | None = None, detail: str = "",
                 cap_passed: bool = True) -> None:
        self.name, self.waited_s, self.cap_s, self.log = name, waited_s, cap_s, log
        text = f"milestone {name!r} not reached: waited {waited_s:.0f} s"
        if cap_passed:
            text += f", the scenario's cap of {cap_s:.0f} s passed"
        if detail:
            text += f"; {detail}"
        if log:
            text += f"; read {log}"
        super().__init__(text)


class Milestones:
    """Wait for a scenario's milestones in order, all under one cap (seconds from ``start``)."""

    def __init__(self, cap_s: float, start: float | None = None, progress: Callable[[str], None] | None = None,
                 progress_every_s: float = 5.0, interval_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cap_s = cap_s
        self.clock, self.sleep = clock, sleep
        self.start = clock() if start is None else start
        self.progress = progress or print
        self.progress_every_s, self.interval_s = progress_every_s, interval_s
        self.reached: list[tuple[str, float]] = []  # (milestone, seconds since start)

    def left_s(self) -> float:
        """Seconds left before the cap."""
        return self.cap_s - (self.clock() - self.start)

    def wait(self, name: str, check: Callable[[], bool], log: str | None = None,
             status: Callable[[], str] | None = None, failed: Callable[[], str | None] | None = None) -> float:
        """Poll check() until true; return seconds waited. Raise MilestoneMissed at the cap.

        ``status()`` adds to the progress line (counts so far); ``failed()`` returns a reason when
        waiting longer is pointless (a process exited), which is raised at once.
        """
        began = self.clock()
        next_line = began + self.progress_every_s
        while True:
            if check():
                now = self.clock()
                self.reached.append((name, round(now - self.start, 2)))
                self.progress(f"{now - self.start:5.0f} s  reached: {name}")
                return now - began
            now = self.clock()
            reason = failed() if failed else None
            if reason:
                raise MilestoneMissed(name, now - began, self.cap_s, log, reason, cap_passed=False)
            if now - self.start >= self.cap_s:
                raise MilestoneMissed(name, now - began, self.cap_s, log, status() if status else "")
            if now >= next_line:
                next_line = now + self.progress_every_s
                extra = f"  {status()}" if status else ""
                self.progress(f"{now - self.start:5.0f} s  waiting for: {name}{extra}")
            self.sleep(self.interval_s)
