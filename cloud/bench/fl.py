"""Benchmark federated rounds on this machine: round time and its non-training part for 1-10 SuperNodes.

For each number of SuperNodes it starts a SuperLink and the nodes (the kit's warm SuperNodes,
``edge.federated.warm_supernode``), runs a few FedAvg rounds (training messages only), and
measures: round wall time, the slowest device's local training time (the round's critical path),
the slowest ClientApp task (fork to reply, from the nodes' logs), the rest (polling, transfers,
the server), and the memory of each node (all its processes, peak resident set). The baseline,
in the same run: the same rounds on Flower's stock SuperNodes, which start a fresh Python per
message. Separately it times what one such ClientApp process costs to start (Flower's runtime
alone, with the kit's ClientApp, with torch), and runs once with Flower's stock 3 s reply polling.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from cloud.bench.report import Measure
from cloud.bench.tables import bench_table
from cloud.federated.config import FlConfig
from cloud.federated.partition import write_digits_federation
from cloud.labkit.runner import parse_args
from cloud.settings import StackSettings
from cloud.stack.local import LocalStack
from cloud.stack.procs import free_port, group_members
from edge.machine import machine_name

# Imported inside the functions that use them, to keep this module quick to import: cloud.federated.federation.

SUPERNODE_IDLE_POLL_S = 3.0  # flwr/supernode/start_client_internal.py sleeps 3 s when no message is waiting
WARM_TASK_LINE = re.compile(r"warm ClientApp \d+: task done in ([0-9.]+) s")
STOCK_GRID_POLL_S = 3.0  # flwr's Grid.send_and_receive sleeps 3 s between reply pulls
TARGET_MEMORY_GB = 8.0
TARGET_ROUND_S = {3: 4.0}  # issue 14: a steady FL round with 3 SuperNodes within 4 s
IMPORTS = {  # name: (already imported, measured)
    "Flower ClientApp runtime": ("", "import flwr.supernode.cli.flwr_clientapp"),
    "+ kit ClientApp (numpy MLP)": ("", "import flwr.supernode.cli.flwr_clientapp, edge.federated.client_app"),
    "+ torch (if the ClientApp used it)": ("", "import flwr.supernode.cli.flwr_clientapp, edge.federated.client_app, torch"),
    "kit's own imports, after Flower's": ("import flwr.supernode.cli.flwr_clientapp", "import edge.federated.client_app"),
}


def group_memory_mb(pgid: int) -> float:
    """Memory (MB) of every process in a process group (a SuperNode and its helpers): proportional set size.

    PSS splits a page shared by several processes between them (a warm SuperNode's forks share
    Flower's imported modules with their parent), so the sum over processes is what the group
    really holds; plain RSS would count those pages once per process. Falls back to RSS where
    /proc/<pid>/smaps_rollup is missing.
    """
    total_kb = 0
    for pid in group_members(pgid):
        try:
            total_kb += _memory_kb(str(pid))
        except (OSError, ValueError):  # the process ended between the listing and the read
            continue
    return total_kb / 1024


def _memory_kb(pid: str) -> int:
    """One process's PSS in kB (its RSS where smaps_rollup cannot be read)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class MemorySampler:
    """Samples each SuperNode group's RSS every interval seconds in a background thread; keeps the peaks."""
    def __init__(self, pgids: list[int], interval: float = 0.5) -> None:
        self.pgids = pgids
        self.interval = interval
        self.peak = {pgid: 0.0 for pgid in pgids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pgid in self.pgids:
                self.peak[pgid] = max(self.peak[pgid], group_memory_mb(pgid))
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def import_cost(preload: str, statement: str, repeats: int = 5) -> dict[str, float]:
    """Median wall seconds of a fresh Python process running preload then statement, the statement's own
    import seconds, and the process's peak RSS (MB)."""
    code = f"import time, resource; {preload or 'pass'}; t = time.perf_counter(); {statement}; " \
           "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    seconds, own, rss = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        total = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"`{statement}` failed: {done.stderr.strip()[-500:]}")
        import_s, maxrss_kb = done.stdout.split()
        seconds.append(total)
        own.append(float(import_s))
        rss.append(int(maxrss_kb) / 1024)
    return {"seconds": statistics.median(seconds), "import_seconds": statistics.median(own),
            "rss_mb": statistics.median(rss)}


def task_seconds(log: Path) -> list[float]:
    """Seconds of each ClientApp task a warm SuperNode ran, in order, from its log (empty for a stock node)."""
    if not log.exists():
        return []
    return [float(m.group(1)) for m in WARM_TASK_LINE.finditer(log.read_text(errors="replace"))]


def bench_nodes(run_path: Path, nodes: int, rounds: int, seed: int, poll_interval: float,
                console: Console, warm: bool = True) -> dict[str, Any]:
    """Start a SuperLink and ``nodes`` SuperNodes (warm or Flower's stock), run FedAvg rounds, return times and memory."""
    from cloud.federated.federation import Federation

    folder = run_path / f"nodes-{nodes}-poll-{poll_interval:g}-{'warm' if warm else 'stock'}"
    _, test_path = write_digits_federation(folder / "data", nodes, [("iid", None)], seed)
    settings = StackSettings(superlink_address=f"127.0.0.1:{free_port()}", stack_dir=folder / "stack")
    stack = LocalStack(settings, folder / "stack", console=console)
    stack.up(["superlink"])
    try:
        federation = Federation(settings.superlink_address, folder / "federation", nodes, folder / "data",
                                console=console, health_timeout_s=180, warm=warm)
        start = time.monotonic()
        with federation:
            online_s = time.monotonic() - start
            idle_mb = [group_memory_mb(pid) for pid in federation.pids()]
            config = FlConfig(num_server_rounds=rounds, min_nodes=nodes, round_timeout=300, seed=seed,
                              test_path=str(test_path), evaluate_every=-1, poll_interval=poll_interval)
            with MemorySampler(federation.pids()) as sampler:
                result = federation.run(config, folder / "out", timeout=900)
            peak_mb = list(sampler.peak.values())
    finally:
        stack.down()
    # One line per task in each node's log; a round's critical path is its slowest node.
    tasks = [task_seconds(node.log) for node in federation.nodes]
    per_round = []
    for i, r in enumerate(result.rounds):
        slowest_task = max((t[i] for t in tasks if len(t) > i), default=None)
        per_round.append({"round": i + 1, "round_s": r["seconds"], "task_s": slowest_task,
                          "train_s": max(t["train_seconds"] for t in r["train"])})
    # Round 1 also installs the app (FAB) on every node: steady-state numbers use the later rounds.
    steady = result.rounds[1:] or result.rounds
    round_s = [r["seconds"] for r in steady]
    train_s = [max(t["train_seconds"] for t in r["train"]) for r in steady]
    steady_tasks = [p["task_s"] for p in per_round[1:] or per_round if p["task_s"] is not None]
    return {
        "nodes": nodes, "warm": warm, "poll_interval": poll_interval, "online_s": online_s, "per_round": per_round,
        "task_s": statistics.mean(steady_tasks) if steady_tasks else None,
        "round_s": statistics.mean(round_s), "first_round_s": result.rounds[0]["seconds"],
        "train_s": statistics.mean(train_s), "overhead_s": statistics.mean(round_s) - statistics.mean(train_s),
        "idle_node_mb": statistics.mean(idle_mb), "peak_node_mb": max(peak_mb), "peak_total_mb": sum(peak_mb),
        "accuracy": result.rounds[-1]["central"]["accuracy"], "run_s": result.seconds,
    }


def main(run, console: Console, *tokens: str) -> dict[str, Any]:
    """``cloud bench fl [quick=1] [nodes=1,3,5,10] [rounds=3] [seed=0]``: the table, JSON and the largest overhead."""
    # nodes and rounds left at 0 take the mode's default: 1,3 nodes and 2 rounds quick, else 1,3,5,10 and 3.
    options = parse_args(tokens, {"quick": False, "nodes": "", "rounds": 0, "seed": 0})
    quick, seed = options["quick"], options["seed"]
    counts = [int(n) for n in (options["nodes"] or ("1,3" if quick else "1,3,5,10")).split(",")]
    rounds = options["rounds"] or (2 if quick else 3)
    console.print(f"machine: {machine_name()}")

    console.rule("ClientApp process start: one fresh Python per message")
    imports = {name: import_cost(*pair) for name, pair in IMPORTS.items()}
    table = bench_table("start cost of one ClientApp process (median of 5)",
                        [("imports", "text"), ("wall s", "number"), ("import s", "number"), ("RSS MB", "number")])
    for name, cost in imports.items():
        table.add_row(name, f"{cost['seconds']:.2f}", f"{cost['import_seconds']:.3f}", f"{cost['rss_mb']:.0f}")
    console.print(table)

    rows = []
    for n in counts:
        console.rule(f"{n} SuperNode{'s' if n > 1 else ''}, {rounds} rounds")
        rows.append(bench_nodes(run.path, n, rounds, seed, 0.2, console))
        console.print(f"{n} nodes: round {rows[-1]['round_s']:.1f} s, training {rows[-1]['train_s']:.3f} s")
    stock_n = 3 if 3 in counts else counts[0]
    console.rule(f"baseline: {stock_n} of Flower's stock SuperNodes (a fresh Python per message)")
    fresh = bench_nodes(run.path, stock_n, rounds, seed, 0.2, console, warm=False)
    console.rule(f"{stock_n} SuperNodes with Flower's stock {STOCK_GRID_POLL_S:g} s reply polling")
    stock = bench_nodes(run.path, stock_n, rounds, seed, STOCK_GRID_POLL_S, console)

    # Short headers to fit 80 columns: train = slowest local training, task = slowest ClientApp task (fork to
    # reply), 1st = first round (installs the app), MB idle/peak per node and the peak of all nodes together.
    table = bench_table(f"federated rounds on this machine ({rounds} rounds, train messages only; steady rounds)",
                        [(c, "number") for c in ("nodes", "round s", "task s", "train s", "1st s", "online s",
                                                 "MB idle", "MB peak", "MB all")])
    for r in [*rows, fresh]:
        name = f"{r['nodes']}" if r["warm"] else f"{r['nodes']} stock"
        table.add_row(name, f"{r['round_s']:.2f}", "—" if r["task_s"] is None else f"{r['task_s']:.2f}",
                      f"{r['train_s']:.3f}", f"{r['first_round_s']:.1f}", f"{r['online_s']:.1f}",
                      f"{r['idle_node_mb']:.0f}", f"{r['peak_node_mb']:.0f}", f"{r['peak_total_mb']:.0f}")
    console.print(table)

    warm_row = next(r for r in rows if r["nodes"] == stock_n)
    table = bench_table(f"where each round's time goes, {stock_n} warm SuperNodes (slowest node per round)",
                        [(c, "number") for c in ("round", "round s", "training", "ClientApp", "the rest")])
    for p in warm_row["per_round"]:
        task = p["task_s"]
        table.add_row(str(p["round"]), f"{p['round_s']:.2f}", f"{p['train_s']:.3f}",
                      "—" if task is None else f"{task - p['train_s']:.2f}",
                      "—" if task is None else f"{p['round_s'] - task:.2f}")
    console.print(table)
    console.print("training: the slowest device's local epochs; ClientApp: the rest of its task (pull the "
                  "message, load the app, push the reply); the rest: SuperNode, SuperExec and server polling "
                  "(0.2 s each), transfers, aggregation and the server's evaluation")

    clientapp_s = imports["+ kit ClientApp (numpy MLP)"]["seconds"]
    kit_part = imports["kit's own imports, after Flower's"]["import_seconds"]
    console.print(f"Flower's stock SuperNode starts a fresh Python per message: {clientapp_s:.2f} s each here "
                  f"(the kit's own imports add {kit_part * 1000:.1f} ms; torch would add "
                  f"{imports['+ torch (if the ClientApp used it)']['seconds'] - clientapp_s:.2f} s and "
                  f"{imports['+ torch (if the ClientApp used it)']['rss_mb'] - imports['+ kit ClientApp (numpy MLP)']['rss_mb']:.0f} MB), "
                  f"and waits {SUPERNODE_IDLE_POLL_S:g} s between empty pulls: round {fresh['round_s']:.2f} s with "
                  f"{stock_n} nodes against {warm_row['round_s']:.2f} s warm ({fresh['round_s'] / warm_row['round_s']:.1f}x)")
    console.print(f"stock Grid polling ({STOCK_GRID_POLL_S:g} s) with {stock_n} nodes: round {stock['round_s']:.2f} s "
                  f"vs {warm_row['round_s']:.2f} s with 0.2 s polling")
    biggest = max(rows, key=lambda r: r["nodes"])
    fits = biggest["peak_total_mb"] / 1024 < TARGET_MEMORY_GB
    console.print(f"{biggest['nodes']} SuperNodes peaked at {biggest['peak_total_mb'] / 1024:.2f} GB together: "
                  f"{'fits' if fits else 'does NOT fit'} in {TARGET_MEMORY_GB:g} GB")
    return {"machine": machine_name(), "rounds": rounds, "clientapp_start": imports, "rows": rows,
            "fresh_process_baseline": fresh, "stock_grid": stock, "fits_memory_target": fits}


def measures(result: dict[str, Any]) -> list[Measure]:
    """P4 of issue 14 from a main() result: the steady round time with 3 warm SuperNodes, Flower's stock ones beside it."""
    out = []
    for nodes, target in TARGET_ROUND_S.items():
        row = next((r for r in result["rows"] if r["nodes"] == nodes), None)
        if row is None:
            out.append(Measure("P4", f"FL round time, {nodes} SuperNodes", None, "s", target=target,
                               note=f"not measured: bench-fl ran without {nodes} nodes (nodes=...)"))
            continue
        fresh = result.get("fresh_process_baseline", {})
        baseline = fresh.get("round_s") if fresh.get("nodes") == nodes else None
        stock = result.get("stock_grid", {})
        stock_note = (f"; {stock['round_s']:.2f} s with Flower's stock {STOCK_GRID_POLL_S:g} s reply polling"
                      if stock.get("nodes") == nodes else "")
        out.append(Measure("P4", f"FL round time, {nodes} SuperNodes", row["round_s"], "s", target=target,
                           baseline=baseline, baseline_name="stock SuperNodes" if baseline else "",
                           note=f"mean of the steady rounds of {result['rounds']} (round 1 installs the app: "
                                f"{row['first_round_s']:.1f} s) on the kit's warm SuperNodes; slowest local "
                                f"training {row['train_s']:.3f} s; baseline: Flower's stock SuperNodes (a fresh "
                                f"Python per message) in the same run; kit's 0.2 s reply polling{stock_note}"))
    return out
