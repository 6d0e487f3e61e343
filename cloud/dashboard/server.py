"""DashboardServer: the dashboard app under uvicorn in a background thread, started once /health answers.

Labs and tests start it beside a scenario and stop it at the end (or use it as a context manager)::

    with DashboardServer(stream_folder=run / "stream", fl_folders=[run / "fl"]) as dashboard:
        print(f"dashboard: {dashboard.url}")
        ...

It reads the scenario's files only (``cloud.dashboard.snapshot``): it never connects to the Kafka
broker or the SuperLink, so it keeps showing the scenario while the broker restarts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import uvicorn

from cloud.dashboard.app import create_app
from cloud.dashboard.settings import load_settings
from cloud.stack.procs import HealthCheckError, PortInUseError, wait_until


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one); PortInUseError names a port that is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(f"dashboard: port {port} on {host} is already in use; stop what holds it "
                                 f"(`ss -ltnp 'sport = :{port}'` shows it) or pick another with --port or "
                                 "DASHBOARD_PORT") from exc
        raise OSError(exc.errno, f"dashboard: cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(64)
    sock.setblocking(False)
    return sock


class DashboardServer:
    """The live dashboard over a streaming scenario folder and federated run folders, served from a thread."""

    def __init__(self, stream_folder: Path | str | None = None, fl_folders: list[Path | str] | None = None,
                 host: str | None = None, port: int | None = None, interval_s: float | None = None,
                 start_timeout_s: float | None = None) -> None:
        settings = load_settings()
        self.stream_folder = Path(stream_folder) if stream_folder is not None else None
        self.fl_folders = [Path(p) for p in fl_folders or []]
        self.host = host if host is not None else settings.dashboard_host
        self.port = port if port is not None else settings.dashboard_port
        self.interval_s = interval_s if interval_s is not None else settings.dashboard_interval_s
        self.start_timeout_s = start_timeout_s if start_timeout_s is not None else settings.dashboard_start_timeout_s
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        """The page's address (after start(), with the port actually bound)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if host in ("0.0.0.0", "[::]"):
            host = "127.0.0.1"  # bound to every address: this machine reaches it on loopback
        return f"http://{host}:{self.port}"

    def healthy(self) -> bool:
        """True when GET /health answers with status ok."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                return response.status == 200 and json.load(response).get("status") == "ok"
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def start(self) -> DashboardServer:
        """Bind the port, serve in a background thread and return once /health answers."""
        if self._thread is not None:
            raise RuntimeError(f"dashboard already running at {self.url}")
        self._socket = bind_socket(self.host, self.port)
        self.port = self._socket.getsockname()[1]
        app = create_app(self.stream_folder, self.fl_folders, interval_s=self.interval_s, host=self.host,
                         stopping=self._stopping)
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=3, ws="none",
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name=f"dashboard-{self.port}", daemon=True)
        self._thread.start()
        try:
            wait_until(lambda: self.healthy() or not self._thread.is_alive(), f"dashboard at {self.url}",
                       self.start_timeout_s, interval=0.05)
            if not self._thread.is_alive():
                raise HealthCheckError(f"dashboard at {self.url}: the server thread exited before /health answered")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """End the open event streams, shut the server down and wait for its thread."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():  # a connection that would not close: stop waiting for it
                self._server.force_exit = True
                self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> DashboardServer:
        """Start the server."""
        return self.start()

    def __exit__(self, *exc_info) -> None:
        """Stop the server."""
        self.stop()


@contextlib.contextmanager
def lab_dashboard(enabled: bool, console, **sources) -> Iterator[DashboardServer | None]:
    """The dashboard a lab serves while it runs with ARGS="dashboard=1" (its address printed), else nothing."""
    if not enabled:
        yield None
        return
    with DashboardServer(**sources) as dashboard:
        console.print(f"dashboard: {dashboard.url} (live while the lab runs; read-only)")
        yield dashboard
