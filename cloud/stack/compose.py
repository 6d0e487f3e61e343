"""The compose stack: the same services as containers, used where a Docker engine answers."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from cloud.settings import KIT_ROOT, StackSettings
from cloud.stack.lan import lan_address

COMPOSE_FILE = KIT_ROOT / "docker-compose.yml"
OVERLAY_DIR = KIT_ROOT / "compose"
VERSIONS_FILE = KIT_ROOT / "versions.env"
# Compose services for each of the stack's services: the SuperLink comes with the SuperExec that runs ServerApps.
COMPOSE_SERVICES = {"broker": ["kafka"], "superlink": ["superlink", "serverapp"]}


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """The KEY=VALUE lines of versions.env (the versions images and the Python environment share)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def docker_engine_available(timeout_s: float = 5.0) -> bool:
    """True when the docker client exists and an engine answers `docker info`."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, timeout=timeout_s)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def compose_v2_available(timeout_s: float = 10.0) -> bool:
    """True when `docker compose` (Compose v2, the docker CLI plugin) answers `version`."""
    try:
        done = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, timeout=timeout_s)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0


def compose_files(overlays: Sequence[str] = (), extra: str = "") -> list[Path]:
    """The base compose file, named overlays from compose/ (e.g. 'gpu', 'lab-07'), then extra files ('a.yml:b.yml')."""
    files = [COMPOSE_FILE]
    for name in overlays:
        path = OVERLAY_DIR / f"{name}.yml"
        if not path.exists():
            known = ", ".join(p.stem for p in sorted(OVERLAY_DIR.glob("*.yml")))
            raise FileNotFoundError(f"no compose overlay {name!r}; known: {known}")
        files.append(path)
    for name in filter(None, extra.split(":")):
        if not Path(name).exists():
            raise FileNotFoundError(f"COMPOSE_OVERLAYS names {name}, which does not exist")
        files.append(Path(name).resolve())
    return files


def compose_command(*args: str, overlays: Sequence[str] = (), extra: str = "") -> list[str]:
    """`docker compose` with versions.env and the chosen files, followed by args."""
    cmd = ["docker", "compose", "--env-file", str(VERSIONS_FILE)]
    for path in compose_files(overlays, extra):
        cmd += ["-f", str(path)]
    return cmd + list(args)


def compose_env(settings: StackSettings) -> dict[str, str]:
    """The environment compose reads: the LAN address Kafka advertises, your uid and gid, the runs folder."""
    env = dict(os.environ)
    env.setdefault("KAFKA_HOST_IP", lan_address() or "127.0.0.1")
    if hasattr(os, "getuid"):  # Docker Desktop on Windows maps owners itself
        env.setdefault("KIT_UID", str(os.getuid()))
        env.setdefault("KIT_GID", str(os.getgid()))
    env.setdefault("KIT_RUNS_DIR", str(Path(settings.runs_dir).resolve()))
    return env


class ComposeStack:
    """Bring the compose services up (waiting on their health checks) and down."""
    def __init__(self, settings: StackSettings, overlays: Sequence[str] = (),
                 console: Console | None = None) -> None:
        self.settings = settings
        self.overlays = list(overlays)
        self.console = console or Console(stderr=True)

    def _run(self, *args: str) -> None:
        """Run a compose command, failing with its output."""
        cmd = compose_command(*args, overlays=self.overlays, extra=self.settings.compose_overlays)
        env = compose_env(self.settings)
        self.console.print(f"$ KAFKA_HOST_IP={env['KAFKA_HOST_IP']} " + " ".join(cmd))
        subprocess.run(cmd, check=True, cwd=KIT_ROOT, env=env)

    def up(self, services: Sequence[str] = ("broker", "superlink")) -> None:
        """`docker compose up -d --wait` for the given services."""
        self._run("up", "-d", "--wait", *[name for s in services for name in COMPOSE_SERVICES.get(s, [s])])

    def down(self) -> None:
        """`docker compose down` (named volumes are kept)."""
        self._run("down")

    def status(self) -> None:
        """`docker compose ps`."""
        self._run("ps")

    def logs(self) -> None:
        """The last lines of each service's log."""
        self._run("logs", "--tail", "40")
