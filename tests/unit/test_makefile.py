"""The Makefile, the user's interface: help lists targets, lab-NN passes options through."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make(*args: str) -> str:
    """Output of `make` in the checkout (dry runs only)."""
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout


def test_help_lists_every_target_with_a_line():
    targets = set(re.findall(r"^([a-z0-9%-]+):.*## ", (ROOT / "Makefile").read_text(), re.M))
    listed = set(re.findall(r"make (\S+)", make("help")))
    assert {"lab-%", "test", "test-under-load", "up", "down", "logs", "doctor", "bench", "certs"} <= targets
    assert targets <= listed


def test_lab_target_passes_quick_runtime_and_args():
    dry = make("-n", "lab-07", "QUICK=1", "RUNTIME=local", "ARGS=devices=5 drift-at=40")
    assert "-m cloud.cli lab 07 --runtime local --quick devices=5 drift-at=40" in dry


def test_quick_zero_means_full_mode():
    dry = make("-n", "lab-07", "QUICK=0")
    assert "--quick" not in dry


def test_under_load_runs_the_integration_and_lab_tiers_beside_two_hogs_by_default():
    assert '-m pytest -m "integration or labs" --cpu-hog 2' in make("-n", "test-under-load")
    assert "--cpu-hog 4 -x" in make("-n", "test-under-load", "HOGS=4", "PYTEST_ARGS=-x")
