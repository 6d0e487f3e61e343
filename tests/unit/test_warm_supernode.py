"""The warm SuperNode's own logic: its switch, the Runtime API port it reads, and the fork-per-task loop."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import time

import pytest

from edge.federated import warm_supernode
from edge.federated.supernode import supernode_command
from edge.federated.warm_supernode import WarmClientApps, main, runtime_api_port, warm_enabled


@pytest.mark.parametrize(("value", "warm"), [(None, True), ("1", True), ("0", False), ("off", False),
                                             ("False", False), ("yes", True)])
def test_the_warm_switch_reads_supernode_warm_clientapp(value, warm):
    env = {} if value is None else {"SUPERNODE_WARM_CLIENTAPP": value}
    assert warm_enabled(env) is warm


def test_preload_adds_the_modules_supernode_preload_names():
    assert warm_supernode.preload_modules({}) == warm_supernode.PRELOAD
    extra = warm_supernode.preload_modules({"SUPERNODE_PRELOAD": "torch, opacus,,tenseal"})
    assert extra == (*warm_supernode.PRELOAD, "torch", "opacus", "tenseal")


def test_the_runtime_api_port_comes_from_the_supernode_arguments():
    assert runtime_api_port(["--insecure", "--port", "9500", "--superlink", "x:1"]) == 9500
    assert runtime_api_port(["--port=9501"]) == 9501
    assert runtime_api_port(["--insecure"]) == 9094  # Flower's default


def test_supernode_command_is_warm_by_default_and_stock_on_request(tmp_path, monkeypatch):
    monkeypatch.delenv("SUPERNODE_WARM_CLIENTAPP", raising=False)
    monkeypatch.setattr("edge.federated.supernode.flower_executable", lambda name: f"/opt/flower/bin/{name}")
    warm = supernode_command("127.0.0.1:8000", 1, tmp_path, 9096)
    stock = supernode_command("127.0.0.1:8000", 1, tmp_path, 9096, warm=False)
    monkeypatch.setenv("SUPERNODE_WARM_CLIENTAPP", "0")
    from_env = supernode_command("127.0.0.1:8000", 1, tmp_path, 9096)
    assert warm[1:3] == ["-m", "edge.federated.warm_supernode"]
    assert warm[3:] == stock[1:]  # the same Flower arguments either way
    assert stock[0] == from_env[0] == "/opt/flower/bin/flower-supernode"


def test_isolation_is_refused_because_the_warm_supernode_sets_it(capsys):
    assert main(["--insecure", "--isolation", "subprocess"]) == 2
    assert "SUPERNODE_WARM_CLIENTAPP=0" in capsys.readouterr().err


def wait_for(path, timeout=30.0):
    """The JSON a forked fake ClientApp wrote to path, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return json.loads(path.read_text())
        time.sleep(0.02)
    raise AssertionError(f"no ClientApp wrote {path} within {timeout} s")


def test_each_task_runs_in_its_own_fork_and_a_crash_leaves_the_warm_process_serving(tmp_path, monkeypatch):
    # Prepare: Flower's run_clientapp replaced by one that records what it was given (or crashes on "boom")
    def fake_run_clientapp(runtime_api_address, token, insecure, certificates, parent_pid,
                           runtime_dependency_install):
        if token == "boom":
            raise RuntimeError("a ClientApp bug")
        record = {"pid": os.getpid(), "address": runtime_api_address, "insecure": insecure,
                  "certificates": certificates, "parent_pid": parent_pid}
        (tmp_path / f"{token}.json").write_text(json.dumps(record) + "\n")

    monkeypatch.setattr("flwr.supernode.runtime.run_clientapp.run_clientapp", fake_run_clientapp)
    spec = {"runtime_api_address": "127.0.0.1:9094", "insecure": True, "root_certificates_path": None,
            "parent_pid": os.getpid(), "runtime_dependency_install": False, "suppress_output": True}
    apps = WarmClientApps(preload=("json", "kit_no_such_module")).start()  # a missing module is skipped, said
    try:
        # Execute: two tasks, a crashing one, then a third
        pids = [apps.launch({**spec, "token": token}) for token in ("first", "second", "boom", "third")]
        runs = [wait_for(tmp_path / f"{token}.json") for token in ("first", "second", "third")]
        warm_alive = os.waitpid(apps.pid, os.WNOHANG) == (0, 0)
    finally:
        os.kill(apps.pid, 9)
        os.waitpid(apps.pid, 0)
    # Assert: one fresh child per task, none of them this process or the warm one, arguments passed through
    assert len(set(pids)) == 4 and os.getpid() not in pids and apps.pid not in pids
    assert [r["pid"] for r in runs] == [pids[0], pids[1], pids[3]]
    assert all(r["address"] == "127.0.0.1:9094" and r["insecure"] and r["certificates"] is None
               and r["parent_pid"] == os.getpid() for r in runs)
    assert warm_alive


def test_the_supernodes_waits_are_capped_without_touching_the_real_time_module(monkeypatch):
    # run_supernode swaps start_client_internal's `time` for capped sleeps; check that swap on its own.
    import flwr.supernode.start_client_internal as internal

    assert "time.sleep(3)" in inspect.getsource(internal)  # the idle wait this caps (flwr 1.42)
    calls = {}
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    cli = importlib.import_module("flwr.supernode.cli.flower_supernode")  # the package re-exports a same-named function
    monkeypatch.setattr(cli, "flower_supernode", lambda: calls.setdefault("ran", 1))
    monkeypatch.setattr(internal, "time", internal.time)  # restored after the test
    monkeypatch.setenv("SUPERNODE_IDLE_POLL_S", "0.01")
    warm_supernode.run_supernode(["--insecure"])
    start = time.monotonic()
    internal.time.sleep(3)  # Flower's idle wait
    slept = time.monotonic() - start
    assert calls == {"ran": 1}
    assert slept < 0.5 and internal.time.monotonic() > 0 and time.sleep is not internal.time.sleep


def test_object_pulls_that_find_nothing_yet_retry_within_a_tenth_of_a_second():
    # Prepare: an object that is "not there yet" twice (the SuperNode still pulling it), then there
    from types import SimpleNamespace

    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

    tries = []

    def pull_object(object_id):
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise ObjectUnavailableError(object_id)
        return b"content"

    caller = SimpleNamespace()
    warm_supernode.retry_object_pulls_sooner(caller)
    # Execute
    start = time.monotonic()
    contents = caller.pull_objects(["abc"], pull_object, initial_backoff=1.0, backoff_cap=10.0)  # Flower's values
    took = time.monotonic() - start
    # Assert: the short backoff replaced Flower's 1 s + 2 s (which would take 3 s here)
    assert contents == {"abc": b"content"} and len(tries) == 3
    assert took < 0.5, took
