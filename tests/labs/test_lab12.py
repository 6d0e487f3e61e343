"""Lab 12 in quick mode: drift answered by DP + CKKS federated retraining, no frame leaving a device, numbers held.

The same run serves its dashboard, which headless chromium follows live (Debian's chromium, driven by
Playwright): every device row, the drift alert, an FL round, and each device's model turning to @2.
"""

import shutil
import threading
import warnings

from dashboard_browser import DashboardWatch, chromium_missing
from scenario_checks import FLEET_MILESTONES, FLEET_NEWEST, check_fleet_scenario

from cloud.labkit.runner import run_lab
from cloud.stack.procs import free_port

DEVICES = ["cam-0", "cam-1"]


def page_milestones() -> list:
    """What the dashboard must show during the run, in order, as (name, check(page, timeout_ms))."""
    from playwright.sync_api import expect

    rows = "#devices tbody tr[data-device]"
    return [
        ("every device row", lambda page, t: expect(page.locator(rows)).to_have_count(len(DEVICES), timeout=t)),
        ("a drift alert", lambda page, t: expect(page.locator("#alerts tbody tr.kind-drift").first)
         .to_contain_text("drift", timeout=t)),
        ("an FL round", lambda page, t: expect(page.locator(".run table.rounds tbody tr").first)
         .to_be_visible(timeout=t)),
        (f"every device on {FLEET_NEWEST}", lambda page, t: expect(page.locator("#devices td.model"))
         .to_have_text([FLEET_NEWEST] * len(DEVICES), timeout=t)),
    ]


def test_lab12_heals_the_drifted_devices_privately_and_no_frame_leaves_a_device(lab_settings, monkeypatch, tmp_path):
    # Local processes, on the local stack or the compose broker and SuperLink (container tier);
    # tests/containers/test_overlays.py runs the whole scenario in containers from compose/lab-12.yml.
    port = free_port()
    monkeypatch.setenv("DASHBOARD_PORT", str(port))
    monkeypatch.setenv("DASHBOARD_INTERVAL_S", "0.5")
    lab_done = threading.Event()
    watch = None
    if missing := chromium_missing():
        warnings.warn(f"lab 12's dashboard is not followed in a browser: {missing}", stacklevel=1)
    else:
        watch = DashboardWatch(f"http://127.0.0.1:{port}", page_milestones(), tmp_path / "dashboard.png", lab_done)
        watch.start()
    try:
        metrics, run_path = run_lab("12", ["dashboard=1"], quick=True, settings=lab_settings)
    finally:
        lab_done.set()
        if watch is not None:
            watch.join(60)

    check_fleet_scenario(metrics)  # tests/scenario_checks.py: the same numbers compose/lab-12.yml is held to
    assert [m for m in metrics["milestones"] if not m.endswith("after the detection")] == FLEET_MILESTONES
    assert (run_path / "timeline.png").exists()

    if watch is not None:
        assert not watch.is_alive(), "the browser watch did not end within 60 s of the lab"
        assert watch.missed is None, watch.missed
        assert list(watch.seen) == [name for name, _ in page_milestones()]
        assert watch.reloads == 1 and watch.problems == []  # live updates, no reload, no script error
        assert watch.requests and all(url.startswith(f"http://127.0.0.1:{port}") for url in watch.requests)
        shutil.copy(tmp_path / "dashboard.png", run_path / "dashboard.png")  # the screenshot joins the run folder
        assert (run_path / "dashboard.png").stat().st_size > 20_000
