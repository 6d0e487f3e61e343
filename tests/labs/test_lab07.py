"""Lab 07 in quick mode: it passes its milestones and the numbers its README promises hold."""

from scenario_checks import check_streaming_scenario, scenario_milestones

from cloud.labkit.runner import run_lab


def test_lab07_detects_drift_updates_every_device_and_counts_each_event_once(lab_settings):
    metrics, run_path = run_lab("07", quick=True, settings=lab_settings)

    assert metrics["milestones"] == scenario_milestones(200)
    check_streaming_scenario(metrics, devices=3, after_update=200)
    assert (run_path / "timeline.png").exists()
