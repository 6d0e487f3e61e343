"""Lab 11: private federated learning: client-side DP, encrypted aggregation, and both, against plain FedAvg."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np

from cloud.federated.partition import write_digits_federation
from cloud.federated.results import private_round_line, summarize_private
from cloud.labkit.milestones import Milestones
from edge.federated.mlp import PARAM_NAMES, init_params
from edge.private.dp import PrivacyLedger
from edge.private.he import flatten, unflatten

# Imported inside the functions that use them, to keep this module quick to import: cloud.federated.federation, cloud.federated.private_server_app, edge.federated.private_client_app, matplotlib.

TITLE = "Private federated learning: DP-SGD on each device, encrypted FedAvg, and both"
DEFAULTS = {
    "devices": 3,
    "rounds": 5,
    "local_epochs": 5,  # plain and HE clients: lab 08's numpy SGD
    "lr": 0.1,
    "batch_size": 16,
    "dp_epochs": 2,  # DP clients: fewer, larger, faster steps (each step spends ε; noise per step is σC/B)
    "dp_lr": 1.0,
    "dp_batch_size": 32,
    "hidden": 32,
    "noise_multiplier": 1.0,  # σ of DP-SGD on every device
    "max_grad_norm": 2.0,  # per-sample clipping bound C
    "budget": 8.0,  # ε each device will ever spend (δ below)
    "strict_budget": 5.0,  # the last device's smaller budget: it refuses once a round would pass it
    "delta": 1e-5,
    "he_preset": "8192",  # CKKS N=8192, primes [60,40,60], scale 2^40
    "together": False,  # run the four settings side by side (faster; per-round times then share the CPU)
    "cap_s": 1800.0,  # seconds all four runs may take before the lab fails naming the milestone it waited for
    "seed": 0,
}
QUICK = {"rounds": 2, "strict_budget": 4.0, "together": True}
SETTINGS = ("plain", "dp", "he", "dp+he")


def run(ctx) -> dict:
    """Partition, hand out the shared CKKS key, run the four settings on real SuperNodes, compare."""
    from cloud.federated.federation import Federation
    from cloud.federated.private_server_app import APP_DIR, CLIENT_PRELOAD, PrivateFlConfig
    from edge.federated.private_client_app import share_keys

    a = ctx.args
    devices, rounds = a["devices"], a["rounds"]
    if devices < 2:
        raise ValueError(f"devices={devices}: the budget refusal needs at least 2 devices, e.g. devices=3")
    budgets = ",".join(f"{a['budget']:g}" for _ in range(devices - 1)) + f",{a['strict_budget']:g}"

    ctx.step(f"1. Partition the digits IID across {devices} devices; one copy of the data per setting")
    data_dir = ctx.run.path / "fl-data"
    _, test_path = write_digits_federation(data_dir, devices, [("iid", None)], ctx.seed)
    sets = {name: f"iid-{name.replace('+', '-')}" for name in SETTINGS}
    for folder in sets.values():  # four alternative worlds: each private run keeps its own ledgers
        shutil.copytree(data_dir / "iid", data_dir / folder)
    ctx.console.print(f"device files under {data_dir}/<set>/device-<i>.npz; each device's state (privacy "
                      "ledger, shared key) in <set>/state-<i>/ beside its data")

    ctx.step("2. Key holder (device 0) makes the CKKS keys; the secret goes to the devices, the public part to the server")
    server_dir = ctx.run.path / "server"
    keys = {}
    for name in ("he", "dp+he"):
        keys[name] = share_keys([data_dir / sets[name] / f"state-{i}" for i in range(devices)],
                                server_dir / sets[name], a["he_preset"])
    ctx.console.print(f"shared secret context {keys['he']['secret_bytes']:,} bytes -> {devices} devices' state folders "
                      f"(out of band); public context {keys['he']['public_bytes']:,} bytes -> {server_dir}")

    # Every device answers every round here (a budget refusal is an answer too), so a timeout could only drop a
    # slow device and change the numbers the four settings are compared on. Side by side (together=1) the four runs
    # share the SuperNodes, and a round's messages may queue behind another run's HE work: in one container run
    # dp's round 2 waited behind he and dp+he for over 60 s after a 20 s round 1. So every round, not only the
    # first, waits up to 300 s (floor = cap); it costs nothing when every device answers, which they all do.
    # 300 s, not 120: four cold runs side by side on a busy 2-core machine took 80 s for one reply.
    base = PrivateFlConfig(num_server_rounds=rounds, min_nodes=devices - 1, timeout_floor=300.0, round_timeout=300.0,
                           local_epochs=a["local_epochs"], lr=a["lr"], batch_size=a["batch_size"], hidden=a["hidden"],
                           seed=ctx.seed, test_path=str(test_path),
                           noise_multiplier=a["noise_multiplier"], max_grad_norm=a["max_grad_norm"],
                           dp_budgets=budgets, dp_delta=a["delta"], he_preset=a["he_preset"])
    dp_training = dict(local_epochs=a["dp_epochs"], lr=a["dp_lr"], batch_size=a["dp_batch_size"])
    configs = {name: replace(base, privacy="none" if name == "plain" else name, partition_set=sets[name],
                             he_context_path=str(keys[name]["public_context"]) if name in keys else "",
                             **(dp_training if "dp" in name else {}))
               for name in SETTINGS}

    with ctx.stack(services=("superlink",)) as stack:
        ctx.step(f"3. Start {devices} SuperNodes against the SuperLink at {stack.superlink_address}")
        federation = Federation(stack.superlink_address, ctx.run.path / "federation", devices, data_dir,
                                console=ctx.console, health_timeout_s=ctx.settings.health_timeout_s * 4,
                                app_dir=APP_DIR, preload=CLIENT_PRELOAD)
        with federation:
            ctx.console.print(f"{devices} SuperNodes online, pids {federation.pids()}; budgets ε {budgets} "
                              f"(δ={a['delta']:g}), σ={a['noise_multiplier']}, C={a['max_grad_norm']}")
            runs = {name: (config, ctx.run.path / "runs" / name.replace("+", "-")) for name, config in configs.items()}
            line = lambda name, entry: ctx.console.print(private_round_line(name, entry, rounds))  # noqa: E731
            # Every round's replies are a milestone; the four runs share one cap, however slow the machine.
            milestones = Milestones(a["cap_s"], progress=ctx.console.print, progress_every_s=10)
            if a["together"]:
                ctx.step(f"4. Four federated runs side by side, {rounds} rounds each: {', '.join(SETTINGS)}")
                results = federation.run_many(runs, on_round=line, milestones=milestones)
            else:
                ctx.step(f"4. Four federated runs one after another, {rounds} rounds each: {', '.join(SETTINGS)}")
                results = {name: federation.run(config, out, on_round=lambda e, n=name: line(n, e),
                                                milestones=milestones, label=f"{name}: ")
                           for name, (config, out) in runs.items()}
            supernode_pids = federation.pids()

    ctx.step("5. Device 0 (a key holder) decrypts the final encrypted models; compare with plain FedAvg")
    with np.load(test_path) as test:
        x_test, y_test = test["x_test"], test["y_test"]
    finals = {name: _final_model(results[name], data_dir / sets[name] / "state-0", x_test.shape[1], a)
              for name in SETTINGS}
    rows, summaries = [], {}
    for name in SETTINGS:
        summaries[name] = summarize_private(results[name], finals[name], x_test, y_test, devices)
        if "dp" in name:  # ε from each device's own ledger, the accounting that decides refusals
            summaries[name]["epsilon"] = _ledger_epsilons(data_dir / sets[name], devices, configs[name])
        s = summaries[name]
        rows.append([name, s["test_accuracy"], s["held_out_accuracy"],
                     " ".join(f"{e:.2f}" if e is not None else "-" for e in s["epsilon"]),
                     s["refusals"] or "-", f"{s['bytes_per_round'] / 1e3:,.0f}", s["seconds_per_round"]])
    he_diff = max(float(np.max(np.abs(finals["he"][k] - finals["plain"][k]))) for k in finals["plain"])
    ctx.table(f"lab-11: {devices} devices, {rounds} rounds, ε budgets {budgets} (δ={a['delta']:g})",
              ["setting", "test acc", "devices' acc", "ε per device", "refused (round:device)", "KB/round",
               "s/round"], rows)
    ctx.console.print(f"test acc: final global model on the central test split (HE: decrypted by device 0; the server "
                      f"cannot). HE FedAvg vs plain FedAvg final weights: max |diff| = {he_diff:.2e}")
    for name, s in summaries.items():
        if s["stopped"]:
            ctx.console.print(f"[yellow]{name} stopped early: {s['stopped']}[/]")
    decrypt_attempt = results["he"].journal.get("server_decrypt_attempt", "")
    ctx.console.print(f"the server tried to decrypt the round-1 aggregate with its context: ValueError: {decrypt_attempt}")
    ctx.save_plot(_plot(summaries, [float(b) for b in budgets.split(",")]), "private_fl")
    ctx.run.write_json("summaries.json", {n: {k: v for k, v in s.items() if k != "curve"} for n, s in summaries.items()})
    return {
        "accuracy": {n: s["test_accuracy"] for n, s in summaries.items()},
        "held_out_accuracy": {n: s["held_out_accuracy"] for n, s in summaries.items()},
        "epsilon": {n: s["epsilon"] for n, s in summaries.items()},
        "budgets": [float(b) for b in budgets.split(",")],
        "refusals": {n: s["refusals"] for n, s in summaries.items()},
        "rounds_aggregated": {n: s["rounds_aggregated"] for n, s in summaries.items()},
        "bytes_per_round": {n: s["bytes_per_round"] for n, s in summaries.items()},
        "seconds_per_round": {n: s["seconds_per_round"] for n, s in summaries.items()},
        "he_vs_plain_max_diff": he_diff,
        "server_decrypt_refused": bool(decrypt_attempt),
        "public_context_bytes": keys["he"]["public_bytes"],
        "stack_pids": stack.pids, "supernode_pids": supernode_pids,
        "milestones": [[name, seconds] for name, seconds in milestones.reached],  # (milestone, s since step 4)
    }


def _ledger_epsilons(set_dir, devices: int, config) -> list[float]:
    """ε each device has spent, read from its privacy ledger (PRV accountant)."""
    from edge.federated.private_client_app import device_budget

    return [PrivacyLedger.open(set_dir / f"state-{d}", f"device-{d}", device_budget(config.dp_budgets, d),
                               config.dp_delta).spent() for d in range(devices)]


def _final_model(result, key_folder, features: int, a) -> dict[str, np.ndarray]:
    """The final global model: plaintext from the server, or decrypted here with device 0's shared key."""
    from cloud.federated.private_server_app import ENCRYPTED_MODEL_FILE
    from edge.federated.private_client_app import load_key_holder

    if result.model_path.exists():
        return dict(np.load(result.model_path))
    with np.load(result.out_dir / ENCRYPTED_MODEL_FILE) as saved:
        blobs = [saved[k].tobytes() for k in sorted(saved.files)]
    like = init_params(features, a["hidden"], 10, seed=0)  # shapes and dtypes only
    flat = load_key_holder(key_folder, a["he_preset"]).decrypt(blobs, len(flatten(like, PARAM_NAMES)))
    return unflatten(flat, like, PARAM_NAMES)


def _plot(summaries: dict, budgets: list[float]):
    """Devices' held-out accuracy per round; ε spent per device against its budget; bytes and seconds per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 4))
    for name, s in summaries.items():
        style = "--" if "he" in name else "-"  # HE lies on top of its plaintext twin: dashed to show both
        left.plot(range(len(s["curve"])), s["curve"], style, marker="o", markersize=3,
                  label=f"{name} ({s['test_accuracy']:.3f})")
    left.set_xlabel("round (model received at its start; last: final)")
    left.set_ylabel("devices' held-out accuracy")
    left.set_ylim(0, 1)
    left.legend(fontsize=8, loc="lower right", title="setting (test acc)")
    width = 0.35
    devices = np.arange(len(budgets))
    for offset, name in ((-width / 2, "dp"), (width / 2, "dp+he")):
        middle.bar(devices + offset, [e or 0.0 for e in summaries[name]["epsilon"]], width, label=name)
    middle.scatter(devices, budgets, marker="_", s=900, color="black", label="budget")
    middle.set_xticks(devices)
    middle.set_xlabel("device")
    middle.set_ylabel("ε spent (PRV accountant)")
    middle.legend(fontsize=8)
    names = list(summaries)
    right.bar(names, [summaries[n]["bytes_per_round"] / 1e3 for n in names], color="tab:grey")
    right.set_yscale("log")
    right.set_ylabel("KB per round (bars)")
    seconds = right.twinx()
    seconds.plot(names, [summaries[n]["seconds_per_round"] for n in names], "o", color="tab:red")
    seconds.set_ylabel("s per round (dots)", color="tab:red")
    seconds.set_ylim(bottom=0)
    fig.suptitle("Private federated learning vs plain FedAvg")
    fig.tight_layout()
    return fig
