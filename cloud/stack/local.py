"""The local stack: a real Kafka-protocol broker and a Flower SuperLink as health-checked processes."""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from cloud.settings import StackSettings
from cloud.stack import procs
from cloud.stack.broker import broker_answers, ensure_topics, tansu_command
from cloud.stack.certs import CertPaths
from cloud.stack.compose import ComposeStack, compose_v2_available, docker_engine_available

STATE_FILE = "stack.json"
SERVICE_NAMES = ("broker", "superlink")


@dataclass
class ServiceSpec:
    """How to start one service and how to know it is healthy."""
    name: str
    variable: str  # the environment variable that moves its address
    host: str
    port: int
    command: list[str]
    healthy: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)


def superlink_healthy(host: str, port: int, timeout_s: float = 1.0, ca: Path | None = None) -> bool:
    """True when the SuperLink's API answers GET /health with 200 (over HTTPS, verified with ca, when given)."""
    scheme, context = ("https", ssl.create_default_context(cafile=str(ca))) if ca else ("http", None)
    try:
        with urllib.request.urlopen(f"{scheme}://{host}:{port}/health", timeout=timeout_s,
                                    context=context) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False


def venv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes, with this Python's bin folder first on PATH."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def superlink_tls_files(settings: StackSettings):
    """The CA, certificate and key in CERTS_DIR when TLS is on, else None; says what to run if missing.

    SUPERLINK_TLS=1 requires the certificates, SUPERLINK_TLS=0 never uses them, and unset
    means TLS exactly when `make certs` has put them in CERTS_DIR.
    """
    if settings.superlink_tls is False:
        return None

    paths = CertPaths(Path(settings.certs_dir).resolve())
    if settings.superlink_tls is None:
        return paths if paths.complete() else None
    if not paths.complete():
        raise FileNotFoundError(f"SUPERLINK_TLS is on but {paths.folder} lacks ca.pem, server.pem or server.key; "
                                "run `make certs` (or set CERTS_DIR to where they are)")
    return paths


def service_specs(settings: StackSettings, state_dir: Path) -> dict[str, ServiceSpec]:
    """The services of the local stack, keyed by name."""
    kafka_host, kafka_port = settings.kafka_address()
    link_host, link_port = settings.superlink()
    bin_dir = Path(sys.executable).parent
    tls = superlink_tls_files(settings)
    security = (["--ssl-ca-certfile", str(tls.ca), "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)]
                if tls else ["--insecure"])
    return {
        "broker": ServiceSpec(
            name="broker",
            variable="KAFKA_BOOTSTRAP_SERVERS",
            host=kafka_host,
            port=kafka_port,
            command=tansu_command(settings),
            healthy=lambda: procs.port_answers(kafka_host, kafka_port)
            and broker_answers(settings.kafka_bootstrap_servers),
        ),
        "superlink": ServiceSpec(
            name="superlink",
            variable="SUPERLINK_ADDRESS",
            host=link_host,
            port=link_port,
            command=[
                str(bin_dir / "flower-superlink"),
                *security,
                "--disable-runtime-dependency-installation",
                "--host", link_host,
                "--port", str(link_port),
            ],
            healthy=lambda: superlink_healthy(link_host, link_port, ca=tls.ca if tls else None),
            env={"FLWR_HOME": str((state_dir / "flwr-superlink").resolve())},
        ),
    }


class LocalStack:
    """Start, check and stop the stack's services as local processes.

    ``owned=True`` (a lab run) ties the processes to this Python process and stops
    them on exit; ``owned=False`` (``cloud up``) leaves them running for ``cloud down``.
    """
    def __init__(self, settings: StackSettings, state_dir: Path, owned: bool = True,
                 console: Console | None = None) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.owned = owned
        self.console = console or Console(stderr=True)

    @property
    def state_path(self) -> Path:
        """The JSON file recording what this stack started."""
        return self.state_dir / STATE_FILE

    def log_path(self, name: str) -> Path:
        """Where a service's output goes."""
        return self.state_dir / "logs" / f"{name}.log"

    def read_state(self) -> dict:
        """The recorded services (empty when nothing was started)."""
        if not self.state_path.exists():
            return {"services": {}}
        return json.loads(self.state_path.read_text())

    def _write_state(self, state: dict) -> None:
        """Record the running services."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_path.write_text(json.dumps(state, indent=2) + "\n")

    def up(self, services: Sequence[str] = SERVICE_NAMES) -> dict:
        """Start the services, wait until each is healthy, and record their process ids."""
        specs = service_specs(self.settings, self.state_dir)
        unknown = [s for s in services if s not in specs]
        if unknown:
            raise ValueError(f"unknown service(s) {unknown}; known: {', '.join(specs)}")
        for name in services:
            procs.ensure_port_free(specs[name].host, specs[name].port, specs[name].variable)
        state = {"runtime": "local", "owned": self.owned, "started_at": time.time(), "services": {}}
        try:
            for name in services:
                spec = specs[name]
                log = self.log_path(name)
                proc = procs.start_process(spec.command, log, env=venv_env(spec.env),
                                           owned=self.owned)
                state["services"][name] = {
                    "pid": proc.pid,
                    "address": f"{spec.host}:{spec.port}",
                    "variable": spec.variable,
                    "log": str(log),
                }
                self._write_state(state)
                seconds = procs.wait_until(spec.healthy, f"{name} on {spec.host}:{spec.port}",
                                           self.settings.health_timeout_s, proc, log)
                self.console.print(
                    f"[green]✓[/] {name:<9} {spec.host}:{spec.port}  pid {proc.pid}  "
                    f"healthy in {seconds:.1f} s"
                )
                if name == "broker":
                    self.recreate_topics()
        except BaseException:
            self.down()
            raise
        return state

    def recreate_topics(self) -> list[str]:
        """Create the kit's topics (edge.wire.topics) that the broker lacks, e.g. after a memory-storage restart."""
        created = ensure_topics(self.settings.kafka_bootstrap_servers)
        if created:
            self.console.print(f"  topics created: {', '.join(created)}")
        return created

    def down(self) -> list[str]:
        """Stop every recorded service by process id; returns the names stopped."""
        state = self.read_state()
        stopped = []
        for name, info in reversed(list(state["services"].items())):
            procs.stop_pid(int(info["pid"]))
            stopped.append(name)
        if self.state_path.exists():
            self.state_path.unlink()
        return stopped

    def status(self) -> list[dict]:
        """One row per recorded service: pid, address, alive, healthy."""
        specs = service_specs(self.settings, self.state_dir)
        rows = []
        for name, info in self.read_state()["services"].items():
            alive = procs.pid_alive(int(info["pid"]))
            spec = specs.get(name)
            healthy = alive and spec is not None and spec.healthy()
            rows.append({"service": name, "pid": info["pid"], "address": info["address"],
                         "alive": alive, "healthy": healthy, "log": info["log"]})
        return rows

    def pids(self) -> list[int]:
        """Process ids of the recorded services."""
        return [int(i["pid"]) for i in self.read_state()["services"].values()]

    def __enter__(self) -> LocalStack:
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()


@dataclass
class StackHandle:
    """What a lab sees of a running stack: its endpoints and how it was started."""
    runtime: str
    bootstrap_servers: str
    superlink_address: str
    reused: bool
    pids: list[int]


def resolve_runtime(runtime: str) -> str:
    """Turn RUNTIME=auto into 'docker' when a Docker engine and Compose v2 answer, else 'local'."""
    if runtime in ("local", "external"):
        return runtime
    engine = docker_engine_available()
    compose = engine and compose_v2_available()
    if runtime == "docker":
        if not engine:
            raise RuntimeError(
                "RUNTIME=docker but no Docker engine answers (`docker info` failed); "
                "start Docker, or use RUNTIME=local (the embedded default)"
            )
        if not compose:
            raise RuntimeError(
                "RUNTIME=docker but `docker compose version` fails: the engine answers, Compose v2 is missing; "
                "install Docker Compose v2 (Docker Desktop has it; on Linux the docker-compose-plugin package), "
                "or use RUNTIME=local"
            )
        return "docker"
    if runtime == "auto":
        return "docker" if compose else "local"  # an engine without Compose v2 cannot run the stack
    raise ValueError(f"RUNTIME must be auto, local, docker or external, got {runtime!r}")


@contextmanager
def stack_for_lab(settings: StackSettings, runtime: str, run_path: Path,
                  services: Sequence[str] = SERVICE_NAMES,
                  console: Console | None = None) -> Iterator[StackHandle]:
    """A running stack for a lab: reuse one `cloud up` started, else start one and stop it after."""
    console = console or Console(stderr=True)
    chosen = resolve_runtime(runtime)
    if chosen == "external":
        yield _external_stack(settings, services)
        return
    if chosen == "docker":

        compose = ComposeStack(settings, console=console)
        compose.up(services)
        try:
            yield StackHandle("docker", settings.kafka_bootstrap_servers,
                              settings.superlink_address, False, [])
        finally:
            compose.down()
        return
    shared = LocalStack(settings, settings.stack_dir, owned=False, console=console)
    rows = {row["service"]: row for row in shared.status()}
    if rows and all(rows.get(s, {}).get("healthy") for s in services):
        console.print(f"reusing the stack started by `cloud up` ({settings.stack_dir})")
        yield StackHandle("local", settings.kafka_bootstrap_servers, settings.superlink_address,
                          True, shared.pids())
        return
    stack = LocalStack(settings, run_path / "stack", owned=True, console=console)
    stack.up(services)
    try:
        yield StackHandle("local", settings.kafka_bootstrap_servers, settings.superlink_address,
                          False, stack.pids())
    finally:
        stack.down()
        console.print("stack stopped")


def _external_stack(settings: StackSettings, services: Sequence[str]) -> StackHandle:
    """Check that services someone else runs answer at the configured endpoints."""
    specs = service_specs(settings, settings.stack_dir)
    for name in services:
        spec = specs[name]
        procs.wait_until(spec.healthy, f"{name} at {spec.host}:{spec.port} (set {spec.variable})",
                         settings.health_timeout_s)
    return StackHandle("external", settings.kafka_bootstrap_servers, settings.superlink_address,
                       True, [])
