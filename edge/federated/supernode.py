"""Make this device a Flower SuperNode: find Flower's executables, claim a partition, build the command line."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import sysconfig
from pathlib import Path

from edge.federated.warm_supernode import warm_enabled


class FlowerNotFound(FileNotFoundError):
    """A Flower executable (flower-supernode, flwr) is neither with this Python's scripts nor on PATH."""


def _script_dirs() -> list[Path]:
    """Where pip puts console scripts for this Python: beside it (a venv), its scripts folder, the user's one."""
    dirs = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():  # `pip install --user`, e.g. ~/.local/bin on a Raspberry Pi
        dirs.append(Path(sysconfig.get_path("scripts", user_scheme)))
    return list(dict.fromkeys(dirs))


def flower_executable(name: str) -> str:
    """Path of a Flower command (``flower-supernode``, ``flwr``): this Python's own first, else the one on PATH.

    This Python's script folders come first so that the SuperNode runs the Flower (and loads the
    ClientApp from the kit) installed with it, not another one that happens to be on PATH; PATH
    is the fallback for installs that put scripts elsewhere. Raises ``FlowerNotFound`` naming
    the folders searched and what to install.
    """
    for folder in _script_dirs():
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    searched = ", ".join(str(d) for d in _script_dirs())
    raise FlowerNotFound(f"{name}: not found in this Python's script folders ({searched}) nor on PATH; install "
                         f"Flower for {sys.executable}: `{sys.executable} -m pip install 'edge-cloud-ml-kit[edge]'` "
                         "(it pins flwr), or put the folder holding it on PATH")


def supernode_command(superlink: str, partition_id: int, data_dir: Path, port: int,
                      root_certificates: Path | None = None, warm: bool | None = None) -> list[str]:
    """The command line that makes this device a SuperNode (TLS when a CA is given, else insecure).

    ``port`` is the SuperNode's local Runtime API port; the node config tells the ClientApp which
    partition (``<data_dir>/<partition-set>/device-<partition_id>.npz``) is this device's. By default
    the SuperNode forks its ClientApps from a warm process (``edge.federated.warm_supernode``);
    ``warm=False``, or ``SUPERNODE_WARM_CLIENTAPP=0`` when warm is None, gives Flower's stock
    ``flower-supernode``, which starts a fresh Python for every message.
    """
    security = ["--root-certificates", str(root_certificates)] if root_certificates else ["--insecure"]
    node_config = f'partition-id={partition_id} data-dir="{Path(data_dir).expanduser().resolve()}"'
    args = [*security, "--superlink", superlink, "--port", str(port), "--node-config", node_config]
    if warm_enabled() if warm is None else warm:
        return [sys.executable, "-m", "edge.federated.warm_supernode", *args]
    return [flower_executable("flower-supernode"), *args]


def claim_partition(data_dir: Path) -> int:
    """The lowest partition number no other device has claimed in data_dir/claims/ (atomic, for scaled containers)."""
    claims = Path(data_dir).expanduser() / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    for number in range(10_000):
        try:
            with open(claims / f"device-{number}", "x") as claim:
                claim.write(socket.gethostname() + "\n")
            return number
        except FileExistsError:
            continue
    raise RuntimeError(f"no free partition number in {claims}; delete the claims folder to start over")
