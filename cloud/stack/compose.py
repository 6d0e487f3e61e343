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
# Compose service names for the stack's services.
COMPOSE_SERVICES = {"broker": "kafka", "superlink": "superlink"}


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


def compose_files(overlays: Sequence[str] = ()) -> list[Path]:
    """The base compose file plus named overlays from compose/ (e.g. 'gpu', 'lab-07')."""
    files = [COMPOSE_FILE]
    for name in overlays:
        path = OVERLAY_DIR / f"{name}.yml"
        if not path.exists():
            known = ", ".join(p.stem for p in sorted(OVERLAY_DIR.glob("*.yml")))
            raise FileNotFoundError(f"no compose overlay {name!r}; known: {known}")
        files.append(path)
    return files


def compose_command(*args: str, overlays: Sequence[str] = ()) -> list[str]:
    """`docker compose` with versions.env and the chosen files, followed by args."""
    cmd = ["docker", "compose", "--env-file", str(VERSIONS_FILE)]
    for path in compose_files(overlays):
        cmd += ["-f", str(path)]
    return cmd + list(args)


class ComposeStack:
    """Bring the compose services up (waiting on their health checks) and down."""
    def __init__(self, settings: StackSettings, overlays: Sequence[str] = (),
                 console: Console | None = None) -> None:
        self.settings = settings
        self.overlays = list(overlays)
        self.console = console or Console(stderr=True)

    def _run(self, *args: str) -> None:
        """Run a compose command, failing with its output."""
        cmd = compose_command(*args, overlays=self.overlays)
        env = dict(os.environ)
        env.setdefault("KAFKA_HOST_IP", lan_address() or "127.0.0.1")
        self.console.print(f"$ KAFKA_HOST_IP={env['KAFKA_HOST_IP']} " + " ".join(cmd))
        subprocess.run(cmd, check=True, cwd=KIT_ROOT, env=env)

    def up(self, services: Sequence[str] = ("broker", "superlink")) -> None:
        """`docker compose up -d --wait` for the given services."""
        self._run("up", "-d", "--wait", *[COMPOSE_SERVICES.get(s, s) for s in services])

    def down(self) -> None:
        """`docker compose down` (named volumes are kept)."""
        self._run("down")

    def status(self) -> None:
        """`docker compose ps`."""
        self._run("ps")

    def logs(self) -> None:
        """The last lines of each service's log."""
        self._run("logs", "--tail", "40")
