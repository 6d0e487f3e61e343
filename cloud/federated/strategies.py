"""The aggregation strategies a run can pick: Flower's FedAvg, FedProx and FedAdam, journalled, in one registry."""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx

from cloud.federated.config import FlConfig
from cloud.federated.journal import JournalMixin, RoundJournal
from edge.federated.client_app import params_to_record


class JournalledFedAvg(JournalMixin, FedAvg):
    """FedAvg: the new global model is the sample-weighted mean of the clients' models."""

    @classmethod
    def options(cls, config: FlConfig) -> dict[str, Any]:
        """Constructor arguments read from the run config beyond the common ones: none."""
        return {}


class JournalledFedProx(JournalMixin, FedProx):
    """FedProx: FedAvg on the server; clients add (mu/2)||w - w_global||^2 to their loss."""

    @classmethod
    def options(cls, config: FlConfig) -> dict[str, Any]:
        """The proximal term's weight mu."""
        return {"proximal_mu": config.proximal_mu}


class JournalledFedAdam(JournalMixin, FedAdam):
    """FedAdam: the averaged client update is a pseudo-gradient for an Adam step on the server."""

    @classmethod
    def options(cls, config: FlConfig) -> dict[str, Any]:
        """The server's Adam step size (server-lr) and the clients' one (lr)."""
        return {"eta": config.server_lr, "eta_l": config.lr}

    def aggregate_train(self, server_round, replies):
        """Adam step, then back to float32: Flower's step multiplies by a numpy float64 and widens the model."""
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None:
            arrays = params_to_record({k: a.numpy().astype(np.float32) for k, a in arrays.items()})
        return arrays, metrics


# To add a strategy, add it here (a JournalMixin + Flower strategy class with an ``options`` classmethod).
STRATEGIES = {"fedavg": JournalledFedAvg, "fedprox": JournalledFedProx, "fedadam": JournalledFedAdam}


def strategy_class(name: str) -> type[FedAvg]:
    """The registered strategy class for a run config's ``strategy``; ValueError naming the choices."""
    if name not in STRATEGIES:
        raise ValueError(f"run config strategy={name!r}; use one of {', '.join(STRATEGIES)} "
                         "(cloud/federated/strategies.py registers them)")
    return STRATEGIES[name]


def make_strategy(config: FlConfig, journal: RoundJournal) -> FedAvg:
    """The configured strategy with journalling attached."""
    cls = strategy_class(config.strategy)
    strategy = cls(fraction_train=config.fraction_train, fraction_evaluate=config.fraction_train,
                   min_train_nodes=config.min_nodes, min_evaluate_nodes=config.min_nodes,
                   min_available_nodes=config.min_nodes, **cls.options(config))
    strategy.journal = journal
    strategy.fail_on_client_error = config.fail_on_client_error
    strategy.num_rounds = config.num_server_rounds
    strategy.evaluate_every = config.evaluate_every
    return strategy
