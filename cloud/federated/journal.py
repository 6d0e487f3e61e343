"""The round journal: what a federated run did, round by round, in its metrics file; and the strategy mixin that writes it.

The ServerApp rewrites ``fl-metrics.json`` in the run's out-dir after every event (per-device
training loss and held-out accuracy, central test accuracy, bytes sent, dropouts and client
errors), so the kit can print a line per round and fail loudly when clients fail, since
``flwr run`` itself exits 0 even then. While a phase waits for replies, its round's ``waiting``
entry says who answered (and how fast) and who has not, and the timeout in force::

    "waiting": {"train": {"timeout_s": 10.0, "expected": 3, "answered": 2, "elapsed_s": 4.1, "done": false,
                          "missing": [{"node_id": 8810, "partition_id": 2}],
                          "reply_s": {"5521": 1.4, "9013": 1.6}}}
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Message

from cloud.federated.config import CLIENT_ERROR_CODES, FederationError, FlConfig


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
        self._current: tuple[int, str] | None = None  # the (round, phase) whose messages went out last
        self.destinations: dict[str, int] = {}  # message id -> node id, filled by PollingGrid
        self.partitions: dict[int, int] = {}  # node id -> the partition id its replies report
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
                 "bytes_down": 0, "bytes_up": 0, "sampled": {}, "waiting": {}}
        self.data["rounds"].append(entry)
        return entry

    def sent(self, server_round: int, phase: str, messages: list[Message], arrays: ArrayRecord) -> None:
        """Record the messages of a phase going out (marks the round started)."""
        if phase == "train":
            self._round_start[server_round] = time.perf_counter()
        self._current = (server_round, phase)
        entry = self.round(server_round)
        entry["sampled"][phase] = [m.metadata.dst_node_id for m in messages]
        entry["bytes_down"] += record_bytes(arrays) * len(messages)
        self.save()

    def waiting(self, answered: dict[int, float], missing: list[int], timeout_s: float | None, elapsed_s: float,
                done: bool) -> None:
        """Record who answered the phase sent last (node id -> seconds) and who not yet, and the timeout used."""
        if self._current is None:
            return
        server_round, phase = self._current
        self.round(server_round)["waiting"][phase] = {
            "timeout_s": timeout_s, "expected": len(answered) + len(missing), "answered": len(answered),
            "missing": [{"node_id": n, "partition_id": self.partitions.get(n)} for n in missing],
            "reply_s": {str(n): round(s, 3) for n, s in answered.items()},
            "elapsed_s": round(elapsed_s, 3), "done": done,
        }
        self.save()

    def timeout_used(self, server_round: int, phase: str) -> float | None:
        """The timeout a round's phase waited under (None before it waited)."""
        return self.round(server_round)["waiting"].get(phase, {}).get("timeout_s")

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
            if row["partition_id"] >= 0:
                self.partitions[node] = row["partition_id"]
            if phase == "train":
                entry["bytes_up"] += record_bytes(next(iter(reply.content.array_records.values()), None))
            entry[phase].append(row)
        timeout = self.timeout_used(server_round, phase)
        for node in entry["sampled"].get(phase, []):
            if node not in answered:
                within = f"the round timeout of {timeout:.1f} s" if timeout is not None else "the round timeout"
                entry["dropouts"].append({"phase": phase, "node_id": node, "partition_id": self.partitions.get(node),
                                          "code": None, "reason": f"no reply within {within}"})
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
            timeout = self.journal.timeout_used(server_round, phase)
            waited = f" within {timeout:.1f} s" if timeout is not None else ""
            raise FederationError(
                f"round {server_round}: only {good} node(s) returned weights{waited}, fewer than min-nodes="
                f"{self.min_train_nodes}; start more SuperNodes, lower min-nodes or raise timeout-floor "
                "(later rounds) or round-timeout (the first round's cap)"
            )
