"""A federated run's settings: the run config read into ``FlConfig``, the files a run leaves, and its errors."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

METRICS_FILE = "fl-metrics.json"  # the round journal, in the run's out-dir
MODEL_FILE = "global_model.npz"  # the final global model, in the run's out-dir
# Error codes of flwr.common.constant.ErrorCode: 1 load failed, 2 ClientApp raised, 8 ClientApp crashed.
CLIENT_ERROR_CODES = {1: "could not load ClientApp", 2: "ClientApp raised", 8: "ClientApp crashed"}


class FederationError(RuntimeError):
    """A federated run failed: clients raised, too few answered, or the run did not finish."""


@dataclass(frozen=True)
class FlConfig:
    """The run settings; the defaults here are the ones in cloud/federated/fedapp/pyproject.toml."""

    num_server_rounds: int = 3
    strategy: str = "fedavg"  # a key of cloud.federated.strategies.STRATEGIES (checked by make_strategy)
    fraction_train: float = 1.0
    min_nodes: int = 2
    round_timeout: float = 120.0  # the first round waits up to this; later ones margin x the slowest reply
    timeout_margin: float = 3.0  # later rounds wait this many times the slowest reply measured so far ...
    timeout_floor: float = 10.0  # ... but never less than this (cloud.federated.timeouts.RoundTimeouts)
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
        """Read the hyphenated run-config keys; ValueError on a bad count."""
        values = {f.name: run_config[f.name.replace("_", "-")] for f in fields(cls)
                  if f.name.replace("_", "-") in run_config}
        config = cls(**values)
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
