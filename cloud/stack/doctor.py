"""`make doctor`: what this machine has for the kit, and what to do about what it lacks."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shutil
import subprocess
import sys

from rich.console import Console
from rich.table import Table

from cloud.settings import StackSettings, split_host_port
from cloud.stack.compose import compose_v2_available, docker_engine_available
from cloud.stack.lan import lan_address
from cloud.stack.procs import port_answers

# Platforms with published wheels for every package of the `edge` extra
# (onnxruntime, ai-edge-litert, kafka-python, flwr), checked on PyPI in 2026-11.
EDGE_WHEEL_PLATFORMS = {("Linux", "x86_64"), ("Linux", "aarch64"), ("Darwin", "arm64")}


def extras_status() -> dict[str, list[str]]:
    """For each extra of the kit, the requirements that are not installed."""
    dist = importlib.metadata.distribution("edge-cloud-ml-kit")
    missing: dict[str, list[str]] = {}
    for requirement in dist.requires or []:
        match = re.match(r"^([A-Za-z0-9_.\-]+)[^;]*(?:;\s*(.*))?$", requirement)
        name, marker = match.group(1), match.group(2) or ""
        extra = re.search(r'extra\s*==\s*"([^"]+)"', marker)
        key = extra.group(1) if extra else "core"
        if "sys_platform" in marker and sys.platform not in marker:
            continue
        missing.setdefault(key, [])
        if name == "edge-cloud-ml-kit":
            continue
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing[key].append(name)
    return missing


def gpu_summary() -> str:
    """A GPU that torch or nvidia-smi can see, or 'none'."""
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().replace("\n", ", ")
    return "none (CPU only; labs run on the CPU)"


def run_doctor(settings: StackSettings, console: Console) -> int:
    """Print the checks as a table; exit 1 when something the kit needs is missing."""
    rows: list[tuple[str, str, str]] = []
    ok = True
    version_ok = sys.version_info >= (3, 11)
    ok &= version_ok
    rows.append(("Python", platform.python_version(), "ok" if version_ok else "need 3.11+"))
    for extra, missing in sorted(extras_status().items()):
        text = "installed" if not missing else "missing: " + ", ".join(missing)
        rows.append((f"extra {extra}", text, "ok" if not missing else "make install"))
    docker = docker_engine_available()
    compose = docker and compose_v2_available()
    rows.append(("Docker engine", "answers" if docker else "not running",
                 "RUNTIME=auto uses compose" if compose else
                 "no Compose v2 (`docker compose`): labs use local processes" if docker else "labs use local processes"))
    for variable, address in (("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
                              ("SUPERLINK_ADDRESS", settings.superlink_address)):
        host, port = split_host_port(address.split(",")[0])
        busy = port_answers(host, port)
        rows.append((f"port {port}", "in use" if busy else "free",
                     f"in use: the stack is up, or set {variable}" if busy else "ok"))
    lan = lan_address()
    rows.append(("LAN address", lan or "unknown", "a Raspberry Pi dials this" if lan else
                 "set KAFKA_HOST_IP by hand"))
    rows.append(("GPU", gpu_summary(), "ok"))
    plat = (platform.system(), platform.machine())
    wheels = plat in EDGE_WHEEL_PLATFORMS
    rows.append(("edge wheels", f"{plat[0]} {plat[1]}",
                 "published" if wheels else "not all published: see labs/05 README"))
    table = Table(title="kit doctor")
    for column in ("check", "found", "verdict"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0 if ok else 1
