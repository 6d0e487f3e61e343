"""A Grid that polls for replies every ``interval`` seconds, waits as long as the run's own replies say, and reports who it waits for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from flwr.app import Message
from flwr.serverapp import Grid

from cloud.federated.timeouts import RoundTimeouts


class WaitWatcher(Protocol):
    """Told while a send-and-receive waits (the round journal is one)."""

    def waiting(self, answered: dict[int, float], missing: list[int], timeout_s: float, elapsed_s: float,
                done: bool) -> None:
        """Who answered (node id -> seconds), who has not, the timeout in force, and whether the wait is over."""


class PollingGrid:
    """A Grid whose send_and_receive polls for replies every ``interval`` s (Flower's waits 3 s).

    With ``timeouts`` each wait lasts ``timeouts.timeout_s()`` (never more than the timeout the
    strategy passes) and every reply's time is fed back to it; ``watcher`` hears who answered
    whenever that changes. Everything else is delegated to the Grid the ServerApp was given.
    """

    def __init__(self, grid: Grid, interval: float, destinations: dict[str, int] | None = None,
                 timeouts: RoundTimeouts | None = None, watcher: WaitWatcher | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self._grid = grid
        self.interval = interval
        self.destinations = {} if destinations is None else destinations
        self.timeouts, self.watcher = timeouts, watcher
        self.clock, self.sleep = clock, sleep

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def wait_s(self, timeout: float | None) -> float | None:
        """The timeout of the next wait: the measured one, within the strategy's if it passed one."""
        if self.timeouts is None:
            return timeout
        measured = self.timeouts.timeout_s()
        return measured if timeout is None else min(measured, timeout)

    def send_and_receive(self, messages, *, timeout: float | None = None):
        """Push the messages, then pull replies until all arrived or the timeout passed; stragglers are left out."""
        messages = list(messages)
        if not messages:  # a phase the strategy skipped (no evaluation this round)
            return []
        ids = list(self._grid.push_messages(messages))
        self.destinations.update({i: m.metadata.dst_node_id for i, m in zip(ids, messages)})
        limit = self.wait_s(timeout)
        start = self.clock()
        pending = set(ids)
        answered: dict[int, float] = {}  # node id -> seconds from sending to its reply
        replies: list[Message] = []
        self._tell(answered, pending, limit, 0.0, False)
        while pending and (limit is None or self.clock() - start < limit):
            got = list(self._grid.pull_messages(pending))
            if got:
                seconds = self.clock() - start
                for reply in got:
                    answered[self.destinations.get(reply.metadata.reply_to_message_id,
                                                   reply.metadata.src_node_id)] = seconds
                    if self.timeouts is not None:
                        self.timeouts.observe(seconds)
                replies.extend(got)
                pending -= {m.metadata.reply_to_message_id for m in got}
                if pending:
                    self._tell(answered, pending, limit, seconds, False)
            if pending:
                self.sleep(self.interval)
        self._tell(answered, pending, limit, self.clock() - start, True)
        return replies

    def _tell(self, answered: dict[int, float], pending: set[str], limit: float | None, elapsed: float,
              done: bool) -> None:
        """Tell the watcher who answered and who is still missing."""
        if self.watcher is not None:
            missing = sorted(self.destinations[i] for i in pending)
            self.watcher.waiting(dict(answered), missing, limit, elapsed, done)
