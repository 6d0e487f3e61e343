"""Lab 12 in quick mode: drift answered by DP + CKKS federated retraining, no frame leaving a device, numbers held."""

from cloud.labkit.runner import run_lab

MILESTONES = ["drift injected", "drift detected", "every device's window holds 600 frames seen after the drift", "round 1's replies", "round 2's replies", "round 3's replies",
              "run finished", "every device on the update", "150 labelled events per device on the update",
              "devices drained and stopped", "counts settled"]
RECOVERY = 0.08  # a drifted device's accuracy on the update above the old model's after the drift (quick, 3 rounds: +0.18, +0.27)
CENTRAL_MARGIN = 0.20  # the federated dp+he model within this of the central, non-private retrain (quick: 0.16 seen)


def test_lab12_heals_the_drifted_devices_privately_and_no_frame_leaves_a_device(run_settings):
    # Local processes only for now: compose/lab-12.yml and the container tier run do not exist yet.
    metrics, run_path = run_lab("12", quick=True, settings=run_settings)

    assert [m for m in metrics["milestones"] if not m.endswith("after the detection")] == MILESTONES
    # no frame or feature vector on any topic, and something was on them
    assert metrics["records"] > 1000 and metrics["records_with_features"] == 0
    # the cloud named exactly the devices that drifted, from their error streams
    assert metrics["drifted_named"] == metrics["drifted_actual"] == ["cam-0"]
    devices = metrics["devices"]
    for name, d in devices.items():
        assert d["model"] == "digits-fleet@2", name  # drifted or not, every device ends on the new version
        assert d["produced"] == d["acknowledged"] == d["processed"] > 0, name  # none lost, none counted twice
        assert 0 < d["epsilon"] <= d["budget"], name
        assert d["accuracy_before_drift"] >= 0.90, name
    drifted = devices["cam-0"]
    assert drifted["accuracy_after_drift"] < drifted["accuracy_before_drift"] - 0.4
    assert drifted["accuracy_after_update"] >= drifted["accuracy_after_drift"] + RECOVERY
    held_out = metrics["held_out_accuracy"]
    assert held_out["federated dp+he @2"] > held_out["deployed @1"]
    assert held_out["federated dp+he @2"] >= held_out["central retrain, no privacy"] - CENTRAL_MARGIN
    assert metrics["processed"] == sum(d["produced"] for d in devices.values()) and metrics["dead_letters"] == 0
    assert metrics["fl_status"].endswith("completed") and metrics["fl_rounds"] == 3
    assert (run_path / "timeline.png").exists()
