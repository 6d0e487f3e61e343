"""A Grid that polls for replies every ``interval`` seconds, and remembers where each message went."""

from __future__ import annotations

import time

from flwr.app import Message
from flwr.serverapp import Grid


class PollingGrid:
    """A Grid whose send_and_receive polls for replies every ``interval`` s (Flower's waits 3 s).

    Everything else is delegated to the Grid the ServerApp was given.
    """

    def __init__(self, grid: Grid, interval: float, destinations: dict[str, int] | None = None) -> None:
        self._grid = grid
        self.interval = interval
        self.destinations = {} if destinations is None else destinations

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout: float | None = None):
        """Push the messages, then pull replies until all arrived or the timeout passed."""
        messages = list(messages)
        ids = list(self._grid.push_messages(messages))
        self.destinations.update({i: m.metadata.dst_node_id for i, m in zip(ids, messages)})
        pending = set(ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            got = list(self._grid.pull_messages(pending))
            replies.extend(got)
            pending -= {m.metadata.reply_to_message_id for m in got}
            if pending:
                time.sleep(self.interval)
        return replies
