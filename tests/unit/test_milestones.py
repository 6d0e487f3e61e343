"""Milestones on a fake clock: one cap for the whole scenario, progress lines naming the milestone, clear misses."""

from __future__ import annotations

import pytest

from cloud.labkit.milestones import MilestoneMissed, Milestones


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def milestones(cap_s: float, lines: list[str]) -> tuple[Milestones, FakeClock]:
    clock = FakeClock()
    return Milestones(cap_s, clock=clock, sleep=clock.sleep, progress=lines.append, progress_every_s=5,
                      interval_s=0.5), clock


def test_milestones_share_one_cap_and_record_when_each_arrived():
    lines: list[str] = []
    m, clock = milestones(30, lines)
    assert m.wait("first", lambda: clock.now >= 112) == pytest.approx(12)
    assert m.wait("second", lambda: clock.now >= 120) == pytest.approx(8)
    assert m.reached == [("first", 12.0), ("second", 20.0)]
    assert m.left_s() == pytest.approx(10)
    assert any("waiting for: first" in line for line in lines) and any("waiting for: second" in line for line in lines)
    assert [line.split("reached: ")[1] for line in lines if "reached: " in line] == ["first", "second"]


def test_the_cap_names_the_milestone_that_did_not_arrive_and_the_log():
    lines: list[str] = []
    m, clock = milestones(25, lines)
    m.wait("early", lambda: clock.now >= 115)
    with pytest.raises(MilestoneMissed) as missed:
        m.wait("every device on the update", lambda: False, log="runs/lab-07/cam-0.log",
               status=lambda: "2 of 3 devices on @2")
    assert missed.value.name == "every device on the update"
    assert missed.value.waited_s == pytest.approx(10, abs=0.6)  # the cap counts from the start, not per milestone
    text = str(missed.value)
    assert "cap of 25 s" in text and "2 of 3 devices on @2" in text and "runs/lab-07/cam-0.log" in text
    assert "2 of 3 devices on @2" in lines[-1]


def test_a_failure_ends_the_wait_at_once():
    m, clock = milestones(60, [])
    with pytest.raises(MilestoneMissed, match="processor exited with code 3") as missed:
        m.wait("processed", lambda: False, failed=lambda: "processor exited with code 3" if clock.now > 101 else None)
    assert missed.value.waited_s < 2
