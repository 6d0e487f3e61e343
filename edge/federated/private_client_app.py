"""The private Flower ClientApp: lab 08's device training with DP-SGD, encrypted updates, or both.

The run config's ``privacy`` says what the device does each round:

- ``none``: numpy SGD, plaintext weights (lab 08's client, for a like-for-like baseline);
- ``dp``: DP-SGD with Opacus on a torch copy of the MLP, on top of this device's lifelong
  privacy ledger (``edge.private.dp``): ε accumulates over every round it takes part in, and it
  refuses (raises ``PrivacyBudgetExceeded``, which the server sees as this node failing) once
  the next round would pass its budget;
- ``he``: numpy SGD, then the new weights travel encrypted (CKKS, packed into full vectors); the
  server sums ciphertexts and sends the encrypted aggregate back, which this device decrypts
  with the secret key the clients share;
- ``dp+he``: both.

Where a device keeps its state (ledger, shared key): ``{data-dir}/{partition-set}/state-{id}/``
beside its data (the ledger accounts for that data), or the node config's ``state-dir``.
torch/opacus load only when DP is on, tenseal only when HE is on.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edge.federated.client_app import load_partition, params_to_record, record_to_params
from edge.federated.mlp import PARAM_NAMES, Params, evaluate, init_params, train_sgd
from edge.private.dp import PrivacyLedger, mlp_to_torch, torch_to_mlp, train_round
from edge.private.he import PRESETS, KeyHolder, flatten, unflatten

PRIVACY_MODES = ("none", "dp", "he", "dp+he")
SHARED_KEY_FILE = "he-shared-secret.bin"  # the clients' common CKKS context, secret key included
CIPHERTEXT_PREFIX = "ct-"

app = ClientApp()


def privacy_mode(run_config: dict) -> str:
    """The run's privacy mode; ValueError naming the allowed ones."""
    mode = str(run_config.get("privacy", "none"))
    if mode not in PRIVACY_MODES:
        raise ValueError(f"run config privacy={mode!r}; use one of {', '.join(PRIVACY_MODES)}")
    return mode


def state_dir(node_config: dict, run_config: dict) -> Path:
    """This device's state folder: node config ``state-dir``, else ``state-{id}`` beside its partition file."""
    if "state-dir" in node_config:
        return Path(str(node_config["state-dir"])).expanduser()
    data_dir = Path(str(node_config["data-dir"])).expanduser()
    return data_dir / str(run_config.get("partition-set", "iid")) / f"state-{int(node_config['partition-id'])}"


def device_budget(budgets: str, partition_id: int) -> float:
    """This device's ε budget from ``dp-budgets``: one number for all, or one per partition id ('8,8,4.5')."""
    values = [float(v) for v in str(budgets).split(",") if v.strip()]
    if len(values) == 1:
        return values[0]
    if partition_id >= len(values):
        raise ValueError(f"dp-budgets={budgets!r} names {len(values)} devices, but this is partition "
                         f"{partition_id}; give one budget for all or one per device")
    return values[partition_id]


def encode_ciphertexts(blobs: list[bytes]) -> ArrayRecord:
    """Serialized ciphertexts as an ArrayRecord of byte arrays (ct-000, ct-001, ...) for a Flower message."""
    return ArrayRecord(array_dict={f"{CIPHERTEXT_PREFIX}{i:03d}": Array(np.frombuffer(b, dtype=np.uint8))
                                   for i, b in enumerate(blobs)})


def decode_ciphertexts(record: ArrayRecord) -> list[bytes]:
    """The serialized ciphertexts carried by encode_ciphertexts, in order."""
    return [record[k].numpy().tobytes() for k in sorted(record) if k.startswith(CIPHERTEXT_PREFIX)]


def is_encrypted(record: ArrayRecord) -> bool:
    """True when a record carries ciphertexts rather than plaintext weights."""
    return any(k.startswith(CIPHERTEXT_PREFIX) for k in record)


def share_keys(state_dirs: list[Path], server_dir: Path, preset: str = "8192") -> dict[str, Path | int]:
    """The key-holding device makes one CKKS context; its secret goes to every device, only the public part to the server.

    Out of band, as a real deployment would copy it over a secure channel (scp to each device);
    the server folder gets ``he-public-context.bin`` without the secret key. Returns paths and sizes.
    """
    holder = KeyHolder.create(preset)
    secret, public = holder.shared_secret(), holder.public_context()
    for folder in state_dirs:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / SHARED_KEY_FILE).write_bytes(secret)
    server_dir = Path(server_dir)
    server_dir.mkdir(parents=True, exist_ok=True)
    public_path = server_dir / "he-public-context.bin"
    public_path.write_bytes(public)
    return {"public_context": public_path, "public_bytes": len(public), "secret_bytes": len(secret)}


def load_key_holder(folder: Path, preset: str = "8192"):
    """This device's KeyHolder from the shared secret in its state folder; FileNotFoundError says how to get one."""
    path = Path(folder) / SHARED_KEY_FILE
    if not path.exists():
        raise FileNotFoundError(f"no shared CKKS key at {path}; the key-holding device hands it to every client "
                                "out of band (edge.federated.private_client_app.share_keys), never to the server")
    return KeyHolder.from_shared_secret(path.read_bytes(), PRESETS[preset])


def received_model(record: ArrayRecord, run_config: dict, features: int, folder: Path) -> Params:
    """The global model from a server message: plaintext weights, or the encrypted aggregate decrypted here."""
    if not is_encrypted(record):
        return record_to_params(record)
    like = init_params(features, int(run_config.get("hidden", 32)), 10, seed=0)  # shapes and dtypes only
    holder = load_key_holder(folder, str(run_config.get("he-preset", "8192")))

    flat = holder.decrypt(decode_ciphertexts(record), len(flatten(like, PARAM_NAMES)))
    return unflatten(flat, like, PARAM_NAMES)


def train_dp(params: Params, data: dict, run_config: dict, config, partition_id: int, folder: Path,
             server_round: int, seed: int) -> tuple[Params, float, dict]:
    """One DP-SGD round on this device's ledger; PrivacyBudgetExceeded before training if it would overrun."""
    ledger = PrivacyLedger.open(folder, f"device-{partition_id}",
                                budget=device_budget(run_config.get("dp-budgets", "8"), partition_id),
                                delta=float(run_config.get("dp-delta", 1e-5)))
    model = mlp_to_torch(params)
    report = train_round(model, data["x_train"], data["y_train"], ledger,
                         noise_multiplier=float(run_config.get("noise-multiplier", 1.0)),
                         max_grad_norm=float(run_config.get("max-grad-norm", 1.0)),
                         batch_size=int(config.get("batch-size", 32)), epochs=int(config.get("local-epochs", 1)),
                         lr=float(config.get("lr", 0.1)), seed=seed, round_id=server_round)
    return torch_to_mlp(model), report.loss, {"epsilon": report.epsilon_after, "epsilon-rdp": report.epsilon_rdp_after,
                                              "dp-budget": ledger.budget, "dp-steps": report.steps}


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Receive the global model (decrypting it in HE mode), train (with DP-SGD in DP mode), send weights (encrypted in HE mode)."""
    start = time.perf_counter()
    run_config, node_config = context.run_config, context.node_config
    mode = privacy_mode(run_config)
    data = load_partition(node_config, run_config)
    folder = state_dir(node_config, run_config)
    config = msg.content["config"]
    server_round = int(config["server-round"])
    partition_id = int(node_config["partition-id"])
    params = received_model(msg.content["arrays"], run_config, data["x_train"].shape[1], folder)
    # The global model this device received, scored on its own held-out data: in HE mode the only
    # place anyone can evaluate it, since the server never sees it in the clear.
    _, received_accuracy = evaluate(params, data["x_val"], data["y_val"])
    seed = int(run_config.get("seed", 0)) * 1000 + server_round * 100 + partition_id
    extra: dict = {}
    if mode in ("dp", "dp+he"):
        new, loss, extra = train_dp(params, data, run_config, config, partition_id, folder, server_round, seed)
    else:
        new, loss = train_sgd(params, data["x_train"], data["y_train"], epochs=int(config.get("local-epochs", 1)),
                              lr=float(config.get("lr", 0.1)), batch_size=int(config.get("batch-size", 32)), seed=seed)
    train_seconds = time.perf_counter() - start
    if mode in ("he", "dp+he"):

        encrypt_start = time.perf_counter()
        holder = load_key_holder(folder, str(run_config.get("he-preset", "8192")))
        arrays = encode_ciphertexts(holder.encrypt(flatten(new, PARAM_NAMES)))
        extra["encrypt-seconds"] = time.perf_counter() - encrypt_start
    else:
        arrays = params_to_record(new)
    metrics = MetricRecord({"num-examples": len(data["y_train"]), "train-loss": loss,
                            "received-accuracy": received_accuracy, "partition-id": partition_id,
                            "train-seconds": train_seconds, **extra})
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


@app.evaluate()
def evaluate_on_device(msg: Message, context: Context) -> Message:
    """Score the final global model (decrypted here in HE modes) on this device's held-out data."""
    run_config, node_config = context.run_config, context.node_config
    privacy_mode(run_config)
    data = load_partition(node_config, run_config)
    folder = state_dir(node_config, run_config)
    partition_id = int(node_config["partition-id"])
    params = received_model(msg.content["arrays"], run_config, data["x_val"].shape[1], folder)
    loss, accuracy = evaluate(params, data["x_val"], data["y_val"])
    metrics = MetricRecord({"num-examples": len(data["y_val"]), "eval-loss": loss, "eval-accuracy": accuracy,
                            "partition-id": partition_id})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
