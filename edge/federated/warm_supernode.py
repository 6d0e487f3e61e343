"""Flower's SuperNode with warm ClientApps: each message's ClientApp is forked from a process that already imported Flower.

Flower 1.42 runs a ClientApp in a fresh Python process for every message: ``flower-superexec``
starts ``flwr-clientapp``, which spends 1.5-2.9 s importing Flower before it trains for 0.1 s.
``python -m edge.federated.warm_supernode <flower-supernode arguments>`` keeps Flower's parts and
changes only where that process comes from:

- the SuperNode runs as ``flower-supernode ... --isolation process`` (Flower's own mode for an
  outside SuperExec), with its idle wait between pulls cut from 3 s to ``SUPERNODE_IDLE_POLL_S``;
- this process is that SuperExec (Flower's ``flower-superexec`` loop, polling every
  ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` seconds, 0.2 here), with one change: a ClientApp task
  runs Flower's own ``run_clientapp`` in a child forked from a *warm* process that imported
  Flower and the kit's ClientApps once, when the device started;
- object pulls that find the objects not there yet retry after 0.05 s instead of Flower's 1 s
  (a ClientApp that starts in milliseconds asks before its SuperNode has them).

Every Flower check stays: the ClientApp pulls its message with the task's token, the FAB is
installed and its ClientApp loaded as Flower does it, the reply goes back through the SuperNode.
``SUPERNODE_WARM_CLIENTAPP=0`` runs Flower's stock ``flower-supernode`` instead (one fresh
process per message), which ``make bench-fl`` measures beside this one.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback

ENV_SWITCH = "SUPERNODE_WARM_CLIENTAPP"
ENV_IDLE_POLL = "SUPERNODE_IDLE_POLL_S"
ENV_PRELOAD = "SUPERNODE_PRELOAD"  # more modules for the warm process, e.g. torch,opacus,tenseal (private ClientApps)
IDLE_POLL_S = 0.2  # Flower's SuperNode sleeps 3 s when the SuperLink had no message for it
TASK_POLL_S = "0.2"  # Flower's SuperExec default is 1 s between task pulls
# What a ClientApp task imports: the kit's ClientApps, and what Flower's runtime loads only when a task
# runs (httpx's transport: httpcore and h11; numpy.random; the FAB's zip names), measured with cProfile.
PRELOAD = ("edge.federated.client_app", "edge.federated.private_client_app", "httpcore", "h11", "numpy.random",
           "encodings.cp437")
PULL_BACKOFF_S, PULL_BACKOFF_CAP_S = 0.05, 0.5  # Flower's: 1 s, doubling up to 10 s
ROLE_SUPERNODE = "--kit-supernode-process"  # internal: this process is the SuperNode child
PR_SET_PDEATHSIG = 1


def warm_enabled(env: dict[str, str] | None = None) -> bool:
    """True unless SUPERNODE_WARM_CLIENTAPP is 0/false/no/off (then Flower's stock SuperNode runs)."""
    value = (os.environ if env is None else env).get(ENV_SWITCH, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def _die_with_parent() -> None:
    """Linux: deliver SIGTERM to this process when its parent dies (a device losing its main process)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def runtime_api_port(supernode_args: list[str]) -> int:
    """The SuperNode's Runtime API port from its arguments (``--port N`` or ``--port=N``; Flower's default 9094)."""
    for i, arg in enumerate(supernode_args):
        if arg == "--port" and i + 1 < len(supernode_args):
            return int(supernode_args[i + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    return 9094


def preload_modules(env: dict[str, str] | None = None) -> tuple[str, ...]:
    """PRELOAD plus the comma-separated modules in SUPERNODE_PRELOAD (what private ClientApps import: torch, ...)."""
    extra = (os.environ if env is None else env).get(ENV_PRELOAD, "")
    return PRELOAD + tuple(name.strip() for name in extra.split(",") if name.strip())


class WarmClientApps:
    """A warm process, forked before any thread starts, that forks one child per ClientApp task."""

    def __init__(self, preload: tuple[str, ...] | None = None) -> None:
        self.preload = preload_modules() if preload is None else preload
        self._sock: socket.socket | None = None
        self.pid = 0

    def start(self) -> WarmClientApps:
        """Import Flower's ClientApp runtime and ``preload`` here, then fork the warm process (sharing those pages)."""
        from flwr.supercore.tls import validate_and_resolve_root_certificates
        from flwr.supernode.runtime.run_clientapp import run_clientapp

        for module in self.preload:
            try:
                __import__(module)
            except ImportError as exc:  # e.g. torch on a device with only the edge extra
                print(f"warm ClientApp process: {module} not preloaded ({exc}); a ClientApp that needs it "
                      "imports it itself", flush=True)
        self._runtime = run_clientapp, validate_and_resolve_root_certificates
        parent_end, child_end = socket.socketpair()
        pid = os.fork()  # still one thread: nothing started a thread yet
        if pid == 0:  # the warm process
            parent_end.close()
            _die_with_parent()
            try:
                self._serve(child_end)
            finally:
                os._exit(0)
        child_end.close()
        self._sock, self.pid = parent_end, pid
        self._replies = parent_end.makefile("r")
        return self

    def launch(self, spec: dict) -> int:
        """Ask the warm process to fork a ClientApp for one task; returns the child's pid."""
        assert self._sock is not None, "start() first"
        self._sock.sendall((json.dumps(spec) + "\n").encode())
        reply = self._replies.readline()
        if not reply:
            raise RuntimeError(f"the warm ClientApp process (pid {self.pid}) has exited")
        return int(reply)

    def _serve(self, sock: socket.socket) -> None:
        """Warm-process loop: fork a child per request until the SuperExec goes away."""
        import flwr.supercore.inflatable.inflatable_utils as inflatable

        run_clientapp, validate_and_resolve_root_certificates = self._runtime

        retry_object_pulls_sooner(inflatable)  # the ClientApp's pulls, in pull_and_inflate_object_from_tree
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
        requests = sock.makefile("r")
        for line in requests:
            spec = json.loads(line)
            child = os.fork()
            if child == 0:
                sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                started, code = time.monotonic(), 0
                try:
                    if spec["suppress_output"]:
                        devnull = os.open(os.devnull, os.O_WRONLY)
                        os.dup2(devnull, 1)
                        os.dup2(devnull, 2)
                    run_clientapp(
                        runtime_api_address=spec["runtime_api_address"], token=spec["token"],
                        insecure=spec["insecure"],
                        certificates=validate_and_resolve_root_certificates(spec["root_certificates_path"],
                                                                            spec["insecure"]),
                        parent_pid=spec["parent_pid"],
                        runtime_dependency_install=spec["runtime_dependency_install"],
                    )
                except SystemExit as exit_:
                    code = exit_.code if isinstance(exit_.code, int) else 1
                except BaseException:  # noqa: BLE001 - a ClientApp crash must not reach the warm process
                    traceback.print_exc()
                    code = 1
                finally:
                    print(f"warm ClientApp {os.getpid()}: task done in {time.monotonic() - started:.2f} s "
                          f"(exit code {code})", flush=True)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            sock.sendall(f"{child}\n".encode())


def retry_object_pulls_sooner(module) -> None:
    """Make ``module``'s object pulls retry after 0.05 s (doubling to 0.5 s), not Flower's 1 s (doubling to 10 s).

    Flower's SuperNode creates a task before it has pulled the message's objects from the SuperLink,
    and the SuperLink can hand out a message before its objects are in. A ClientApp (or SuperNode)
    that asks within milliseconds is told "not yet", and Flower's backoff then waits 1, 2, 4...
    seconds (seen: 1-3 s per round here); a fresh ClientApp process never noticed, its imports
    took longer than the pull. ``module`` is where the caller looks ``pull_objects`` up.
    """
    import flwr.supercore.inflatable.inflatable_utils as inflatable

    flower_pull_objects = getattr(inflatable, "flower_pull_objects", inflatable.pull_objects)
    inflatable.flower_pull_objects = flower_pull_objects  # patching twice keeps Flower's own underneath

    def pull_objects(object_ids, pull_object_fn, **options):
        """Flower's pull_objects with the short backoff for objects that are on their way."""
        options.update(initial_backoff=PULL_BACKOFF_S, backoff_cap=PULL_BACKOFF_CAP_S)
        return flower_pull_objects(object_ids, pull_object_fn, **options)

    module.pull_objects = pull_objects


def warm_executor(apps: WarmClientApps):
    """A Flower SuperExec executor that forks ClientApp tasks from ``apps`` and starts anything else as Flower does."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor
    from flwr.supercore.superexec.executor.types import LaunchResult

    class WarmExecutor(SubprocessExecutor):
        """SubprocessExecutor whose ClientApp launches are forks of the warm process."""

        def launch(self, spec):
            """Fork a ClientApp for spec (other task types: a fresh process, as Flower starts them)."""
            if spec.task_type != TaskType.CLIENT_APP:
                return super().launch(spec)
            try:
                apps.launch({
                    "runtime_api_address": spec.runtime_api_address, "token": spec.token,
                    "insecure": spec.insecure, "root_certificates_path": spec.root_certificates_path,
                    "parent_pid": spec.parent_pid, "runtime_dependency_install": spec.runtime_dependency_install,
                    "suppress_output": spec.suppress_output,
                })
            except (OSError, RuntimeError) as exc:
                return LaunchResult.failed(f"warm ClientApp launch failed: {exc}")
            return LaunchResult.accepted()

    return WarmExecutor()


def run_supernode(args: list[str]) -> None:
    """Be Flower's SuperNode (``flower-supernode`` with args): at most SUPERNODE_IDLE_POLL_S between empty pulls, short pull retries."""
    import time as real_time

    import flwr.supernode.start_client_internal as internal
    from flwr.supernode.cli.flower_supernode import flower_supernode

    cap = float(os.environ.get(ENV_IDLE_POLL, IDLE_POLL_S))

    class ShortWaits:
        """The ``time`` module as start_client_internal sees it, with its sleeps capped at ``cap`` seconds."""

        def __getattr__(self, name):
            return getattr(real_time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            """Sleep, but no longer than the cap (the SuperNode's 3 s idle wait and 0.5 s reply waits)."""
            real_time.sleep(min(seconds, cap))

    internal.time = ShortWaits()
    retry_object_pulls_sooner(internal)  # the SuperNode's pulls from the SuperLink
    sys.argv = ["flower-supernode", *args]
    flower_supernode()


def main(argv: list[str] | None = None) -> int:
    """Start the SuperNode (process isolation) as a child, then run the warm SuperExec here until it exits."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [ROLE_SUPERNODE]:
        run_supernode(args[1:])
        return 0
    if "--isolation" in args:
        print("warm_supernode: leave out --isolation; it runs the SuperNode with --isolation process "
              f"(set {ENV_SWITCH}=0 for Flower's stock subprocess isolation)", file=sys.stderr)
        return 2
    supernode = subprocess.Popen([sys.executable, "-m", "edge.federated.warm_supernode", ROLE_SUPERNODE, *args,
                                  "--isolation", "process"], preexec_fn=_die_with_parent)
    import flwr.supercore.superexec.run_superexec as superexec
    from flwr.supercore.cli.flower_superexec import flower_superexec

    apps = WarmClientApps().start()  # after the imports (the warm process shares them), before any thread

    superexec.get_executor = lambda *_, **__: warm_executor(apps)
    os.environ.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", TASK_POLL_S)
    sys.argv = ["flower-superexec", "--insecure", "--runtime-api-address",
                f"127.0.0.1:{runtime_api_port(args)}", "--parent-pid", str(supernode.pid)]
    try:
        flower_superexec()  # returns or exits when the SuperNode is gone (Flower's parent-process monitor)
    finally:
        if supernode.poll() is None:
            supernode.terminate()
    return supernode.wait()


if __name__ == "__main__":
    sys.exit(main())
