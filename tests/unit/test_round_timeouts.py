"""Round timeouts that follow the machine, on a fake grid and a fake clock: the cap first, then the measured replies."""

from __future__ import annotations

import math

import pytest

from cloud.federated.config import FlConfig
from cloud.federated.grid import PollingGrid
from cloud.federated.journal import RoundJournal
from cloud.federated.timeouts import RoundTimeouts
from edge.federated.client_app import params_to_record
from edge.federated.mlp import init_params

NODES = {101: 0, 102: 1, 103: 2}  # node id -> partition id


class FakeClock:
    """Seconds that move only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeGrid:
    """Three nodes; each answers a message ``delays[node]`` fake seconds after it was pushed (inf: never)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.delays: dict[int, float] = {}
        self.pushed: dict[str, tuple[object, float]] = {}  # message id -> (message, pushed at)

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message.metadata._message_id = f"m{len(self.pushed)}"  # the SuperLink assigns ids
            self.pushed[message.metadata.message_id] = (message, self.clock())
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, ids):
        from flwr.app import Message, MetricRecord, RecordDict

        ready = []
        for i in ids:
            message, at = self.pushed[i]
            if self.clock() >= at + self.delays[message.metadata.dst_node_id]:
                metrics = MetricRecord({"num-examples": 10, "partition-id": NODES[message.metadata.dst_node_id],
                                        "train-loss": 0.5, "received-accuracy": 0.1})
                ready.append(Message(RecordDict({"metrics": metrics}), reply_to=message))
        return ready


def send_round(grid: PollingGrid, journal: RoundJournal, server_round: int, delays: dict[int, float],
               timeout: float | None = None):
    """Send one train message per node, as the journalled strategy does; return the replies."""
    from flwr.app import Message, RecordDict

    arrays = params_to_record(init_params(3, 2, 2, seed=0))
    messages = [Message(RecordDict({"arrays": arrays}), dst_node_id=node, message_type="train") for node in NODES]
    journal.sent(server_round, "train", messages, arrays)
    grid._grid.delays = delays
    replies = grid.send_and_receive(messages, timeout=timeout)
    journal.replies(server_round, "train", replies)
    return replies


@pytest.fixture()
def rig(tmp_path, in_a_run):
    """A PollingGrid over the fake grid, polling every 0.5 fake s, journalled; cap 120 s, margin 3, floor 10 s."""
    clock = FakeClock()
    journal = RoundJournal(tmp_path / "fl-metrics.json", FlConfig(), run_id=7)
    timeouts = RoundTimeouts(cap_s=120, margin=3, floor_s=10)
    grid = PollingGrid(FakeGrid(clock), 0.5, journal.destinations, timeouts=timeouts, watcher=journal,
                       clock=clock, sleep=clock.sleep)
    return grid, journal, clock


def test_the_first_round_waits_up_to_the_cap(rig):
    grid, journal, clock = rig
    # Execute: node 103 never answers in round 1
    replies = send_round(grid, journal, 1, {101: 2.0, 102: 3.0, 103: math.inf})
    # Assert: nothing was measured before, so the round waited the cap (120 s) and not a poll longer
    wait = journal.round(1)["waiting"]["train"]
    assert wait["timeout_s"] == 120.0
    assert 120.0 <= clock.now < 120.5
    assert len(replies) == 2 and wait["answered"] == 2 and wait["done"] is True
    assert wait["reply_s"] == {"101": 2.0, "102": 3.0}


def test_later_rounds_wait_the_margin_times_the_slowest_reply_so_far(rig):
    grid, journal, clock = rig
    send_round(grid, journal, 1, {101: 2.0, 102: 4.5, 103: 6.0})
    assert grid.timeouts.slowest_s == 6.0
    # Execute: round 2 with a dead node: it waits 3 x 6 s, then goes on with the two that answered
    started = clock.now
    replies = send_round(grid, journal, 2, {101: 1.0, 102: 1.0, 103: math.inf})
    # Assert
    assert journal.round(2)["waiting"]["train"]["timeout_s"] == 18.0
    assert 18.0 <= clock.now - started < 18.5
    assert len(replies) == 2
    # A slower reply raises the next timeout: 3 x 8 s
    send_round(grid, journal, 3, {101: 8.0, 102: 1.0, 103: 1.0})
    assert grid.wait_s(None) == 24.0


@pytest.mark.parametrize(("replies_s", "expected"), [
    ([], 120.0),  # nothing measured: the cap
    ([1.5], 10.0),  # 3 x 1.5 s = 4.5 s is under the floor
    ([1.5, 5.0, 2.0], 15.0),  # 3 x the slowest, not the last
    ([50.0], 150.0),  # a machine this slow gets 3 x 50 s, past the first round's cap
])
def test_the_floor_holds_and_measured_waits_follow_the_machine(replies_s, expected):
    timeouts = RoundTimeouts(cap_s=120, margin=3, floor_s=10)
    for seconds in replies_s:
        timeouts.observe(seconds)
    assert timeouts.timeout_s() == expected


def test_the_timeout_comes_from_the_run_config_and_refuses_nonsense():
    config = FlConfig.from_run_config({"round-timeout": 60.0, "timeout-margin": 2.0, "timeout-floor": 5.0})
    timeouts = RoundTimeouts.from_config(config)
    assert (timeouts.cap_s, timeouts.margin, timeouts.floor_s) == (60.0, 2.0, 5.0)
    assert FlConfig().round_timeout == 120.0 and FlConfig().timeout_margin == 3.0 and FlConfig().timeout_floor == 10.0
    with pytest.raises(ValueError, match="timeout-margin=0.5: .* the margin >= 1"):
        RoundTimeouts(cap_s=120, margin=0.5, floor_s=10)


def test_a_straggler_past_the_timeout_is_dropped_and_named(rig):
    grid, journal, clock = rig
    send_round(grid, journal, 1, {101: 2.0, 102: 2.0, 103: 2.0})  # slowest 2 s: later rounds wait the floor, 10 s
    # Execute: device 2 (node 103) would answer after 15 s
    started = clock.now
    replies = send_round(grid, journal, 2, {101: 1.0, 102: 1.5, 103: 15.0})
    # Assert: the round went on at 10 s with the two replies; the journal names the one it waited for, and why
    entry = journal.round(2)
    assert 10.0 <= clock.now - started < 10.5
    assert len(replies) == 2
    assert sorted(row["partition_id"] for row in entry["train"]) == [0, 1]
    assert entry["waiting"]["train"]["missing"] == [{"node_id": 103, "partition_id": 2}]
    assert entry["dropouts"] == [{"phase": "train", "node_id": 103, "partition_id": 2, "code": None,
                                  "reason": "no reply within the round timeout of 10.0 s"}]
    # The straggler's late reply does not count: it was not measured either
    assert grid.timeouts.slowest_s == 2.0


def test_the_journal_says_who_answered_while_the_round_waits(tmp_path, in_a_run):
    # Prepare: a watcher that keeps a copy of every waiting entry the journal writes
    seen = []

    class Recording(RoundJournal):
        def waiting(self, *args):
            super().waiting(*args)
            seen.append(dict(self.round(1)["waiting"]["train"]))

    clock = FakeClock()
    journal = Recording(tmp_path / "fl-metrics.json", FlConfig(), run_id=7)
    grid = PollingGrid(FakeGrid(clock), 0.5, journal.destinations, timeouts=RoundTimeouts(cap_s=30), watcher=journal,
                       clock=clock, sleep=clock.sleep)
    # Execute
    send_round(grid, journal, 1, {101: 1.0, 102: 2.0, 103: 4.0})
    # Assert: one entry when the messages went out, one per reply that came in, each naming who is still missing
    assert [(w["answered"], [m["node_id"] for m in w["missing"]], w["done"]) for w in seen] == [
        (0, [101, 102, 103], False), (1, [102, 103], False), (2, [103], False), (3, [], True)]
    assert all(w["timeout_s"] == 30.0 and w["expected"] == 3 for w in seen)


def test_a_smaller_timeout_from_the_strategy_still_bounds_the_wait(rig):
    grid, journal, clock = rig
    send_round(grid, journal, 1, {101: 2.0, 102: 2.0, 103: math.inf}, timeout=5.0)
    assert journal.round(1)["waiting"]["train"]["timeout_s"] == 5.0
    assert 5.0 <= clock.now < 5.5
