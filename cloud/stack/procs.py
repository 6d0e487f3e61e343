"""Start, health-check and stop local service processes, leaving no orphans."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


class PortInUseError(RuntimeError):
    """A port a service needs is already taken by another process."""


class HealthCheckError(RuntimeError):
    """A service did not become healthy in time."""


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int, variable: str) -> None:
    """Raise PortInUseError naming the port and the variable that moves it."""
    if port_answers(host, port):
        raise PortInUseError(
            f"port {port} on {host} is already in use; stop what holds it "
            f"(`ss -ltnp 'sport = :{port}'` shows it) or set {variable} to another address"
        )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (for tests and side-by-side stacks)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM us when the parent dies."""
    os.setsid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_process(
    cmd: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    owned: bool = True,
    before_exec: Callable[[], None] | None = None,
) -> subprocess.Popen:
    """Start cmd in its own process group with output to log_path.

    ``owned`` processes also die with this Python process (Linux), so a
    crashed runner leaves no orphan; detached ones (``cloud up``) outlive it.
    ``before_exec`` runs in the child just before cmd starts (joining a CPU limit, so that every
    process cmd starts is held too).
    """
    setup = _die_with_parent if owned else os.setsid

    def prepare_child() -> None:
        setup()
        if before_exec is not None:
            before_exec()

    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            preexec_fn=prepare_child,
        )
    finally:
        log.close()


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the process group of pid, then SIGKILL it after timeout."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def group_members(pgid: int) -> list[int]:
    """Process ids in the process group led by pgid (a service and the children it started)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid="], capture_output=True, text=True).stdout
    return [int(p) for p, g in (line.split() for line in out.splitlines()) if int(g) == pgid]


def _reap(pid: int) -> None:
    """Collect the exit status of our own child so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    proc: subprocess.Popen | None = None,
    log_path: Path | None = None,
    interval: float = 0.1,
) -> float:
    """Poll check() until it is true; return seconds taken or raise HealthCheckError."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        if proc is not None and proc.poll() is not None:
            raise HealthCheckError(
                f"{what}: process exited with code {proc.returncode}; {log_tail(log_path)}"
            )
        time.sleep(interval)
    raise HealthCheckError(f"{what}: not healthy after {timeout:.0f} s; {log_tail(log_path)}")


def log_tail(log_path: Path | None, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    if log_path is None or not log_path.exists():
        return "no log"
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"last lines of {log_path}:\n" + "\n".join(text)
