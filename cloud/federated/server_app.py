"""The Flower ServerApp of lab 08: the configured strategy over the devices' numpy MLP, journalled round by round.

Runs inside the SuperLink's ServerApp process (``flwr run cloud/federated/fedapp`` submits it).
The settings are ``config.FlConfig``, the strategy comes from ``strategies.STRATEGIES``, every
round is written to ``journal.RoundJournal`` and replies are polled by ``grid.PollingGrid``, which
waits as long as ``timeouts.RoundTimeouts`` says (the cap, then a margin over the slowest reply).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from cloud.federated.config import METRICS_FILE, MODEL_FILE, FlConfig
from cloud.federated.grid import PollingGrid
from cloud.federated.journal import RoundJournal
from cloud.federated.strategies import make_strategy
from cloud.federated.timeouts import RoundTimeouts
from edge.federated.client_app import params_to_record, record_to_params
from edge.federated.mlp import evaluate, init_params

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
            """Score the global model on the central test split and journal it."""
            loss, accuracy = evaluate(record_to_params(arrays), x_test, y_test)
            journal.central(server_round, loss, accuracy)
            return MetricRecord({"loss": loss, "accuracy": accuracy})

        strategy = make_strategy(config, journal)
        initial = params_to_record(init_params(x_test.shape[1], config.hidden, 10, seed=config.seed))
        train_config = ConfigRecord({"local-epochs": config.local_epochs, "lr": config.lr,
                                     "batch-size": config.batch_size})
        grid = PollingGrid(grid, config.poll_interval, journal.destinations, timeouts=RoundTimeouts.from_config(config),
                           watcher=journal)
        result = strategy.start(grid=grid, initial_arrays=initial,
                                num_rounds=config.num_server_rounds, timeout=config.round_timeout,
                                train_config=train_config, evaluate_fn=central_evaluate)
        final = record_to_params(result.arrays if result.arrays is not None else initial)
        np.savez(out_dir / MODEL_FILE, **final)
        journal.finish("completed")
    except BaseException as exc:
        journal.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
