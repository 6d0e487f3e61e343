"""How long a federated round waits for its replies: measured from the run itself, not a constant.

The first round waits up to the cap (``round-timeout``), since nothing has been measured yet and
its ClientApps start cold. Every later wait is ``timeout-margin`` times the slowest reply seen so
far, never less than ``timeout-floor``; it may pass the first round's cap, because a machine that
took 80 s for a reply will take that again: a busy laptop or a quarter-core Raspberry Pi gets longer
rounds, an idle workstation short ones, and a dead node costs one timeout.

>>> timeouts = RoundTimeouts(cap_s=120, margin=3, floor_s=10)
>>> timeouts.timeout_s()  # nothing measured: the cap
120.0
>>> timeouts.observe(1.5); timeouts.timeout_s()  # 3 x 1.5 s is under the floor
10.0
>>> timeouts.observe(6.0); timeouts.timeout_s()  # 3 x the slowest reply
18.0
>>> timeouts.observe(50.0); timeouts.timeout_s()  # measured: may pass the first round's cap
150.0
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud.federated.config import FlConfig


@dataclass
class RoundTimeouts:
    """The cap until a reply was measured, then ``margin`` x the slowest reply, never under the floor."""

    cap_s: float = 120.0
    margin: float = 3.0
    floor_s: float = 10.0
    slowest_s: float | None = None  # the slowest reply measured so far (seconds from sending to its arrival)

    def __post_init__(self) -> None:
        if self.cap_s <= 0 or self.floor_s < 0 or self.margin < 1:
            raise ValueError(f"round-timeout={self.cap_s:g}, timeout-floor={self.floor_s:g}, timeout-margin="
                             f"{self.margin:g}: the cap must be > 0 s, the floor >= 0 s and the margin >= 1 "
                             "(defaults 120, 10 and 3)")

    @classmethod
    def from_config(cls, config: FlConfig) -> RoundTimeouts:
        """The run config's round-timeout (the cap), timeout-margin and timeout-floor."""
        return cls(cap_s=config.round_timeout, margin=config.timeout_margin, floor_s=config.timeout_floor)

    def timeout_s(self) -> float:
        """Seconds the next send-and-receive waits for its replies."""
        if self.slowest_s is None:
            return float(self.cap_s)
        return float(max(self.floor_s, self.margin * self.slowest_s))

    def observe(self, seconds: float) -> None:
        """Measure one reply: seconds from sending its message to receiving the answer."""
        self.slowest_s = seconds if self.slowest_s is None else max(self.slowest_s, seconds)
