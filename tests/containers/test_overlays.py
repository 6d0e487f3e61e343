"""The compose overlays, run for real: each comes up healthy with `up --wait` and completes its scenario.

compose/lab-07.yml runs lab 07's streaming scenario (drift, retrain, signed update, swap) and its one-shot
``report`` service checks the same milestones and numbers as tests/labs/test_lab07.py; compose/lab-08.yml
federates across three SuperNode containers, with and without compose/tls.yml in front of the SuperLink;
compose/lab-12.yml runs lab 12's private self-healing fleet (device and trainer containers, the ``heal``
one-shot) and is held to the numbers of tests/labs/test_lab12.py.
Results land in the checkout's runs/compose-lab-NN, as they do for a learner.
"""

import json
import os
import shutil
import subprocess

import pytest
from scenario_checks import FLEET_MILESTONES, check_fleet_scenario, check_streaming_scenario

from cloud.settings import KIT_ROOT, StackSettings
from cloud.stack.compose import compose_command, compose_env

WAIT_S = 900  # a deadline for `up --wait` and for each one-shot service, named when it passes


def compose(overlays: tuple[str, ...], *args: str, env: dict | None = None,
            timeout: float = WAIT_S) -> subprocess.CompletedProcess:
    """`docker compose` with the base file, the overlays and the tier's stand-in overlay (COMPOSE_OVERLAYS)."""
    argv = compose_command(*args, overlays=overlays, extra=os.environ.get("COMPOSE_OVERLAYS", ""))
    full_env = {**compose_env(StackSettings(runs_dir=KIT_ROOT / "runs")), **(env or {})}
    try:
        return subprocess.run(argv, capture_output=True, text=True, cwd=KIT_ROOT, env=full_env, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"`{' '.join(args)}` did not finish within {timeout:.0f} s: {exc.stdout} {exc.stderr}")


def output(done: subprocess.CompletedProcess, overlays: tuple[str, ...] = ()) -> str:
    """The end of a compose command's output, and with overlays the services' last log lines, for a failure."""
    text = (done.stdout + done.stderr)[-4000:]
    if overlays and done.returncode != 0:
        logs = compose(overlays, "--profile", "*", "logs", "--tail", "30", timeout=120)
        text += "\n--- service logs ---\n" + logs.stdout[-6000:]
    return text


def test_compose_lab07_runs_the_lab_scenario_to_the_same_numbers(container_stack):
    overlays, profile = ("lab-07",), ("--profile", "lab-07")
    folder = KIT_ROOT / "runs" / "compose-lab-07"
    try:
        up = compose(overlays, *profile, "up", "-d", "--wait", "--wait-timeout", str(WAIT_S))
        assert up.returncode == 0, output(up, overlays)
        waited = compose(overlays, *profile, "wait", "report")
        report = compose(overlays, *profile, "logs", "--no-log-prefix", "report")
        print(report.stdout[-6000:])
        assert waited.returncode == 0 and waited.stdout.strip().endswith("0"), output(report)
        metrics = json.loads((folder / "summary.json").read_text())
        check_streaming_scenario(metrics, devices=3, after_update=400)
        assert metrics["milestones"][0] == "3 devices streaming"
        assert metrics["milestones"][-1] == "TFLite bundle of the update signed"
        assert metrics["updates"][0]["tflite_bundle_bytes"] > 0  # the overlay's responder also signs TFLite
        assert (folder / "timeline.png").exists()
    finally:
        compose(overlays, *profile, "down", "--volumes", "--remove-orphans")


@pytest.mark.parametrize("overlays", [("lab-08",), ("lab-08", "tls")], ids=["plain", "tls"])
def test_compose_lab08_federates_across_supernode_containers(container_stack, overlays):
    profile, rounds = ("--profile", "lab-08"), 3
    env = {"FL_ROUNDS": str(rounds), "FL_DEVICES": "3"}
    certs = KIT_ROOT / "certs"
    made_certs = "tls" in overlays and not (certs / "ca.pem").exists()
    if made_certs:  # what `make certs` does: a CA and a server certificate for this host and "superlink"
        from cloud.stack.certs import make_certs

        make_certs(certs)
    journal_path = KIT_ROOT / "runs" / "compose-lab-08" / "fl-metrics.json"
    journal_path.unlink(missing_ok=True)
    try:
        up = compose(overlays, *profile, "up", "-d", "--wait", "--wait-timeout", str(WAIT_S), env=env)
        assert up.returncode == 0, output(up, overlays)
        fl_run = compose(overlays, *profile, "run", "--rm", "fl-run", env=env)
        print(fl_run.stdout[-3000:])
        assert fl_run.returncode == 0, output(fl_run, overlays)
        journal = json.loads(journal_path.read_text())
        assert journal["status"] == "completed", journal.get("error")
        assert [r["round"] for r in journal["rounds"]] == list(range(1, rounds + 1))
        assert all(len(r["train"]) == 3 for r in journal["rounds"])  # every SuperNode container trained each round
        assert journal["rounds"][-1]["central"]["accuracy"] >= 0.90  # lab 08: 3 IID devices, 3 rounds >= 0.90
    finally:
        compose(overlays, *profile, "down", "--volumes", "--remove-orphans", env=env)
        if made_certs:
            shutil.rmtree(certs, ignore_errors=True)


def test_compose_lab12_heals_the_fleet_in_containers_to_the_same_numbers(container_stack):
    overlays, profile = ("lab-12",), ("--profile", "lab-12")
    folder = KIT_ROOT / "runs" / "compose-lab-12"
    (KIT_ROOT / "artifacts").mkdir(exist_ok=True)  # bind-mounted: made by you, not by the engine as root
    try:
        up = compose(overlays, *profile, "up", "-d", "--wait", "--wait-timeout", str(WAIT_S))
        assert up.returncode == 0, output(up, overlays)
        waited = compose(overlays, *profile, "wait", "heal")
        heal = compose(overlays, *profile, "logs", "--no-log-prefix", "heal")
        print(heal.stdout[-8000:])
        assert waited.returncode == 0 and waited.stdout.strip().endswith("0"), output(heal, overlays)
        metrics = json.loads((folder / "summary.json").read_text())
        check_fleet_scenario(metrics)  # the numbers `make lab-12` is held to
        assert metrics["milestones"][:2] == ["2 devices streaming", "drift injected"]
        assert "2 SuperNodes online" in metrics["milestones"]  # the two trainer containers
        assert [m for m in metrics["milestones"] if m in FLEET_MILESTONES][-1] == "counts settled"
        assert (folder / "timeline.png").exists()
    finally:
        compose(overlays, *profile, "down", "--volumes", "--remove-orphans")
