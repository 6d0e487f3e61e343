"""Starting a SuperNode on a device: finding Flower's executables, claiming a partition, the command line."""

from __future__ import annotations

import os
import sys
import sysconfig

import pytest

from edge.federated import supernode
from edge.federated.supernode import FlowerNotFound, claim_partition, flower_executable, supernode_command


@pytest.fixture()
def folders(tmp_path, monkeypatch):
    """This Python in tmp/python/, its scripts folder tmp/scripts/, the user's tmp/user/, and PATH = tmp/on-path/ only."""
    made = {name: tmp_path / name for name in ("python", "scripts", "user", "on-path")}
    for folder in made.values():
        folder.mkdir()
    monkeypatch.setattr(sys, "executable", str(made["python"] / "python3"))
    monkeypatch.setattr(sysconfig, "get_path", lambda name, scheme=None: str(
        made["user"] if scheme and scheme.endswith("_user") else made["scripts"]))
    monkeypatch.setenv("PATH", str(made["on-path"]))
    return made


def executable(folder, name="flower-supernode"):
    """An executable file called name in folder."""
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_flower_executable_prefers_the_one_beside_this_python_over_path(folders):
    # Prepare: a venv-like install beside this Python, and another Flower on PATH
    mine = executable(folders["python"])
    executable(folders["on-path"])
    # Execute / Assert
    assert flower_executable("flower-supernode") == mine


def test_flower_executable_finds_a_user_install(folders):
    # Prepare: `pip install --user` on Debian's python3 puts scripts in ~/.local/bin, not beside /usr/bin/python3
    user = executable(folders["user"])
    # Execute / Assert
    assert flower_executable("flower-supernode") == user


def test_flower_executable_falls_back_to_path(folders):
    on_path = executable(folders["on-path"])
    assert flower_executable("flower-supernode") == on_path


def test_flower_executable_skips_a_file_that_is_not_executable(folders):
    (folders["python"] / "flower-supernode").write_text("not a program")
    on_path = executable(folders["on-path"])
    assert flower_executable("flower-supernode") == on_path


def test_a_missing_flower_says_where_it_looked_and_what_to_install(folders):
    with pytest.raises(FlowerNotFound) as missing:
        flower_executable("flower-supernode")
    message = str(missing.value)
    assert message.startswith("flower-supernode: not found in this Python's script folders")
    assert str(folders["python"]) in message and str(folders["user"]) in message and "nor on PATH" in message
    assert f"{sys.executable} -m pip install 'edge-cloud-ml-kit[edge]'" in message


def test_scaled_device_containers_claim_distinct_partitions(tmp_path):
    claimed = [claim_partition(tmp_path) for _ in range(3)]
    assert claimed == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["device-0", "device-1", "device-2"]


def test_supernode_command_uses_tls_with_a_ca_and_names_the_partition(tmp_path, monkeypatch):
    # Prepare: a fixed executable, so the test does not depend on where Flower is installed
    monkeypatch.setattr(supernode, "flower_executable", lambda name: f"/opt/flower/bin/{name}")
    # Execute
    tls = supernode_command("superlink:8000", 2, tmp_path, 9094, root_certificates=tmp_path / "ca.pem", warm=False)
    plain = supernode_command("127.0.0.1:8000", 0, tmp_path, 9095, warm=False)
    # Assert
    assert tls == ["/opt/flower/bin/flower-supernode", "--root-certificates", str(tmp_path / "ca.pem"),
                   "--superlink", "superlink:8000", "--port", "9094",
                   "--node-config", f'partition-id=2 data-dir="{tmp_path.resolve()}"']
    assert plain[1] == "--insecure" and "--root-certificates" not in plain
    assert os.path.basename(plain[0]) == "flower-supernode"
