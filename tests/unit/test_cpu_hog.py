"""pytest --cpu-hog N: N busy processes run for the whole session and none is left behind, even after Ctrl-C or kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cloud.stack.procs import pid_alive

TESTS = Path(__file__).resolve().parents[1]

# The inner session's only test: it finds its busy children, checks that they burn CPU, writes their pids, then
# sleeps for SLEEP seconds (0 in the plain run; long enough to be interrupted in the others).
INNER = textwrap.dedent('''
    import os
    import time
    from pathlib import Path


    def cpu_ticks(pid):
        """User plus system clock ticks a process has used."""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return int(fields[11]) + int(fields[12])


    def test_the_hogs_burn_cpu_beside_this_test():
        me = os.getpid()
        children = [int(c) for task in Path(f"/proc/{me}/task").iterdir()
                    for c in (task / "children").read_text().split()]
        hogs = [c for c in children if b"cpu-hog" in Path(f"/proc/{c}/cmdline").read_bytes()]
        before = {h: cpu_ticks(h) for h in hogs}
        time.sleep(0.5)
        assert len(hogs) == int(os.environ["HOGS_EXPECTED"])
        assert all(cpu_ticks(h) > before[h] for h in hogs)
        Path(os.environ["HOGS_FILE"]).write_text(" ".join(map(str, hogs)))
        time.sleep(float(os.environ["SLEEP"]))
''')


def inner_session(tmp_path: Path, hogs: int, sleep: float) -> tuple[list[str], dict[str, str]]:
    """The command and environment of a pytest session on the inner test, with the suite's conftest as a plugin."""
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {**os.environ, "PYTHONPATH": str(TESTS), "HOGS_EXPECTED": str(hogs), "HOGS_FILE": str(tmp_path / "hogs"),
           "SLEEP": str(sleep)}
    command = [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-q",
               "--rootdir", str(tmp_path), str(tmp_path / "test_inner.py"), "--cpu-hog", str(hogs)]
    return command, env


def hog_pids(tmp_path: Path, within_s: float = 30.0) -> list[int]:
    """The pids the inner test wrote, once it has written them."""
    deadline = time.monotonic() + within_s
    while not (tmp_path / "hogs").exists():
        assert time.monotonic() < deadline, f"the inner test wrote no hog pids within {within_s:.0f} s"
        time.sleep(0.1)
    return [int(p) for p in (tmp_path / "hogs").read_text().split()]


def gone(pids: list[int], within_s: float = 10.0) -> bool:
    """True once none of the pids is a live process (zombies count as gone)."""
    deadline = time.monotonic() + within_s
    while any(pid_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_the_option_runs_n_busy_processes_for_the_session_and_stops_them(tmp_path):
    # Prepare
    command, env = inner_session(tmp_path, hogs=2, sleep=0)
    # Execute
    done = subprocess.run(command, check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    # Assert: the inner test saw two busy children; the session said so in one line; both are gone at its end
    assert done.returncode == 0, done.stdout + done.stderr
    pids = hog_pids(tmp_path, within_s=0)
    assert len(pids) == 2
    assert f"cpu-hog: 2 busy processes beside the suite on {os.cpu_count()} cores (pids {pids[0]}, {pids[1]})" \
        in done.stdout
    assert not any(pid_alive(p) for p in pids)


def test_ctrl_c_stops_the_busy_processes(tmp_path):
    command, env = inner_session(tmp_path, hogs=1, sleep=60)
    session = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        pids = hog_pids(tmp_path)
        session.send_signal(signal.SIGINT)
        output, _ = session.communicate(timeout=30)
    finally:
        session.kill()
    assert session.returncode == 2, output  # pytest's "interrupted"
    assert len(pids) == 1 and not any(pid_alive(p) for p in pids)


def test_the_busy_processes_end_themselves_when_pytest_is_killed(tmp_path):
    command, env = inner_session(tmp_path, hogs=1, sleep=60)
    session = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pids = hog_pids(tmp_path)
    finally:
        session.kill()  # SIGKILL: no unconfigure runs, the hogs notice their parent is gone
        session.wait()
    assert len(pids) == 1 and gone(pids)
