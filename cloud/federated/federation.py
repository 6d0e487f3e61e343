"""Run federated learning for real: one SuperNode process per device, runs submitted with ``flwr run``.

``Federation`` starts SuperNodes against a running SuperLink (each with its own FLWR_HOME and
Runtime API port), waits until the SuperLink lists them online, submits the Flower app in
``cloud/federated/fedapp`` with ``flwr run``, follows the ServerApp's journal (a line per round), and then
reads the run's final status with ``flwr ls``. Since ``flwr run`` exits 0 even when every client
failed, a run counts as good only when the SuperLink says ``finished:completed`` and the journal
says ``completed``; otherwise ``FederationError`` carries the clients' own error messages.

Each round's replies are a milestone (``cloud.labkit.milestones``): the runs wait for them under
one cap, a progress line names the round and how many nodes answered, and a missed one names the
journal and the SuperNode logs to read. Chosen SuperNodes can run under a CPU limit
(``cpu_limits={0: 0.25}``: a quarter of one core, what a Raspberry Pi 3 or Zero 2 offers).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from cloud.federated.config import METRICS_FILE, MODEL_FILE, FederationError, FlConfig, run_config_string
from cloud.federated.results import FlResult, round_line
from cloud.federated.strategies import strategy_class
from cloud.labkit.milestones import Milestones
from cloud.stack import procs
from cloud.stack.cpu_limit import CpuLimit
from cloud.stack.local import venv_env
from edge.federated.supernode import flower_executable, supernode_command

APP_DIR = Path(__file__).resolve().parent / "fedapp"
CONNECTION = "kit"
FIRST_SUPERNODE_PORT = 9094


@dataclass
class SuperNodeProcess:
    """One device's SuperNode: its partition, Runtime API port, FLWR_HOME and process."""

    partition_id: int
    port: int
    home: Path
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        """Process id while started."""
        return None if self.proc is None else self.proc.pid


def _wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
    """Wait until no process is left in a process group (a SuperNode's ClientApps); SIGKILL what lingers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def write_cli_config(home: Path, superlink_address: str, ca: Path | None = None) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with the ``kit`` connection the flwr CLI uses."""
    home.mkdir(parents=True, exist_ok=True)
    security = f'root-certificates = "{Path(ca).resolve()}"' if ca else "insecure = true"
    path = home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n'
                    f'[superlink.{CONNECTION}]\naddress = "{superlink_address}"\n{security}\n')
    return path


class Federation:
    """SuperNodes for ``devices`` devices pointed at one SuperLink, and the runs submitted to it.

    Use it as a context manager: every SuperNode it started is stopped, by process id, on exit.
    """

    def __init__(self, superlink_address: str, work_dir: Path, devices: int, data_dir: Path,
                 ca: Path | None = None, console: Console | None = None,
                 health_timeout_s: float = 60.0, first_port: int | None = None,
                 app_dir: Path = APP_DIR, cpu_limits: dict[int, float] | None = None,
                 warm: bool | None = None, preload: tuple[str, ...] = ()) -> None:
        if devices < 0:
            raise ValueError(f"devices must be >= 0 (0: only submit runs to nodes started elsewhere), got {devices}")
        self.superlink_address = superlink_address
        self.app_dir = Path(app_dir).resolve()  # the Flower app `flwr run` submits (lab 11: cloud/federated/fedapp_private)
        self.work_dir = Path(work_dir).resolve()
        self.data_dir = Path(data_dir).resolve()
        self.ca = Path(ca).resolve() if ca else None  # the CA that signed the SuperLink's certificate: TLS on
        self.console = console or Console(stderr=True)
        self.health_timeout_s = health_timeout_s
        # partition id -> cores its SuperNode and the ClientApps it starts may use (0.25: a quarter core)
        self.cpu_limits = dict(cpu_limits or {})
        # ClientApps forked from a warm process (edge.federated.warm_supernode); False: Flower's stock
        # SuperNode, a fresh Python per message; None: as SUPERNODE_WARM_CLIENTAPP says (default warm)
        self.warm = warm
        self.preload = preload  # more modules the warm process imports once (private ClientApps: torch, ...)
        self.limits: dict[int, CpuLimit] = {}  # the cgroups made for them, removed by stop()
        self.cli_home = self.work_dir / "flwr-cli"
        write_cli_config(self.cli_home, superlink_address, self.ca)
        self.nodes = [
            SuperNodeProcess(i, first_port + i if first_port else procs.free_port(),
                             self.work_dir / f"supernode-{i}", self.work_dir / "logs" / f"supernode-{i}.log")
            for i in range(devices)
        ]

    # ------------------------------------------------------------------ SuperNodes

    def start(self) -> None:
        """Start every SuperNode and wait until the SuperLink lists them all online."""
        try:
            for node in self.nodes:
                self.start_node(node.partition_id, wait=False)
            if self.nodes:
                self.wait_online(len(self.nodes))
        except BaseException:
            self.stop()
            raise

    def start_node(self, partition_id: int, wait: bool = True) -> SuperNodeProcess:
        """Start (or restart) one device's SuperNode; with wait, until its Runtime API answers."""
        node = self.nodes[partition_id]
        if node.proc is not None and node.proc.poll() is None:
            raise RuntimeError(f"SuperNode {partition_id} already runs (pid {node.pid})")
        procs.ensure_port_free("127.0.0.1", node.port, f"the Runtime API port of SuperNode {partition_id}")
        cmd = supernode_command(self.superlink_address, partition_id, self.data_dir, node.port, self.ca,
                                warm=self.warm)
        env = venv_env({"FLWR_HOME": str(node.home)})
        if self.preload:
            env["SUPERNODE_PRELOAD"] = ",".join(self.preload)
        # The SuperNode starts Flower's other executables (flwr-clientapp) from PATH: its own folder first.
        env["PATH"] = str(Path(cmd[0]).parent) + os.pathsep + env["PATH"]
        limit = self._cpu_limit(partition_id)  # made first: CpuLimitUnavailable before anything starts
        # The node joins its limit before it starts: cgroup membership is inherited, so the SuperNode,
        # its SuperExec and every ClientApp they start are held too.
        join_limit = (lambda: limit.add(os.getpid())) if limit is not None else None
        node.proc = procs.start_process(cmd, node.log, env=env, before_exec=join_limit)
        if wait:
            procs.wait_until(lambda: procs.port_answers("127.0.0.1", node.port),
                             f"SuperNode {partition_id} Runtime API on port {node.port}",
                             self.health_timeout_s, node.proc, node.log)
        return node

    def _cpu_limit(self, partition_id: int) -> CpuLimit | None:
        """The CPU limit a device's SuperNode runs under (made on first use), or None when it has none."""
        if partition_id not in self.cpu_limits:
            return None
        if partition_id not in self.limits:
            self.limits[partition_id] = CpuLimit(self.cpu_limits[partition_id], name=f"kit-supernode-{partition_id}-"
                                                 f"{os.getpid()}")
        return self.limits[partition_id]

    def kill_node(self, partition_id: int) -> None:
        """Kill one SuperNode and its ClientApp processes at once (SIGKILL: a device losing power)."""
        node = self.nodes[partition_id]
        if node.proc is None:
            return
        try:
            os.killpg(node.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        node.proc.wait(timeout=10)

    def wait_online(self, count: int, timeout: float | None = None) -> float:
        """Wait until the SuperLink lists at least ``count`` SuperNodes online; returns seconds."""
        def enough() -> bool:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    raise procs.HealthCheckError(
                        f"SuperNode {node.partition_id} exited with code {node.proc.returncode}; "
                        f"{procs.log_tail(node.log)}")
            return len(self.online_nodes()) >= count

        return procs.wait_until(enough, f"{count} SuperNodes online at {self.superlink_address}",
                                timeout or self.health_timeout_s, interval=0.5)

    def online_nodes(self) -> list[str]:
        """Node ids the SuperLink lists as online (``flwr supernode ls``)."""
        reply = self._flwr(["supernode", "ls", CONNECTION, "--format", "json"], check=False)
        try:
            nodes = json.loads(reply.stdout).get("nodes", [])
        except json.JSONDecodeError:
            return []
        return [n["node-id"] for n in nodes if n.get("status") == "online"]

    def stop(self) -> None:
        """Stop every SuperNode this object started, by process id, and wait until its ClientApps are gone too."""
        for node in self.nodes:
            if node.proc is not None:
                procs.stop_pid(node.proc.pid)
                if node.proc.poll() is None:
                    node.proc.wait(timeout=5)
                _wait_group_gone(node.proc.pid)
        for limit in self.limits.values():
            limit.close()
        self.limits.clear()

    def pids(self) -> list[int]:
        """Process ids of the SuperNodes started."""
        return [n.proc.pid for n in self.nodes if n.proc is not None]

    def __enter__(self) -> Federation:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ runs

    def _flwr(self, args: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run the flwr CLI with this federation's FLWR_HOME."""
        done = subprocess.run([flower_executable("flwr"), *args], capture_output=True, text=True, timeout=timeout,
                              env=venv_env({"FLWR_HOME": str(self.cli_home)}))
        if check and done.returncode != 0:
            raise FederationError(f"`flwr {' '.join(args)}` exited {done.returncode}: "
                                  f"{(done.stderr or done.stdout).strip()[-2000:]}")
        return done

    def submit(self, config: FlConfig) -> int:
        """Submit the Flower app with these settings; returns the run id."""
        done = self._flwr(["run", str(self.app_dir), CONNECTION, "--format", "json",
                           "--run-config", run_config_string(config.run_config())])
        try:
            payload = json.loads(done.stdout[done.stdout.index("{"):])
            return int(payload["run-id"])
        except (ValueError, KeyError) as exc:
            raise FederationError(f"could not read the run id from `flwr run`: {done.stdout!r}") from exc

    def run_status(self, run_id: int) -> str:
        """The SuperLink's status of a run, e.g. 'running' or 'finished:completed'."""
        done = self._flwr(["ls", CONNECTION, "--run-id", str(run_id), "--format", "json"], check=False)
        try:
            runs = json.loads(done.stdout[done.stdout.index("{"):]).get("runs", [])
        except ValueError:
            return "unknown"
        return str(runs[0].get("status", "unknown")) if runs else "unknown"

    def run_log(self, run_id: int) -> str:
        """The ServerApp's log of a run (``flwr log --show``)."""
        return self._flwr(["log", str(run_id), CONNECTION, "--show"], check=False, timeout=30).stdout

    def run(self, config: FlConfig, out_dir: Path, timeout: float = 600,
            on_round: Callable[[dict[str, Any]], None] | None = None,
            during: Callable[[dict[str, Any]], None] | None = None,
            milestones: Milestones | None = None, label: str = "") -> FlResult:
        """Submit a run, follow it to the end and return its results; FederationError if it failed.

        ``on_round(entry)`` is called once per finished round; ``during(journal)`` on every journal
        change (the kill-a-node experiment uses it to act in the middle of a round).
        """
        name = label.strip().rstrip(":") or "run"  # what the lines about this run's waits start with
        results = self.run_many({name: (config, out_dir)}, timeout,
                                on_round=(lambda _, entry: on_round(entry)) if on_round else None,
                                during=(lambda _, journal: during(journal)) if during else None,
                                milestones=milestones, label=label)
        return results[name]

    def run_many(self, runs: dict[str, tuple[FlConfig, Path]], timeout: float = 600,
                 on_round: Callable[[str, dict[str, Any]], None] | None = None,
                 during: Callable[[str, dict[str, Any]], None] | None = None,
                 milestones: Milestones | None = None, label: str = "") -> dict[str, FlResult]:
        """Submit several runs at once (the SuperNodes serve them side by side) and follow all to their milestones.

        The milestones are every round's replies ("round 2's replies": that round closed in every
        run), then the runs' end, waited for under ``milestones``' cap (without one: a cap of
        ``timeout`` s); ``label`` prefixes their names. Returns results by name; raises
        FederationError naming the first run that failed, MilestoneMissed when the cap passes.
        """
        milestones = milestones or Milestones(timeout, progress=self.console.print, progress_every_s=10)
        followers = []
        for name, (config, out_dir) in runs.items():
            out_dir = Path(out_dir).resolve()
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / METRICS_FILE).unlink(missing_ok=True)
            config = replace(config, out_dir=str(out_dir))  # keeps a subclass's own settings
            followers.append(_RunFollower(name, self.submit(config), out_dir, time.monotonic(),
                                          config.num_server_rounds))
        log = (f"{', '.join(str(f.journal_path) for f in followers)} and the SuperNode logs in "
               f"{self.work_dir / 'logs'}")

        def reached(server_round: int | None) -> bool:
            """Poll every run; True once each has closed that round (None: has finished)."""
            for follower in followers:
                if not follower.finished:
                    follower.poll(self, on_round, during, self._told)
                if follower.finished and not follower.completed:
                    raise FederationError(self._explain_failure(follower.run_id, follower.status, follower.journal,
                                                                follower.journal_path))
            return all(f.finished or (server_round is not None and f.closed(server_round)) for f in followers)

        def status(server_round: int | None) -> str:
            """What the late runs wait for: '(2 of 3 nodes answered)', by run when there are several."""
            late = [f for f in followers if not (f.finished or (server_round is not None and f.closed(server_round)))]
            parts = [f.waiting_text(server_round) for f in late]
            if len(followers) > 1:
                parts = [f"{f.name}: {text}" for f, text in zip(late, parts)]
            return f"({'; '.join(parts)})" if parts else ""

        for server_round in range(1, max(f.rounds for f in followers) + 1):
            milestones.wait(f"{label}round {server_round}'s replies", lambda r=server_round: reached(r), log=log,
                            status=lambda r=server_round: status(r))
        milestones.wait(f"{label}{'runs' if len(followers) > 1 else 'run'} finished", lambda: reached(None),
                        log=log, status=lambda: status(None))
        return {f.name: FlResult(f.run_id, f.status, f.journal, f.out_dir / MODEL_FILE,
                                 f.finished_at - f.submitted_at, f.out_dir, f.journal["rounds"]) for f in followers}

    def _told(self, name: str, text: str) -> None:
        """Print what a run's round is waiting for (some nodes answered, others not yet)."""
        self.console.print(f"[dim]{name}: {text}[/]")

    def _explain_failure(self, run_id: int, status: str, journal: dict[str, Any], journal_path: Path) -> str:
        """A message naming the run, its status, and the clients' errors or the ServerApp's log tail."""
        errors = [e for entry in journal.get("rounds", []) for e in entry.get("errors", [])]
        lines = [f"federated run {run_id} failed (SuperLink status {status!r}, journal "
                 f"{journal.get('status', 'missing')!r} at {journal_path})"]
        if errors:
            lines += [f"  node {e['node_id']} ({e['phase']}): {e['reason']}" for e in errors[:5]]
        if journal.get("error") and not errors:
            lines.append(f"  ServerApp: {journal['error']}")
        if not errors and not journal.get("error"):
            lines.append("  ServerApp log tail:\n" + "\n".join(self.run_log(run_id).splitlines()[-15:]))
        return "\n".join(lines)


@dataclass
class _RunFollower:
    """Follows one submitted run: reads its journal as it grows and asks the SuperLink for its status."""

    name: str
    run_id: int
    out_dir: Path
    submitted_at: float
    rounds: int = 1  # num-server-rounds of the run
    status: str = "unknown"
    journal: dict[str, Any] = field(default_factory=dict)
    finished_at: float = 0.0
    _text: str = ""
    _reported: set = field(default_factory=set)
    _waits_told: set = field(default_factory=set)
    _last_change: float = field(default_factory=time.monotonic)
    _last_check: float = field(default_factory=time.monotonic)

    @property
    def journal_path(self) -> Path:
        """The ServerApp's metrics file for this run."""
        return self.out_dir / METRICS_FILE

    @property
    def finished(self) -> bool:
        """True once the SuperLink reports the run finished."""
        return self.status.startswith("finished")

    @property
    def completed(self) -> bool:
        """True once the SuperLink and the journal both say the run completed."""
        return self.status == "finished:completed" and self.journal.get("status") == "completed"

    def closed(self, server_round: int) -> bool:
        """True once the journal closed that round (its replies are in and aggregated)."""
        return any(e["round"] == server_round and "central" in e for e in self.journal.get("rounds", []))

    def waiting_text(self, server_round: int | None) -> str:
        """What this run waits for in a round: '2 of 3 nodes answered, waiting for device 2', or its status."""
        entry = next((e for e in self.journal.get("rounds", []) if e["round"] == server_round), None)
        if server_round is None or entry is None:
            return f"SuperLink status {self.status!r}" if self.journal else "ServerApp starting"
        phases = entry.get("waiting", {})
        if not phases:
            return "messages going out"
        phase, wait = list(phases.items())[-1]
        text = f"{wait['answered']} of {wait['expected']} nodes answered" + ("" if phase == "train" else f" ({phase})")
        if wait["answered"] and wait["missing"]:
            text += f", waiting for {_nodes(wait['missing'])}"
        return text

    def poll(self, federation: Federation, on_round, during, on_wait=None) -> None:
        """Read the journal if it changed (calling the callbacks) and check the status when due."""
        self._read(on_round, during, on_wait)
        now = time.monotonic()
        # Each `flwr ls` costs about a second of CPU: ask when the journal says the run ended,
        # or when it has been quiet for a while (a ServerApp that died before writing it).
        quiet = now - self._last_change > 10 and now - self._last_check > 10
        if self.journal.get("status") in ("completed", "failed") or quiet:
            self.status, self._last_check = federation.run_status(self.run_id), now
            if self.finished:
                self.finished_at = now
                self._read(on_round, during, on_wait)

    def _read(self, on_round, during, on_wait=None) -> None:
        """Reload the journal if it changed; call during(name, journal), on_round(name, entry) for new rounds,
        and on_wait(name, text) when a round has some replies but waits for others."""
        if not self.journal_path.exists():
            return
        text = self.journal_path.read_text()
        if text == self._text:
            return
        self._text, self.journal, self._last_change = text, json.loads(text), time.monotonic()
        if during:
            during(self.name, self.journal)
        for entry in self.journal["rounds"]:
            for phase, wait in entry.get("waiting", {}).items():
                key = (entry["round"], phase, wait["answered"])
                if on_wait and not wait["done"] and wait["answered"] and wait["missing"] and key not in self._waits_told:
                    self._waits_told.add(key)
                    limit = f" (timeout {wait['timeout_s']:.0f} s)" if wait.get("timeout_s") is not None else ""
                    on_wait(self.name, f"round {entry['round']} {phase}: {wait['answered']} of {wait['expected']} "
                                       f"nodes answered; waiting for {_nodes(wait['missing'])}{limit}")
            if "central" in entry and entry["round"] not in self._reported:
                self._reported.add(entry["round"])
                if on_round:
                    on_round(self.name, entry)


def _nodes(missing: list[dict[str, Any]]) -> str:
    """Name the nodes a round waits for: 'device 2 (node 8810)', or 'node 8810' before it reported its partition."""
    return ", ".join(f"device {m['partition_id']} (node {m['node_id']})" if m.get("partition_id") is not None
                     else f"node {m['node_id']}" for m in missing)


@dataclass
class NodeDropout:
    """Kill one SuperNode (SIGKILL) as a round's training starts; restart it once that round has ended.

    Pass it as ``during`` to ``Federation.run``; ``killed_at``/``restarted_at`` say when it acted.
    """

    federation: Federation
    partition_id: int
    round: int
    console: Console | None = None
    killed_at: float | None = None
    restarted_at: float | None = None

    def __call__(self, journal: dict[str, Any]) -> None:
        """Act on the journal's latest state."""
        entry = next((e for e in journal.get("rounds", []) if e["round"] == self.round), None)
        if entry is None:
            return
        if self.killed_at is None and "train" in entry["sampled"]:
            self.federation.kill_node(self.partition_id)
            self.killed_at = time.monotonic()
            self._say(f"round {self.round}: killed SuperNode {self.partition_id} (SIGKILL) while it trains")
        elif self.killed_at is not None and self.restarted_at is None and "central" in entry:
            self.federation.start_node(self.partition_id)
            self.restarted_at = time.monotonic()
            self._say(f"round {self.round} ended without it; restarted SuperNode {self.partition_id}")

    def _say(self, text: str) -> None:
        """Print a line when a console was given."""
        if self.console is not None:
            self.console.print(f"[yellow]{text}[/]")


def main(argv: list[str] | None = None) -> int:
    """Submit one run to a SuperLink whose SuperNodes run elsewhere (compose, Raspberry Pis) and follow it."""
    parser = argparse.ArgumentParser(prog="python -m cloud.federated.federation", description=main.__doc__)
    parser.add_argument("--superlink", default="127.0.0.1:8000", help="SuperLink address (SUPERLINK_ADDRESS)")
    parser.add_argument("--ca", type=Path, help="CA certificate when the SuperLink runs with TLS (certs/ca.pem)")
    parser.add_argument("--nodes", type=int, default=1, help="wait until this many SuperNodes are online")
    parser.add_argument("--out", type=Path, required=True, help="folder for the journal and the final model; "
                        "it must be writable by the ServerApp process (the SuperLink's host or container)")
    parser.add_argument("--test-path", type=Path, required=True, help="central_test.npz from `python -m cloud.federated.partition`")
    parser.add_argument("--run-config", default="", help="more overrides, e.g. 'num-server-rounds=5 strategy=\"fedprox\"'")
    parser.add_argument("--work-dir", type=Path, default=Path("runs/federation-cli"))
    args = parser.parse_args(argv)
    console = Console()
    overrides = tomllib.loads("\n".join(args.run_config.split())) if args.run_config else {}
    values = {**FlConfig().run_config(), **overrides, "min-nodes": args.nodes, "test-path": str(args.test_path.resolve())}
    config = FlConfig.from_run_config(values)
    strategy_class(config.strategy)  # a misspelt strategy fails here, before waiting for SuperNodes
    federation = Federation(args.superlink, args.work_dir, 0, args.work_dir, ca=args.ca, console=console,
                            health_timeout_s=600)
    console.print(f"waiting for {args.nodes} SuperNode(s) at {args.superlink} ...")
    federation.wait_online(args.nodes)
    result = federation.run(config, args.out, timeout=3600,
                            on_round=lambda entry: console.print(round_line(config.strategy, entry, config.num_server_rounds)))
    console.print(f"run {result.run_id}: {result.status} in {result.seconds:.1f} s; final model {result.model_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
