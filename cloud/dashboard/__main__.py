"""The dashboard from the command line: ``python -m cloud.dashboard --stream PATH --fl PATH [--fl PATH] [--host H] [--port N]``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from cloud.dashboard.server import DashboardServer
from cloud.dashboard.settings import load_settings
from cloud.stack.procs import PortInUseError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the host and port defaults from DASHBOARD_HOST and DASHBOARD_PORT."""
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m cloud.dashboard",
                                     description="A live, read-only dashboard of a streaming and federated scenario, "
                                                 "read from the files its processes write (never from the broker).")
    parser.add_argument("--stream", type=Path,
                        help="a streaming scenario folder (processed.db, updates.json, cam-N.json)")
    parser.add_argument("--fl", type=Path, action="append", default=[],
                        help="a federated run's fl-metrics.json, its folder, or a folder of runs (repeatable)")
    parser.add_argument("--host", default=settings.dashboard_host,
                        help=f"address to bind (default {settings.dashboard_host}; another host sees the page only "
                             "when this says so)")
    parser.add_argument("--port", type=int, default=settings.dashboard_port,
                        help=f"port (default {settings.dashboard_port}, DASHBOARD_PORT; 0 picks a free one)")
    args = parser.parse_args(argv)
    if args.stream is None and not args.fl:
        parser.error("nothing to show: give --stream PATH, --fl PATH or both")
    return args


def main(argv: list[str] | None = None) -> int:
    """Serve the dashboard until Ctrl-C or SIGTERM; 1 when the port is taken."""
    args = parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        server = DashboardServer(stream_folder=args.stream, fl_folders=args.fl, host=args.host, port=args.port).start()
    except PortInUseError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"dashboard: {server.url} (reading {', '.join(str(p) for p in [args.stream, *args.fl] if p)}; "
          "Ctrl-C stops it)", flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
