"""The dashboard's snapshot, read from a made-up scenario folder written with the kit's own store writer, and its routes."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from cloud.dashboard.app import create_app
from cloud.dashboard.server import DashboardServer
from cloud.dashboard.snapshot import RECENT_WINDOW, snapshot
from cloud.stack.procs import PortInUseError
from cloud.streaming.store import EventStore
from edge.wire.events import Alert

T0 = 1_700_000_000.0


def prediction(device: str, seq: int, model: str, correct: int, online: int | None, ts: float) -> list:
    """A processed prediction row in EventStore.EVENT_COLUMNS order."""
    return [f"{device}-{seq}", "prediction", device, seq, ts, "edge.predictions", 0, seq, model, correct, online,
            0.1, "processor-0", ts + 0.05]


def write_store(folder: Path) -> None:
    """processed.db as the processors write it: predictions, two alerts, three dead letters."""
    store = EventStore(folder / "processed.db")
    store.begin()
    rows = []
    # cam-0: 150 predictions on @1, all correct; then 50 on @2, 40 correct (recent window = the last 100).
    for i in range(150):
        rows.append(prediction("cam-0", i, "digits-stream@1", 1, 1, T0 + i * 0.1))
    for i in range(150, 200):
        rows.append(prediction("cam-0", i, "digits-stream@2", int(i % 5 != 0), 0, T0 + i * 0.1))
    # cam-1: 20 predictions on @1, half correct; the online model right on all.
    for i in range(20):
        rows.append(prediction("cam-1", i, "digits-stream@1", i % 2, 1, T0 + i * 0.2))
    store.add_events(rows)
    store.add_alert(Alert(device_id="cam-0", alert="drift", model="digits-stream@1", score=0.42,
                          source_event_id="cam-0-120", detail="ADWIN: accuracy 0.95 -> 0.40"), source_ts=T0 + 12)
    store.add_alert(Alert(device_id="cam-1", alert="anomaly", model="digits-stream@1", score=0.97,
                          source_event_id="cam-1-3", detail="half-space trees score 0.97"), source_ts=T0 + 0.6)
    store.add_dead_letter("edge.predictions", 0, 500, "not JSON: Expecting value", 12)
    store.add_dead_letter("edge.predictions", 1, 501, "not JSON: Expecting value", 9)
    store.add_dead_letter("edge.predictions", 0, 502, "schema v9 unknown", 40)
    store.commit()
    store.close()


def write_scenario(folder: Path) -> None:
    """A streaming scenario folder: the store, two device stats files, the responder's updates."""
    folder.mkdir(parents=True, exist_ok=True)
    write_store(folder)
    for name, model, t in (("cam-0", "digits-stream@2", T0 + 30), ("cam-1", "digits-stream@1", T0 + 25)):
        (folder / f"{name}.json").write_text(json.dumps({
            "device": name, "served": 200, "model": model, "produced": {"edge.predictions": 200},
            "delivered": {"edge.predictions": 198}, "pending": 2, "t": t, "drift_at": T0 + 10, "final": False}))
    (folder / "updates.json").write_text(json.dumps([{"model": "digits-stream@2", "published_at": T0 + 14,
                                                      "accuracy_before": 0.41, "accuracy_after": 0.93,
                                                      "retrain_s": 2.5}]))
    (folder / "processor-0.json").write_text(json.dumps({"duplicates": 3}))  # not a device


def train_reply(partition: int, accuracy: float, epsilon: float | None = None) -> dict:
    """A train reply as the journal records it."""
    row = {"node_id": 11949444764598653953 + partition, "num_examples": 359, "train_loss": 1.2 - 0.1 * partition,
           "received_accuracy": accuracy, "partition_id": partition, "train_seconds": 0.03}
    if epsilon is not None:
        row.update(epsilon=epsilon, epsilon_rdp=epsilon * 1.2, dp_budget=8.0, dp_steps=20)
    return row


def write_journal(folder: Path, privacy: str | None = None) -> None:
    """fl-metrics.json of a two-round run (round 2: partition 2 dropped; private runs: ε and ciphertext bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    dp = privacy is not None and "dp" in privacy
    config = {"num_server_rounds": 2, "strategy": "fedavg", "min_nodes": 2}
    if privacy:
        config.update(privacy=privacy, dp_budgets="8")
    rounds = [
        {"round": 1, "train": [train_reply(p, 0.1 + p / 100, 1.5 + p / 10 if dp else None) for p in (2, 0, 1)],
         "evaluate": [], "dropouts": [], "errors": [], "bytes_down": 30456, "bytes_up": 30456,
         "train_loss": 1.1, "central": {"loss": 0.65, "accuracy": 0.84}, "seconds": 12.4},
        {"round": 2, "train": [train_reply(p, 0.8 + p / 100, 2.5 + p / 10 if dp else None) for p in (0, 1)],
         "evaluate": [{"node_id": 5, "partition_id": 0, "num_examples": 90, "eval_accuracy": 0.9}],
         "dropouts": [{"phase": "train", "node_id": 11949444764598653955, "partition_id": 2,
                       "code": None, "reason": "no reply within the round timeout of 10.0 s"}],
         "errors": [], "bytes_down": 30456, "bytes_up": 20304, "train_loss": 0.5,
         "central": None if privacy and "he" in privacy else {"loss": 0.4, "accuracy": 0.9}, "seconds": 8.0},
    ]
    journal = {"run_id": 77, "config": config, "status": "completed", "rounds": rounds,
               "central_initial": {"loss": 2.3, "accuracy": 0.1}}
    if privacy and "he" in privacy:
        journal["he_public_context_bytes"] = 123456
    (folder / "fl-metrics.json").write_text(json.dumps(journal))


@pytest.fixture()
def scenario(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A streaming folder, a lab 08 run folder and a lab 11 folder holding a dp+he run."""
    write_scenario(tmp_path / "stream")
    write_journal(tmp_path / "fl")
    write_journal(tmp_path / "private" / "dp+he", privacy="dp+he")
    return tmp_path / "stream", [tmp_path / "fl", tmp_path / "private"]


def test_the_snapshot_shows_each_device_with_its_model_and_recent_accuracy(scenario):
    stream_folder, fl_folders = scenario

    data = snapshot(stream_folder, fl_folders)

    stream = data["stream"]
    assert stream["totals"] == {"devices": 2, "processed": 220, "labelled": 220, "dead_letters": 3,
                                "drift_alerts": 1, "anomaly_alerts": 1, "updates": 1}
    devices = {d["device"]: d for d in stream["devices"]}
    assert sorted(devices) == ["cam-0", "cam-1"]  # processor-0.json and updates.json are not devices
    cam0, cam1 = devices["cam-0"], devices["cam-1"]
    assert (cam0["model"], cam0["version"], cam1["model"], cam1["version"]) == (
        "digits-stream@2", "2", "digits-stream@1", "1")
    # cam-0's last 100: 50 right on @1, then 40 of 50 right on @2.
    assert cam0["recent_window"] == RECENT_WINDOW == 100
    assert cam0["accuracy_recent"] == pytest.approx(0.9)
    assert (cam1["recent_window"], cam1["accuracy_recent"]) == (20, 0.5)
    assert (cam0["labelled"], cam0["processed"], cam0["delivered"], cam0["pending"]) == (200, 200, 198, 2)
    assert cam0["last_seen"] == pytest.approx(T0 + 30)


def test_the_snapshot_lists_alerts_updates_and_dead_letters_with_reasons(scenario):
    data = snapshot(*scenario)

    stream = data["stream"]
    assert [(a["kind"], a["device"], a["source_ts"]) for a in stream["alerts"]] in (
        [("anomaly", "cam-1", T0 + 0.6), ("drift", "cam-0", T0 + 12)],
        [("drift", "cam-0", T0 + 12), ("anomaly", "cam-1", T0 + 0.6)])  # both raised within the same instant
    drift = next(a for a in stream["alerts"] if a["kind"] == "drift")
    assert (drift["score"], drift["detail"]) == (0.42, "ADWIN: accuracy 0.95 -> 0.40")
    assert stream["dead_letters"]["count"] == 3
    assert stream["dead_letters"]["reasons"] == [{"reason": "not JSON: Expecting value", "count": 2},
                                                 {"reason": "schema v9 unknown", "count": 1}]
    assert sorted(r["offset"] for r in stream["dead_letters"]["recent"]) == [500, 501, 502]
    assert [(u["model"], u["accuracy_before"], u["accuracy_after"]) for u in stream["updates"]] == [
        ("digits-stream@2", 0.41, 0.93)]
    assert [m["kind"] for m in stream["timeline"]["markers"]] == ["drift injected", "drift detected",
                                                                 "update published"]


def test_the_timeline_bins_edge_and_online_accuracy(scenario):
    line = snapshot(*scenario)["stream"]["timeline"]

    assert line["t0"] == T0 and line["bin_s"] == 1.0  # 19.9 s of events: one-second bins
    assert sum(p["n"] for p in line["points"]) == 220
    first = line["points"][0]  # the first second: cam-0's 10 events all right, cam-1's 2 of 5
    assert (first["n"], first["edge"], first["online"]) == (15, 0.8, 1.0)
    last = line["points"][-1]  # cam-0 alone on @2: 8 of 10 right, the online model wrong throughout
    assert (last["n"], last["edge"], last["online"]) == (10, 0.8, 0.0)


def test_the_snapshot_shows_fl_rounds_participants_epsilon_and_he_bytes(scenario):
    runs = snapshot(*scenario)["federated"]

    assert [r["label"] for r in runs] == ["fl", "dp+he"]
    plain, private = runs
    assert [r["round"] for r in plain["rounds"]] == [1, 2]
    assert [r["participants"] for r in plain["rounds"]] == [[0, 1, 2], [0, 1]]
    assert [r["central_accuracy"] for r in plain["rounds"]] == [0.84, 0.9]
    assert plain["rounds"][1]["dropouts"][0]["partition_id"] == 2
    assert (plain["privacy"], plain["encrypted"], plain["epsilon"]) == (None, False, [])
    assert private["privacy"] == "dp+he" and private["encrypted"] is True
    # ε a device has spent is its largest so far; partition 2 trained in round 1 only.
    assert private["epsilon"] == [{"partition_id": "0", "epsilon": 2.5}, {"partition_id": "1", "epsilon": 2.6},
                                  {"partition_id": "2", "epsilon": 1.7}]
    assert [(r["bytes_up"], r["bytes_down"], r["encrypted"]) for r in private["rounds"]] == [
        (30456, 30456, True), (20304, 30456, True)]
    assert private["rounds"][1]["central_accuracy"] is None  # the server cannot read an encrypted model
    assert private["he_public_context_bytes"] == 123456


def test_missing_files_give_an_empty_snapshot_not_an_error(tmp_path):
    data = snapshot(tmp_path / "not-yet", [tmp_path / "no-run"])

    assert data["stream"]["totals"]["devices"] == 0 and data["stream"]["found"] is False
    assert data["stream"]["timeline"]["points"] == []
    assert data["federated"][0]["status"] == "waiting for fl-metrics.json"


def test_routes_serve_the_snapshot_the_page_and_health_and_refuse_writes(scenario):
    stream_folder, fl_folders = scenario
    client = TestClient(create_app(stream_folder, fl_folders), base_url="http://127.0.0.1")

    snap = client.get("/api/snapshot")
    page = client.get("/")

    assert snap.status_code == 200 and snap.json()["stream"]["totals"]["devices"] == 2
    assert client.get("/health").json()["status"] == "ok"
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/static/dashboard.js").text
    assert "createTextNode" in script and not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write",
                                                        script)
    assert client.get("/static/../app.py").status_code == 404
    assert client.post("/api/snapshot").status_code == 405
    # Bound to loopback, the app refuses a foreign Host header (DNS rebinding).
    assert client.get("/health", headers={"host": "evil.example"}).status_code == 400


def first_event(url: str, timeout: float = 10.0) -> dict:
    """The JSON of the first ``data:`` line the /events stream sends."""
    with httpx.stream("GET", url + "/events", timeout=timeout) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                return json.loads(line[len("data: "):])
    raise AssertionError("the stream ended without a data line")


def test_the_event_stream_pushes_the_snapshot_and_its_changes(scenario):
    stream_folder, fl_folders = scenario
    with DashboardServer(stream_folder=stream_folder, fl_folders=fl_folders, port=0, interval_s=0.2) as server:
        first = first_event(server.url)
        stats = json.loads((stream_folder / "cam-1.json").read_text())
        (stream_folder / "cam-1.json").write_text(json.dumps({**stats, "model": "digits-stream@2"}))
        deadline = time.monotonic() + 10
        with httpx.stream("GET", server.url + "/events", timeout=10) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    models = {d["device"]: d["model"] for d in json.loads(line[6:])["stream"]["devices"]}
                    if models["cam-1"] == "digits-stream@2" or time.monotonic() > deadline:
                        break

    assert first["stream"]["totals"]["devices"] == 2 and first["federated"][0]["rounds"][0]["round"] == 1
    assert first["now"] == pytest.approx(time.time(), abs=60)
    assert models == {"cam-0": "digits-stream@2", "cam-1": "digits-stream@2"}
    assert not server.healthy()  # stopped


def test_a_taken_port_is_named_in_the_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]

        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1 is already in use"):
            DashboardServer(stream_folder=tmp_path, port=port).start()
