"""The Flower ServerApp: FedAvg, FedProx or FedAdam over the devices' numpy MLP, journalled round by round.

Runs inside the SuperLink's ServerApp process (``flwr run`` submits it). Every round it writes
``fl-metrics.json`` in the run's ``out-dir`` (per-device training loss and held-out accuracy,
central test accuracy, bytes sent, dropouts and client errors), so the kit can print a line per
round and fail loudly when clients fail, since ``flwr run`` itself exits 0 even then.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from edge.federated.client_app import params_to_record, record_to_params
from edge.federated.mlp import evaluate, init_params

METRICS_FILE = "fl-metrics.json"
MODEL_FILE = "global_model.npz"
STRATEGIES = ("fedavg", "fedprox", "fedadam")
# Error codes of flwr.common.constant.ErrorCode: 1 load failed, 2 ClientApp raised, 8 ClientApp crashed.
CLIENT_ERROR_CODES = {1: "could not load ClientApp", 2: "ClientApp raised", 8: "ClientApp crashed"}


class FederationError(RuntimeError):
    """A federated run failed: clients raised, too few answered, or the run did not finish."""


@dataclass(frozen=True)
class FlConfig:
    """The run settings; the defaults here are the ones in cloud/federated/fedapp/pyproject.toml."""

    num_server_rounds: int = 3
    strategy: str = "fedavg"
    fraction_train: float = 1.0
    min_nodes: int = 2
    round_timeout: float = 30.0
    poll_interval: float = 0.2
    evaluate_every: int = 0  # 0: per-device evaluate messages after the last round only; -1: never
    local_epochs: int = 5
    lr: float = 0.1
    batch_size: int = 16
    proximal_mu: float = 0.05
    server_lr: float = 0.1
    hidden: int = 32
    seed: int = 0
    partition_set: str = "iid"
    test_path: str = ""
    out_dir: str = ""
    fail_on_client_error: bool = True

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> FlConfig:
        """Read the hyphenated run-config keys; ValueError on a bad strategy or count."""
        values = {f.name: run_config[f.name.replace("_", "-")] for f in fields(cls)
                  if f.name.replace("_", "-") in run_config}
        config = cls(**values)
        if config.strategy not in STRATEGIES:
            raise ValueError(f"run config strategy={config.strategy!r}; use one of {', '.join(STRATEGIES)}")
        if config.num_server_rounds < 1 or config.min_nodes < 1:
            raise ValueError(f"num-server-rounds and min-nodes must be >= 1, got "
                             f"{config.num_server_rounds} and {config.min_nodes}")
        return config

    def run_config(self) -> dict[str, Any]:
        """The settings as hyphenated run-config keys."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items()}


def run_config_string(values: dict[str, Any]) -> str:
    """Format run-config overrides for ``flwr run --run-config`` (TOML values)."""
    def toml(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    return " ".join(f"{k}={toml(v)}" for k, v in values.items())


def record_bytes(record: ArrayRecord | None) -> int:
    """Bytes of array data in a record (what travels, without framing)."""
    return 0 if record is None else sum(len(a.data) for a in record.values())


class RoundJournal:
    """The run's metrics file, rewritten atomically after every event so a reader never sees half."""

    def __init__(self, path: Path, config: FlConfig, run_id: int) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {"run_id": run_id, "config": asdict(config), "status": "running",
                                     "started_at": time.time(), "rounds": [], "central_initial": None}
        self._round_start: dict[int, float] = {}
        self.destinations: dict[str, int] = {}  # message id -> node id, filled by PollingGrid
        self.save()

    def save(self) -> None:
        """Write the journal (tmp file + rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)

    def round(self, server_round: int) -> dict[str, Any]:
        """The entry of a round, created on first use."""
        for entry in self.data["rounds"]:
            if entry["round"] == server_round:
                return entry
        entry = {"round": server_round, "train": [], "evaluate": [], "dropouts": [], "errors": [],
                 "bytes_down": 0, "bytes_up": 0, "sampled": {}}
        self.data["rounds"].append(entry)
        return entry

    def sent(self, server_round: int, phase: str, messages: list[Message], arrays: ArrayRecord) -> None:
        """Record the messages of a phase going out (marks the round started)."""
        if phase == "train":
            self._round_start[server_round] = time.perf_counter()
        entry = self.round(server_round)
        entry["sampled"][phase] = [m.metadata.dst_node_id for m in messages]
        entry["bytes_down"] += record_bytes(arrays) * len(messages)
        self.save()

    def replies(self, server_round: int, phase: str, replies: list[Message]) -> list[dict]:
        """Record a phase's replies: per-device metrics, errors, and nodes that never answered."""
        entry = self.round(server_round)
        answered = set()
        client_errors = []
        for reply in replies:
            # Errors the SuperLink writes for an unreachable node come from the SuperLink itself:
            # name the node the original message went to.
            node = self.destinations.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
            answered.add(node)
            if reply.has_error():
                code, reason = int(reply.error.code), str(reply.error.reason)
                item = {"phase": phase, "node_id": node, "code": code, "reason": reason}
                if code in CLIENT_ERROR_CODES:
                    entry["errors"].append(item)
                    client_errors.append(item)
                else:
                    entry["dropouts"].append(item)
                continue
            metrics = dict(next(iter(reply.content.metric_records.values())))
            row = {"node_id": node, **{k.replace("-", "_"): v for k, v in metrics.items()}}
            row["partition_id"] = int(row.get("partition_id", -1))
            if phase == "train":
                entry["bytes_up"] += record_bytes(next(iter(reply.content.array_records.values()), None))
            entry[phase].append(row)
        for node in entry["sampled"].get(phase, []):
            if node not in answered:
                entry["dropouts"].append({"phase": phase, "node_id": node, "code": None,
                                          "reason": "no reply within the round timeout"})
        if phase == "train" and entry["train"]:
            n = sum(r["num_examples"] for r in entry["train"])
            entry["train_loss"] = sum(r["train_loss"] * r["num_examples"] for r in entry["train"]) / n
        self.save()
        return client_errors

    def central(self, server_round: int, loss: float, accuracy: float) -> None:
        """Record the global model's central test metrics; closes the round."""
        value = {"loss": loss, "accuracy": accuracy}
        if server_round == 0:
            self.data["central_initial"] = value
        else:
            entry = self.round(server_round)
            entry["central"] = value
            entry["seconds"] = time.perf_counter() - self._round_start.get(server_round, time.perf_counter())
        self.save()

    def finish(self, status: str, error: str | None = None) -> None:
        """Mark the run completed or failed."""
        self.data.update(status=status, error=error, finished_at=time.time())
        self.save()


class JournalMixin:
    """Adds journalling, and failing on client errors, to a Flower strategy (put it first in the bases)."""

    journal: RoundJournal
    fail_on_client_error: bool = True
    num_rounds: int = 1
    evaluate_every: int = 0  # 0: per-device evaluate messages after the last round only; -1: never

    def configure_train(self, server_round, arrays, config, grid):
        """Sample nodes and build train messages, then journal them."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.journal.sent(server_round, "train", messages, arrays)
        return messages

    def configure_evaluate(self, server_round, arrays, config, grid):
        """Build evaluate messages every ``evaluate_every`` rounds (0: after the last round only, -1: never)."""
        if self.evaluate_every < 0:
            return []
        every = self.evaluate_every or self.num_rounds
        if server_round % every and server_round != self.num_rounds:
            return []
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        self.journal.sent(server_round, "evaluate", messages, arrays)
        return messages

    def aggregate_train(self, server_round, replies):
        """Journal the replies, refuse to go on after client errors or too few answers, then aggregate."""
        replies = list(replies)
        self._check("train", server_round, replies)
        return super().aggregate_train(server_round, replies)

    def aggregate_evaluate(self, server_round, replies):
        """Journal the evaluation replies, then aggregate them."""
        replies = list(replies)
        self._check("evaluate", server_round, replies)
        return super().aggregate_evaluate(server_round, replies)

    def _check(self, phase: str, server_round: int, replies: list[Message]) -> None:
        """Raise FederationError on client errors (if configured) or fewer than min_train_nodes answers."""
        errors = self.journal.replies(server_round, phase, replies)
        if errors and self.fail_on_client_error:
            detail = "; ".join(f"node {e['node_id']}: {e['reason']}" for e in errors)
            raise FederationError(f"round {server_round} {phase}: {len(errors)} client(s) failed: {detail}")
        good = sum(not r.has_error() for r in replies)
        if phase == "train" and good < self.min_train_nodes:
            raise FederationError(
                f"round {server_round}: only {good} node(s) returned weights, fewer than min-nodes="
                f"{self.min_train_nodes}; start more SuperNodes, lower min-nodes or raise round-timeout"
            )


class JournalledFedAvg(JournalMixin, FedAvg):
    """FedAvg: the new global model is the sample-weighted mean of the clients' models."""


class JournalledFedProx(JournalMixin, FedProx):
    """FedProx: FedAvg on the server; clients add (mu/2)||w - w_global||^2 to their loss."""


class JournalledFedAdam(JournalMixin, FedAdam):
    """FedAdam: the averaged client update is a pseudo-gradient for an Adam step on the server."""

    def aggregate_train(self, server_round, replies):
        """Adam step, then back to float32: Flower's step multiplies by a numpy float64 and widens the model."""
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            arrays = params_to_record({k: a.numpy().astype(np.float32) for k, a in arrays.items()})
        return arrays, metrics


def make_strategy(config: FlConfig, journal: RoundJournal) -> FedAvg:
    """The configured strategy with journalling attached."""
    common = dict(fraction_train=config.fraction_train, fraction_evaluate=config.fraction_train,
                  min_train_nodes=config.min_nodes, min_evaluate_nodes=config.min_nodes,
                  min_available_nodes=config.min_nodes)
    if config.strategy == "fedprox":
        strategy = JournalledFedProx(proximal_mu=config.proximal_mu, **common)
    elif config.strategy == "fedadam":
        strategy = JournalledFedAdam(eta=config.server_lr, eta_l=config.lr, **common)
    else:
        strategy = JournalledFedAvg(**common)
    strategy.journal = journal
    strategy.fail_on_client_error = config.fail_on_client_error
    strategy.num_rounds = config.num_server_rounds
    strategy.evaluate_every = config.evaluate_every
    return strategy


class PollingGrid:
    """A Grid whose send_and_receive polls for replies every ``interval`` s (Flower's waits 3 s).

    Everything else is delegated to the Grid the ServerApp was given.
    """

    def __init__(self, grid: Grid, interval: float, destinations: dict[str, int] | None = None) -> None:
        self._grid = grid
        self.interval = interval
        self.destinations = {} if destinations is None else destinations

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout: float | None = None):
        """Push the messages, then pull replies until all arrived or the timeout passed."""
        messages = list(messages)
        ids = list(self._grid.push_messages(messages))
        self.destinations.update({i: m.metadata.dst_node_id for i, m in zip(ids, messages)})
        pending = set(ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while pending and (deadline is None or time.monotonic() < deadline):
            got = list(self._grid.pull_messages(pending))
            replies.extend(got)
            pending -= {m.metadata.reply_to_message_id for m in got}
            if pending:
                time.sleep(self.interval)
        return replies


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the configured strategy for num-server-rounds and save the final global model."""
    config = FlConfig.from_run_config(context.run_config)
    out_dir = Path(config.out_dir or f"fl-output/run-{context.run_id}").expanduser()
    journal = RoundJournal(out_dir / METRICS_FILE, config, context.run_id)
    try:
        if not config.test_path or not Path(config.test_path).exists():
            raise FileNotFoundError(f"run config test-path={config.test_path!r} is not a file; pass the central "
                                    "test split (.npz with x_test, y_test) written by the kit")
        with np.load(config.test_path) as test:
            x_test, y_test = test["x_test"], test["y_test"]

        def central_evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            loss, accuracy = evaluate(record_to_params(arrays), x_test, y_test)
            journal.central(server_round, loss, accuracy)
            return MetricRecord({"loss": loss, "accuracy": accuracy})

        strategy = make_strategy(config, journal)
        initial = params_to_record(init_params(x_test.shape[1], config.hidden, 10, seed=config.seed))
        train_config = ConfigRecord({"local-epochs": config.local_epochs, "lr": config.lr,
                                     "batch-size": config.batch_size})
        result = strategy.start(grid=PollingGrid(grid, config.poll_interval, journal.destinations), initial_arrays=initial,
                                num_rounds=config.num_server_rounds, timeout=config.round_timeout,
                                train_config=train_config, evaluate_fn=central_evaluate)
        final = record_to_params(result.arrays if result.arrays is not None else initial)
        np.savez(out_dir / MODEL_FILE, **final)
        journal.finish("completed")
    except BaseException as exc:
        journal.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
