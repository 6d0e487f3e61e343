"""Lab 00 in quick mode: the numbers its README promises."""

from cloud.labkit.runner import run_lab
from cloud.stack.procs import pid_alive


def test_lab00_round_trips_every_event_and_stops_the_stack(lab_settings):
    metrics, run_path = run_lab("00", quick=True, settings=lab_settings)

    assert metrics["sent"] == metrics["received"] == metrics["distinct"] == 1000
    assert metrics["committed"] == 1000
    assert metrics["superlink_healthy"] is True
    assert metrics["first_record_s"] > 0  # a record arrived (NaN when none did); how soon is reported, not promised
    assert (run_path / "metrics.json").exists() and (run_path / "output.txt").exists()
    assert len(metrics["stack_pids"]) == (2 if lab_settings.runtime == "local" else 0)  # compose owns containers
    assert not any(pid_alive(pid) for pid in metrics["stack_pids"])
