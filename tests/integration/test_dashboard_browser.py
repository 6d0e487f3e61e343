"""The dashboard in a real browser (Debian's chromium driven by Playwright): it follows a changing scenario live, and shows hostile device ids as text."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_browser import chromium_missing, launched_chromium

from cloud.dashboard.server import DashboardServer
from cloud.streaming.store import EventStore
from edge.wire.events import Alert

DEVICES = ["cam-0", "cam-1", "cam-2"]
WAIT_MS = 15_000  # per expectation: the machine is busy, the page updates every 0.2 s
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """One headless chromium for the module (Playwright's own browser download is never used)."""
    if missing := chromium_missing():
        pytest.skip(missing)
    with launched_chromium() as browser:
        yield browser


def write_stats(folder: Path, device: str, model: str, served: int, file_name: str | None = None) -> None:
    """A device stats file as ``python -m edge.streaming --stats`` writes it (atomically)."""
    stats = {"device": device, "served": served, "model": model, "produced": {"edge.predictions": served},
             "delivered": {"edge.predictions": served}, "pending": 0, "t": time.time(),
             "drift_at": None, "final": False}
    tmp = folder / f"{file_name or device}.json.tmp"
    tmp.write_text(json.dumps(stats))
    tmp.replace(folder / f"{file_name or device}.json")


def predictions(store: EventStore, device: str, model: str, start: int, count: int, correct: int,
                t0: float) -> None:
    """Labelled predictions in the processor's store (one transaction), ten a second from ``t0``."""
    store.begin()
    store.add_events([[f"{device}-{i}", "prediction", device, i, t0 + (i % 1000) * 0.1, "edge.predictions", 0, i,
                       model, int(i % 10 < correct * 10), 1, 0.1, "processor-0", t0 + (i % 1000) * 0.1]
                      for i in range(start, start + count)])
    store.commit()


def journal(folder: Path, rounds: int) -> None:
    """fl-metrics.json with ``rounds`` finished rounds of three devices."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = [{"round": r, "train": [{"node_id": 10 + p, "partition_id": p, "num_examples": 100, "train_loss": 0.5,
                                       "received_accuracy": 0.7} for p in range(3)],
                "evaluate": [], "dropouts": [], "errors": [], "bytes_up": 30456, "bytes_down": 30456,
                "train_loss": 0.5, "central": {"loss": 0.4, "accuracy": 0.91}, "seconds": 3.2}
               for r in range(1, rounds + 1)]
    tmp = folder / "fl-metrics.tmp"
    tmp.write_text(json.dumps({"run_id": 1, "config": {"num_server_rounds": 3}, "status": "running",
                               "rounds": entries, "central_initial": {"loss": 2.3, "accuracy": 0.1}}))
    tmp.replace(folder / "fl-metrics.json")


def play_scenario(stream: Path, fl: Path, go: threading.Event, stop: threading.Event) -> None:
    """Once ``go`` is set: devices appear, drift is detected, an FL round closes, every device moves to @2."""
    go.wait(30)
    t0 = time.time() - 8  # event time: 8 s of history on @1, then the update
    store = EventStore(stream / "processed.db")
    try:
        for n, device in enumerate(DEVICES):  # devices come online one after another
            write_stats(stream, device, "digits-stream@1", 50)
            predictions(store, device, "digits-stream@1", n * 1000, 50, 0.9, t0)
            if stop.wait(0.3):
                return
        store.begin()
        store.add_alert(Alert(device_id="cam-1", alert="drift", model="digits-stream@1", score=0.5,
                              source_event_id="cam-1-1040", detail="ADWIN: accuracy fell to 0.40"), source_ts=t0 + 4)
        store.commit()
        journal(fl, 1)
        if stop.wait(0.3):
            return
        (stream / "updates.json").write_text(json.dumps([{"model": "digits-stream@2", "published_at": time.time(),
                                                          "accuracy_before": 0.4, "accuracy_after": 0.95}]))
        for n, device in enumerate(DEVICES):
            predictions(store, device, "digits-stream@2", n * 1000 + 50, 30, 1.0, t0)
            write_stats(stream, device, "digits-stream@2", 80)
            if stop.wait(0.3):
                return
    finally:
        store.close()


def test_the_page_follows_a_changing_scenario_without_reloading(browser, tmp_path):
    stream, fl = tmp_path / "stream", tmp_path / "fl"
    stream.mkdir()
    go, stop = threading.Event(), threading.Event()
    writer = threading.Thread(target=play_scenario, args=(stream, fl, go, stop), daemon=True)
    writer.start()
    expect = pytest.importorskip("playwright.sync_api").expect
    requests: list[str] = []
    problems: list[str] = []  # script errors and refused resources (the CSP would report here)
    with DashboardServer(stream_folder=stream, fl_folders=[fl], port=0, interval_s=0.2) as server:
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.on("request", lambda request: requests.append(request.url))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        try:
            page.goto(server.url, timeout=WAIT_MS)
            expect(page.locator("#status")).to_have_text("live", timeout=WAIT_MS)
            page.evaluate("window.loadedOnce = true")  # gone if the page reloads
            go.set()

            rows = page.locator("#devices tbody tr[data-device]")
            expect(rows).to_have_count(3, timeout=WAIT_MS)
            expect(page.locator("#alerts tbody tr.kind-drift")).to_contain_text(["drift"], timeout=WAIT_MS)
            expect(page.locator(".run table.rounds tbody tr")).to_have_count(1, timeout=WAIT_MS)
            expect(page.locator("#devices td.model")).to_have_text(["digits-stream@2"] * 3, timeout=WAIT_MS)
            expect(page.locator("#updates tbody")).to_contain_text("digits-stream@2", timeout=WAIT_MS)
            expect(page.locator("#timeline svg path.edge")).to_have_count(1, timeout=WAIT_MS)
            expect(page.locator("#timeline svg line.marker")).to_have_count(2, timeout=WAIT_MS)  # detected, update
            round_row = page.locator(".run table.rounds tbody tr").first.text_content()
            devices = [r.text_content() for r in rows.all()]
            still_same_page = page.evaluate("window.loadedOnce === true")
            shot = tmp_path / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            stop.set()
            page.close()
    writer.join(10)

    assert still_same_page
    assert [d.split("digits")[0] for d in devices] == DEVICES
    assert "0, 1, 2" in round_row and "0.910" in round_row  # participants and central accuracy
    assert shot.exists() and shot.stat().st_size > 20_000
    assert requests and all(url.startswith(server.url) for url in requests)  # nothing from the network
    assert problems == []


def test_a_hostile_device_id_shows_as_text_and_never_runs(browser, tmp_path):
    write_stats(tmp_path, HOSTILE, "digits-stream@1", 10, file_name="evil")
    store = EventStore(tmp_path / "processed.db")
    store.begin()
    store.add_alert(Alert(device_id=HOSTILE, alert="anomaly", model="m@1", score=0.9, detail=HOSTILE),
                    source_ts=1_700_000_000)
    store.add_dead_letter("edge.predictions", 0, 1, f"bad device id {HOSTILE}", 30)
    store.commit()
    store.close()
    expect = pytest.importorskip("playwright.sync_api").expect
    dialogs: list[str] = []
    with DashboardServer(stream_folder=tmp_path, port=0, interval_s=0.2) as server:
        page = browser.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        try:
            page.goto(server.url, timeout=WAIT_MS)
            row = page.locator("#devices tbody tr[data-device]")
            expect(row).to_have_count(1, timeout=WAIT_MS)
            expect(page.locator("#dead-letters tbody")).to_contain_text(HOSTILE, timeout=WAIT_MS)
            text = row.text_content()
            images = page.locator("img").count()
            alert_text = page.locator("#alerts tbody").text_content()
        finally:
            page.close()

    assert HOSTILE in text
    assert alert_text.count(HOSTILE) == 2  # the device and the detail
    assert images == 0  # not in the devices table, nor anywhere on the page
    assert dialogs == []
