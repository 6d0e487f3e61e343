"""The numbers lab 07's streaming scenario promises, checked the same way for `make lab-07` and compose/lab-07.yml."""

DETECT_WITHIN_EVENTS = 300  # labelled predictions after the drift starts
RECOVERY_MARGIN = 0.08  # accuracy after the update within this of the pre-drift level
RESPONSE_PHASES = ["collect window", "fine-tune", "write and verify ONNX", "sign and send"]


def scenario_milestones(after_update: int) -> list[str]:
    """The milestones the scenario passes, in order."""
    return ["drift injected", "drift detected", "update published", "every device on the update",
            f"{after_update} labelled events per device on the update", "devices drained and stopped",
            "counts settled"]


def check_streaming_scenario(metrics: dict, devices: int, after_update: int) -> None:
    """Drift detected in time, every device on digits-stream@2, none lost or counted twice, accuracy recovered."""
    expected = scenario_milestones(after_update)
    assert [m for m in metrics["milestones"] if m in expected] == expected  # in this order
    found = metrics["devices"]
    assert len(found) == devices
    for name, d in found.items():
        assert d["produced"] == d["acknowledged"] == d["processed"] > 0, name  # none lost, none counted twice
        assert d["model"] == metrics["new_model"] == "digits-stream@2", name
    assert metrics["labelled_on_update_min"] >= after_update
    assert metrics["processed"] == sum(d["produced"] for d in found.values())
    assert metrics["dead_letters"] == 0
    assert metrics["detection_delay_events"] is not None and metrics["detection_delay_events"] <= DETECT_WITHIN_EVENTS
    assert metrics["accuracy_after_drift"] < metrics["accuracy_before_drift"] - 0.3
    assert metrics["accuracy_after_update"] >= metrics["accuracy_before_drift"] - RECOVERY_MARGIN
    assert metrics["updates"][0]["accuracy_after"] > metrics["updates"][0]["accuracy_before"]
    assert list(metrics["response_phases_s"]) == RESPONSE_PHASES
    assert metrics["swapped_after_detection_s"] is not None  # measured (reported in the README, not asserted)


# Lab 12's private, self-healing fleet: the same checks for `make lab-12` (quick) and compose/lab-12.yml.
FLEET_MILESTONES = ["drift injected", "drift detected", "every device's window holds 600 frames seen after the drift",
                    "round 1's replies", "round 2's replies", "round 3's replies", "run finished",
                    "every device on the update", "150 labelled events per device on the update",
                    "devices drained and stopped", "counts settled"]
FLEET_RECOVERY = 0.08  # a drifted device's accuracy on the update above the old model's after the drift (quick: +0.18, +0.27)
FLEET_CENTRAL_MARGIN = 0.20  # the federated dp+he model within this of the central, non-private retrain (quick: 0.16 seen)
FLEET_NEWEST = "digits-fleet@2"


def check_fleet_scenario(metrics: dict) -> None:
    """Drifted camera named and healed privately, every device (ONNX or LiteRT) on @2, no frame on any topic."""
    assert [m for m in metrics["milestones"] if m in FLEET_MILESTONES] == FLEET_MILESTONES  # in this order
    # no frame or feature vector on any topic, and something was on them
    assert metrics["records"] > 1000 and metrics["records_with_features"] == 0
    # the cloud named exactly the devices that drifted, from their error streams
    assert metrics["drifted_named"] == metrics["drifted_actual"] == ["cam-0"]
    devices = metrics["devices"]
    assert {name: d["runtime"] for name, d in devices.items()} == {"cam-0": "onnxruntime", "cam-1": "litert"}
    for name, d in devices.items():
        assert d["model"] == FLEET_NEWEST, name  # drifted or not, ONNX or TFLite, every device ends on the new version
        assert d["produced"] == d["acknowledged"] == d["processed"] > 0, name  # none lost, none counted twice
        assert 0 < d["epsilon"] <= d["budget"], name
        assert d["accuracy_before_drift"] >= 0.90, name
    drifted = devices["cam-0"]
    assert drifted["accuracy_after_drift"] < drifted["accuracy_before_drift"] - 0.4
    assert drifted["accuracy_after_update"] >= drifted["accuracy_after_drift"] + FLEET_RECOVERY
    held_out = metrics["held_out_accuracy"]
    assert held_out["federated dp+he @2"] > held_out["deployed @1"]
    assert held_out["federated dp+he @2"] >= held_out["central retrain, no privacy"] - FLEET_CENTRAL_MARGIN
    assert metrics["update_bundle_bytes"]["onnxruntime"] > 0 and metrics["update_bundle_bytes"]["litert"] > 0
    assert metrics["processed"] == sum(d["produced"] for d in devices.values()) and metrics["dead_letters"] == 0
    assert metrics["fl_status"].endswith("completed") and metrics["fl_rounds"] == 3
