"""The `cloud` command: bring the stack up and down, run labs, benchmarks and checks."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from cloud.bench.suite import BENCHMARKS, run_benchmarks
from cloud.bench.tables import bench_console
from cloud.labkit.runner import LabError, discover_labs, run_lab
from cloud.settings import StackSettings
from cloud.stack.certs import make_certs
from cloud.stack.compose import ComposeStack
from cloud.stack.doctor import run_doctor
from cloud.stack.local import LocalStack, resolve_runtime
from cloud.stack.procs import HealthCheckError, PortInUseError, log_tail

RUNTIMES = ("auto", "local", "docker", "external")


class HelpfulParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors suggest the closest valid choice or flag."""
    def error(self, message: str) -> None:  # noqa: D102 - argparse hook
        words = [w.strip("'\",") for w in message.split()]
        options = _known_words(self)
        for word in words:
            close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
            if close and close[0] != word:
                message += f" (did you mean {close[0]}?)"
                break
        super().error(message)


def _known_words(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag and subcommand name of parser and its subparsers."""
    words = []
    for action in parser._actions:
        words += action.option_strings
        if isinstance(action.choices, dict):
            for name, subparser in action.choices.items():
                words.append(name)
                words += _known_words(subparser)
    return words


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = HelpfulParser(prog="cloud", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=HelpfulParser)
    for name, text in (("up", "start the stack"), ("down", "stop what `up` started"),
                       ("status", "show each service's health"), ("logs", "show service logs")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--runtime", choices=RUNTIMES, default=None)
        if name == "logs":
            cmd.add_argument("--lines", type=int, default=20)
    lab = sub.add_parser("lab", help="run a numbered lab: cloud lab 07 [--quick] [key=value ...]")
    lab.add_argument("number")
    lab.add_argument("--quick", action="store_true", help="reduced version, seconds not minutes")
    lab.add_argument("--runtime", choices=RUNTIMES, default=None)
    lab.add_argument("args", nargs="*", metavar="key=value")
    sub.add_parser("labs", help="list the labs")
    sub.add_parser("doctor", help="check Python, extras, Docker, ports, LAN address, GPU")
    bench = sub.add_parser("bench", help="run a benchmark, or all of them into one report")
    bench.add_argument("name", choices=(*BENCHMARKS, "all"))
    bench.add_argument("args", nargs="*", metavar="key=value")
    bench.add_argument("--into", default=None, help="run folder to write into (make bench gives each benchmark one)")
    sub.add_parser("certs", help="make a CA and a server certificate under certs/")
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; key=value words may come before or after flags."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        unknown = [w for w in extra if w.startswith("-") or "=" not in w]
        if unknown or not hasattr(args, "args"):
            parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
        args.args = list(args.args) + extra
    return args


def _settings(runtime: str | None = None):
    """Settings from the environment, with the runtime flag applied."""
    settings = StackSettings()
    if runtime:
        settings = settings.model_copy(update={"runtime": runtime})
    return settings


def _compose_stack(settings, console: Console):
    """The compose stack when the runtime resolves to Docker, else None (local processes)."""
    if resolve_runtime(settings.runtime) != "docker":
        return None

    return ComposeStack(settings, console=console)


def cmd_up(args, console: Console) -> int:
    """Start the stack and leave it running."""
    settings = _settings(args.runtime)
    compose = _compose_stack(settings, console)
    if compose is not None:
        compose.up()
        return 0
    stack = LocalStack(settings, settings.stack_dir, owned=False, console=console)
    live = [row for row in stack.status() if row["alive"]]
    if live:
        console.print(f"the stack is already up ({', '.join(r['service'] for r in live)}); "
                      "`cloud down` stops it")
        return 0
    stack.up()
    console.print(f"stack up; logs and state in {settings.stack_dir}; stop it with `make down`")
    return 0


def cmd_down(args, console: Console) -> int:
    """Stop what `cloud up` started."""
    settings = _settings(args.runtime)
    compose = _compose_stack(settings, console)
    if compose is not None:
        compose.down()
        return 0
    stopped = LocalStack(settings, settings.stack_dir, owned=False, console=console).down()
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def cmd_status(args, console: Console) -> int:
    """Print a table of the stack's services; exit 1 when one is unhealthy."""
    settings = _settings(args.runtime)
    compose = _compose_stack(settings, console)
    if compose is not None:
        compose.status()
        return 0
    rows = LocalStack(settings, settings.stack_dir, owned=False, console=console).status()
    if not rows:
        console.print("the stack is not running (`make up` starts it)")
        return 1
    table = Table(title="local stack")
    for column in ("service", "pid", "address", "alive", "healthy", "log"):
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(row[c]) for c in ("service", "pid", "address", "alive", "healthy", "log")])
    console.print(table)
    return 0 if all(r["healthy"] for r in rows) else 1


def cmd_logs(args, console: Console) -> int:
    """Print the last lines of each service's log."""
    settings = _settings(args.runtime)
    compose = _compose_stack(settings, console)
    if compose is not None:
        compose.logs()
        return 0
    stack = LocalStack(settings, settings.stack_dir, owned=False, console=console)
    for name in ("broker", "superlink"):
        console.rule(name)
        console.print(log_tail(stack.log_path(name), args.lines), markup=False, highlight=False)
    return 0


def cmd_lab(args, console: Console) -> int:
    """Run a lab."""
    run_lab(args.number, args.args, quick=args.quick, runtime=args.runtime,
            settings=_settings(args.runtime))
    return 0


def cmd_labs(args, console: Console) -> int:
    """List the labs."""
    for number, info in discover_labs().items():
        console.print(f"make lab-{number}   {info.slug}")
    return 0


def cmd_doctor(args, console: Console) -> int:
    """Check this machine for what the kit needs."""
    return run_doctor(_settings(), console)


def cmd_bench(args, console: Console) -> int:
    """Run one benchmark into runs/bench-NAME/<timestamp>/, or all into runs/bench/<timestamp>/, with a report."""
    names = BENCHMARKS if args.name == "all" else (args.name,)
    # Tables fit 80 columns; in a log (not a terminal) the console keeps a readable width instead of rich's 80.
    run_benchmarks(names, _settings().runs_dir, bench_console(console.file), list(args.args), into=args.into)
    return 0


def cmd_certs(args, console: Console) -> int:
    """Make TLS certificates for the SuperLink."""
    make_certs(console=console)
    return 0


COMMANDS = {"up": cmd_up, "down": cmd_down, "status": cmd_status, "logs": cmd_logs,
            "lab": cmd_lab, "labs": cmd_labs, "doctor": cmd_doctor, "bench": cmd_bench,
            "certs": cmd_certs}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cloud` command."""
    args = parse(argv)
    console = Console()
    try:
        return COMMANDS[args.command](args, console)
    except (LabError, PortInUseError, HealthCheckError, RuntimeError, ValueError) as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; everything this run started has been stopped[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
