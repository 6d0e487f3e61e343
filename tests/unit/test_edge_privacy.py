"""The device's privacy ledger file: persistence, δ fixed for life, no torch on import."""

import json
import subprocess
import sys

import pytest

from edge.private.dp import PrivacyLedger, steps_per_epoch


def test_ledger_round_trips_through_its_file(tmp_path):
    ledger = PrivacyLedger.open(tmp_path, "device-3", budget=2.0, delta=1e-5)
    assert ledger.history == [] and not ledger.path.exists()  # nothing written until a round is recorded
    ledger.record(noise_multiplier=1.2, sample_rate=0.05, steps=20, round_id=1)
    ledger.record(noise_multiplier=1.2, sample_rate=0.05, steps=20, round_id=2)
    again = PrivacyLedger.open(tmp_path, "device-3", budget=2.0, delta=1e-5)
    assert again.history == [(1.2, 0.05, 20), (1.2, 0.05, 20)]
    assert [r["round"] for r in again.rounds] == [1, 2]
    assert json.loads(ledger.path.read_text())["client"] == "device-3"
    assert PrivacyLedger.open(tmp_path, "device-4", budget=2.0).history == []  # one ledger per device


def test_ledger_refuses_a_different_delta(tmp_path):
    PrivacyLedger.open(tmp_path, "d", budget=2.0, delta=1e-5).record(1.0, 0.1, 5)
    with pytest.raises(ValueError, match="delta"):
        PrivacyLedger.open(tmp_path, "d", budget=2.0, delta=1e-6)


@pytest.mark.parametrize("budget, delta", [(0.0, 1e-5), (1.0, 0.0), (1.0, 1.5)])
def test_bad_budget_is_refused(tmp_path, budget, delta):
    with pytest.raises(ValueError, match="budget"):
        PrivacyLedger.open(tmp_path, "d", budget=budget, delta=delta)


def test_steps_per_epoch_is_one_over_q():
    assert steps_per_epoch(1000, 100) == 10
    assert steps_per_epoch(10, 64) == 1
    with pytest.raises(ValueError):
        steps_per_epoch(0, 32)


def test_importing_edge_privacy_does_not_import_torch_or_opacus():
    code = "import sys, edge.private.dp; print(sorted(m for m in ('torch', 'opacus') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
