"""The Flower ClientApp a device runs: local numpy SGD on its own data partition, then evaluation.

The SuperNode starts one ClientApp process per message, so this module keeps its imports to
flwr, numpy and ``edge.federated.mlp`` (no torch, no cloud). Where the data lives:

- node config (fixed per device, ``flower-supernode --node-config``):
  ``partition-id`` and ``data-dir``, the folder holding this device's partitions;
- run config (per run, ``flwr run --run-config``): ``partition-set``, the subfolder to read,
  so one device can hold its data as several alternative partitionings (``iid``, ``dirichlet-0.1``).

The device file is ``{data-dir}/{partition-set}/device-{partition-id}.npz`` with
``x_train, y_train, x_val, y_val`` (flat float32 digits in [0, 1] and int64 labels).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edge.federated.mlp import PARAM_NAMES, Params, check_params, evaluate, train_sgd

app = ClientApp()


def partition_path(node_config: dict, run_config: dict) -> Path:
    """The .npz file holding this device's data, from node and run config."""
    for key in ("partition-id", "data-dir"):
        if key not in node_config:
            raise KeyError(
                f"SuperNode node config lacks {key!r} (has {sorted(node_config)}); start it with "
                "--node-config 'partition-id=0 data-dir=\"/path/to/partitions\"'"
            )
    return (Path(str(node_config["data-dir"])).expanduser() / str(run_config.get("partition-set", "iid"))
            / f"device-{int(node_config['partition-id'])}.npz")


def load_partition(node_config: dict, run_config: dict) -> dict[str, np.ndarray]:
    """This device's train and held-out arrays; FileNotFoundError says which file and how to make it."""
    path = partition_path(node_config, run_config)
    if not path.exists():
        raise FileNotFoundError(
            f"device {node_config.get('partition-id')}: no partition file at {path}; "
            "write the partitions with `python -m cloud.federated.partition --out DATA_DIR` on the cloud host "
            "and copy them here, or fix data-dir / partition-set"
        )
    with np.load(path) as data:
        return {k: data[k] for k in ("x_train", "y_train", "x_val", "y_val")}


def record_to_params(record: ArrayRecord) -> Params:
    """The MLP parameters carried in an ArrayRecord (keys w1, b1, w2, b2)."""
    params = {k: record[k].numpy() for k in PARAM_NAMES if k in record}
    check_params(params)
    return params


def params_to_record(params: Params) -> ArrayRecord:
    """An ArrayRecord holding the MLP parameters in PARAM_NAMES order."""
    return ArrayRecord(array_dict={k: Array(np.ascontiguousarray(params[k])) for k in PARAM_NAMES})


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on this device's partition and send the new weights back."""
    start = time.perf_counter()
    data = load_partition(context.node_config, context.run_config)
    config = msg.content["config"]
    params = record_to_params(msg.content["arrays"])
    # How the global model this device received does on its own held-out data (before training on it):
    # one message per round then carries both the update and the per-device evaluation.
    _, received_accuracy = evaluate(params, data["x_val"], data["y_val"])
    server_round = int(config["server-round"])
    partition_id = int(context.node_config["partition-id"])
    seed = int(context.run_config.get("seed", 0)) * 1000 + server_round * 100 + partition_id
    new, loss = train_sgd(params, data["x_train"], data["y_train"],
                          epochs=int(config.get("local-epochs", 1)), lr=float(config.get("lr", 0.1)),
                          batch_size=int(config.get("batch-size", 32)), seed=seed,
                          mu=float(config.get("proximal-mu", 0.0)))
    metrics = MetricRecord({
        "num-examples": len(data["y_train"]),
        "train-loss": loss,
        "received-accuracy": received_accuracy,
        "partition-id": partition_id,
        "train-seconds": time.perf_counter() - start,
    })
    return Message(content=RecordDict({"arrays": params_to_record(new), "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate_on_device(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on this device's held-out data."""
    data = load_partition(context.node_config, context.run_config)
    params = record_to_params(msg.content["arrays"])
    loss, accuracy = evaluate(params, data["x_val"], data["y_val"])
    metrics = MetricRecord({
        "num-examples": len(data["y_val"]),
        "eval-loss": loss,
        "eval-accuracy": accuracy,
        "partition-id": int(context.node_config["partition-id"]),
    })
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
