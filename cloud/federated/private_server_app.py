"""The private ServerApp: FedAvg over plaintext weights, DP-trained weights, or CKKS ciphertexts it cannot read.

Runs inside the SuperLink's ServerApp process (``flwr run cloud/federated/fedapp_private``). One loop
serves all four privacy modes of ``edge.federated.private_client_app``:

- plaintext (``none``, ``dp``): the new global model is Σ_k (n_k/n)·w_k; the server evaluates
  it on the central test split, as lab 08 does;
- encrypted (``he``, ``dp+he``): the server loads the clients' public context (no secret key,
  checked), computes Σ_k (n_k/n)·Enc(w_k) on ciphertexts and sends the encrypted aggregate back;
  the next round's clients decrypt it. The server cannot evaluate a model it cannot read, so
  the accuracy comes from the clients (each scores the model it received on its held-out data).

A device that refuses to train because its privacy budget would be exceeded fails that round
(Flower error "ClientApp raised"); the journal records it under ``refusals`` and the run goes on
with the others, or stops early once fewer than ``min-nodes`` train. Any other client error
fails the run loudly, as in lab 08.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from cloud.federated.config import METRICS_FILE, MODEL_FILE, FederationError, FlConfig
from cloud.federated.grid import PollingGrid
from cloud.federated.journal import RoundJournal
from cloud.federated.timeouts import RoundTimeouts
from cloud.private.he import assert_cannot_decrypt, weighted_sum
from cloud.private.he import server_context as load_server_context  # TenSEAL itself loads only when first used
from edge.federated.client_app import params_to_record, record_to_params
from edge.federated.mlp import evaluate, init_params, weighted_average
from edge.federated.private_client_app import PRIVACY_MODES, decode_ciphertexts, encode_ciphertexts

APP_DIR = Path(__file__).resolve().parent / "fedapp_private"
# What the private ClientApp imports every round (DP-SGD and CKKS): warm SuperNodes import it once at start-up.
CLIENT_PRELOAD = ("torch", "opacus", "tenseal")
ENCRYPTED_MODEL_FILE = "global_model.ckks.npz"  # the final aggregate, still encrypted: only clients can read it
REFUSAL_MARK = "PrivacyBudgetExceeded"


@dataclass(frozen=True)
class PrivateFlConfig(FlConfig):
    """Lab 08's run settings plus the privacy ones; defaults equal cloud/federated/fedapp_private/pyproject.toml.

    Unused here (kept so one config type serves both apps): fraction-train, evaluate-every,
    proximal-mu and server-lr. Every connected device is asked every round, and every device
    scores the final model.
    """

    privacy: str = "none"
    noise_multiplier: float = 1.0
    max_grad_norm: float = 2.0
    dp_budgets: str = "8"  # ε budget: one for all devices, or one per partition id ("8,8,4.5")
    dp_delta: float = 1e-5
    he_preset: str = "8192"
    he_context_path: str = ""  # the clients' public CKKS context (no secret key), put here out of band
    initial_model_path: str = ""  # start from these weights (.npz: w1, b1, w2, b2), e.g. the deployed model

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> PrivateFlConfig:
        """Read and check the run config; ValueError on a bad privacy mode or a missing HE context."""
        config = super().from_run_config(run_config)
        if config.privacy not in PRIVACY_MODES:
            raise ValueError(f"run config privacy={config.privacy!r}; use one of {', '.join(PRIVACY_MODES)}")
        if config.strategy != "fedavg":
            raise ValueError(f"the private app aggregates with FedAvg only, got strategy={config.strategy!r}")
        if config.encrypted and not Path(config.he_context_path).is_file():
            raise FileNotFoundError(f"privacy={config.privacy!r} needs he-context-path, the clients' public CKKS "
                                    f"context; {config.he_context_path!r} is not a file (edge.federated.private_client_app.share_keys)")
        return config

    @property
    def encrypted(self) -> bool:
        """True when updates travel as ciphertexts."""
        return "he" in self.privacy


def is_refusal(error: dict[str, Any]) -> bool:
    """True for a client error that is a privacy-budget refusal, not a crash."""
    return REFUSAL_MARK in error.get("reason", "")


def plain_fedavg(updates: list[dict[str, np.ndarray]], num_examples: list[int]) -> dict[str, np.ndarray]:
    """FedAvg on plaintext weights: Σ_k (n_k / n) w_k, kept float32."""
    return {k: v.astype(np.float32) for k, v in weighted_average(updates, [float(n) for n in num_examples]).items()}


def encrypted_fedavg(context, updates: list[list[bytes]], num_examples: list[int]) -> list[bytes]:
    """FedAvg on ciphertexts: Σ_k (n_k / n) Enc(w_k), computed without the secret key."""
    total = float(sum(num_examples))
    return weighted_sum(context, updates, [n / total for n in num_examples])


class PrivateJournal(RoundJournal):
    """Lab 08's round journal plus refusals, early stops and rounds closed without central evaluation."""

    def sent(self, server_round: int, phase: str, messages: list[Message], arrays: ArrayRecord) -> None:
        """Journal outgoing messages; the final evaluation's bytes go to ``bytes_eval``, not the round's traffic."""
        entry = self.round(server_round)
        before = entry["bytes_down"]
        super().sent(server_round, phase, messages, arrays)
        if phase == "evaluate":
            entry["bytes_eval"], entry["bytes_down"] = entry["bytes_down"] - before, before
            self.save()

    def take_refusals(self, server_round: int) -> list[dict[str, Any]]:
        """Move budget refusals from a round's errors to its ``refusals`` list; return them."""
        entry = self.round(server_round)
        refusals = [e for e in entry["errors"] if is_refusal(e)]
        entry["errors"] = [e for e in entry["errors"] if not is_refusal(e)]
        entry["refusals"] = entry.get("refusals", []) + refusals
        self.save()
        return refusals

    def close(self, server_round: int, central: dict[str, float] | None, **extra: Any) -> None:
        """Close a round: central metrics (None when the server cannot read the model), timing, extras."""
        entry = self.round(server_round)
        entry.update(central=central, seconds=time.perf_counter() - self._round_start.get(server_round,
                                                                                           time.perf_counter()),
                     **extra)
        self.save()


def wait_for_nodes(grid: Grid, count: int, timeout: float) -> list[int]:
    """Node ids once at least ``count`` SuperNodes are connected; FederationError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise FederationError(f"only {len(nodes)} SuperNode(s) connected after {timeout:.0f} s, "
                                  f"min-nodes={count}; start more SuperNodes or lower min-nodes")
        time.sleep(0.2)


def send(grid: PollingGrid, journal: PrivateJournal, server_round: int, phase: str, nodes: list[int],
         arrays: ArrayRecord, config: ConfigRecord, timeout: float) -> list[Message]:
    """Send one phase's messages to the nodes, journal them, and return the replies."""
    messages = [Message(content=RecordDict({"arrays": arrays, "config": config}), dst_node_id=node,
                        message_type=phase, group_id=str(server_round)) for node in nodes]
    journal.sent(server_round, phase, messages, arrays)
    return list(grid.send_and_receive(messages, timeout=timeout))


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """FedAvg for num-server-rounds in the configured privacy mode; save the final model (encrypted in HE modes)."""
    config = PrivateFlConfig.from_run_config(context.run_config)
    out_dir = Path(config.out_dir or f"fl-output/run-{context.run_id}").expanduser()
    journal = PrivateJournal(out_dir / METRICS_FILE, config, context.run_id)
    grid = PollingGrid(grid, config.poll_interval, journal.destinations, timeouts=RoundTimeouts.from_config(config),
                       watcher=journal)
    try:
        with np.load(config.test_path) as test:
            x_test, y_test = test["x_test"], test["y_test"]
        server_context = None
        if config.encrypted:
            # Refuses (SecretKeyOnServer) if the clients sent a context with its secret key.
            server_context = load_server_context(Path(config.he_context_path).read_bytes())
            journal.data["he_public_context_bytes"] = Path(config.he_context_path).stat().st_size
        if config.initial_model_path:  # fine-tune what the devices run (lab 12) rather than start from random
            with np.load(config.initial_model_path) as saved:
                initial = {k: saved[k].astype(np.float32) for k in ("w1", "b1", "w2", "b2")}
        else:
            initial = init_params(x_test.shape[1], config.hidden, 10, seed=config.seed)
        journal.central(0, *evaluate(initial, x_test, y_test))
        # Round 1 sends the (public) initial weights in the clear; from then on, in HE
        # modes, the global model exists only as the encrypted aggregate.
        global_arrays = params_to_record(initial)
        nodes = wait_for_nodes(grid, config.min_nodes, config.round_timeout)
        rounds_done = 0
        for server_round in range(1, config.num_server_rounds + 1):
            train_config = ConfigRecord({"server-round": server_round, "local-epochs": config.local_epochs,
                                         "lr": config.lr, "batch-size": config.batch_size})
            replies = send(grid, journal, server_round, "train", nodes, global_arrays, train_config,
                           config.round_timeout)
            errors = journal.replies(server_round, "train", replies)
            refusals = journal.take_refusals(server_round)
            crashes = [e for e in errors if not is_refusal(e)]
            if crashes and config.fail_on_client_error:
                detail = "; ".join(f"node {e['node_id']}: {e['reason']}" for e in crashes)
                raise FederationError(f"round {server_round} train: {len(crashes)} client(s) failed: {detail}")
            good = [r for r in replies if not r.has_error()]
            if len(good) < config.min_nodes:
                journal.data["stopped"] = (f"round {server_round}: {len(good)} device(s) trained, fewer than "
                                           f"min-nodes={config.min_nodes} ({len(refusals)} refused: budget spent)")
                journal.close(server_round, None, aggregated=False)
                break
            num_examples = [int(r.content["metrics"]["num-examples"]) for r in good]
            aggregate_start = time.perf_counter()
            if config.encrypted:
                updates = [decode_ciphertexts(r.content["arrays"]) for r in good]
                aggregate = encrypted_fedavg(server_context, updates, num_examples)
                global_arrays = encode_ciphertexts(aggregate)
                central = None
                if server_round == 1:
                    journal.data["server_decrypt_attempt"] = assert_cannot_decrypt(server_context, aggregate[0])
            else:
                new = plain_fedavg([record_to_params(r.content["arrays"]) for r in good], num_examples)
                global_arrays = params_to_record(new)
                loss, accuracy = evaluate(new, x_test, y_test)
                central = {"loss": loss, "accuracy": accuracy}
            journal.close(server_round, central, aggregated=True,
                          aggregate_seconds=time.perf_counter() - aggregate_start)
            rounds_done = server_round
        # Every device, including those that refused to train, scores the final model on its held-out data.
        last = server_round
        replies = send(grid, journal, last, "evaluate", nodes, global_arrays,
                       ConfigRecord({"server-round": last}), config.round_timeout)
        errors = journal.replies(last, "evaluate", replies)
        if errors and config.fail_on_client_error:
            raise FederationError("final evaluation: " + "; ".join(f"node {e['node_id']}: {e['reason']}" for e in errors))
        if config.encrypted:
            np.savez(out_dir / ENCRYPTED_MODEL_FILE, **{k: a.numpy() for k, a in global_arrays.items()})
        else:
            np.savez(out_dir / MODEL_FILE, **record_to_params(global_arrays))
        journal.data["rounds_aggregated"] = rounds_done
        journal.finish("completed")
    except BaseException as exc:
        journal.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
