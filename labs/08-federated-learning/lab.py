"""Lab 08: federated learning on a real Flower SuperLink and one SuperNode per device."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np

from cloud.federated.config import FlConfig
from cloud.federated.deploy import publish_federated_model
from cloud.federated.partition import plot_histograms, set_name, write_digits_federation
from cloud.federated.results import centralized_baseline, plot_accuracy, round_line, summarize
from cloud.dashboard.server import lab_dashboard
from cloud.labkit.milestones import Milestones
from cloud.ml.data import digits_split
from cloud.ml.publish import bundles_dir
from cloud.stack.certs import CertPaths, make_certs
from cloud.stack.local import superlink_tls_files
from edge.serving.bundle import load_bundle
from edge.serving.keys import load_public_key
from edge.serving.runners import open_runner

# Imported inside the functions that use them, to keep this module quick to import: cloud.federated.federation.

TITLE = "Federated learning across edge devices with Flower"
DEFAULTS = {
    "devices": 4,
    "rounds": 6,
    "alpha": 0.1,  # Dirichlet concentration of the skewed (non-IID) split
    "alpha_mild": 1.0,  # a milder non-IID split, run when mild=true
    "mild": True,
    "compare": "fedprox,fedadam",  # strategies also run on the skewed split ("" for none)
    "two_class": False,  # also run FedAvg on the pathological two-classes-per-device split
    "fraction": 1.0,  # fraction of the devices sampled each round
    "local_epochs": 5,
    "lr": 0.1,
    "batch_size": 16,
    "proximal_mu": 0.05,
    "server_lr": 0.1,  # FedAdam's server step
    "hidden": 32,
    "dropout": True,  # a run where one SuperNode is killed mid-round and restarted
    "drop_round": 2,
    # The dropout run's rounds wait timeout_margin x the slowest reply so far for a silent node, at least timeout_floor s
    "timeout_margin": 3.0,
    "timeout_floor": 10.0,
    "cap_s": 1500.0,  # seconds all federated runs may take before the lab fails naming the milestone it waited for
    "device_eval": False,  # also send evaluate messages after the last round (the deploy step scores the final model)
    "tls": False,  # SuperLink over TLS (certificates from `make certs`, or made in the run folder)
    "dashboard": False,  # serve the live dashboard (cloud/dashboard) over the runs' journals while the lab runs
    "seed": 0,
}
QUICK = {"devices": 3, "rounds": 3, "mild": False, "compare": "fedadam", "dropout": False}


def run(ctx) -> dict:
    """Partition, train centrally, federate several settings side by side, drop a node, deploy the model."""
    from cloud.federated.federation import Federation, NodeDropout

    a = ctx.args
    devices, rounds = a["devices"], a["rounds"]
    skewed, mild = f"dir{a['alpha']:g}", f"dir{a['alpha_mild']:g}"
    sets = {"iid": "iid", skewed: set_name("dirichlet", a["alpha"]), mild: set_name("dirichlet", a["alpha_mild"]),
            "2class": "two-class"}
    compare = [s.strip() for s in a["compare"].split(",") if s.strip()]
    if not 0 < a["fraction"] <= 1:
        raise ValueError(f"fraction={a['fraction']}: use a fraction of the devices in (0, 1], e.g. fraction=0.5")

    ctx.step(f"1. Partition the digits across {devices} devices")
    data_dir = ctx.run.path / "fl-data"
    partitionings = [("iid", None), ("dirichlet", a["alpha"]), ("two-class", None)]
    if a["mild"]:
        partitionings.insert(2, ("dirichlet", a["alpha_mild"]))
    histograms, test_path = write_digits_federation(data_dir, devices, partitionings, ctx.seed)
    for name, hist in histograms.items():
        ctx.table(f"samples per class on each device: {name}", ["device", *map(str, range(10)), "total"],
                  [[d, *row.tolist(), int(row.sum())] for d, row in enumerate(hist)])
    ctx.save_plot(plot_histograms(histograms), "class_histograms")

    ctx.step("2. Centralized baseline: the same MLP on all the data in one place")
    split = digits_split(ctx.seed)
    epochs = rounds * a["local_epochs"]
    central_curve = centralized_baseline(np.concatenate([split.x_train, split.x_val]),
                                         np.concatenate([split.y_train, split.y_val]), split.x_test, split.y_test,
                                         epochs, a["lr"], a["batch_size"], a["hidden"], ctx.seed)
    centralized = central_curve[-1]
    ctx.console.print(f"centralized: {epochs} epochs (the devices' total local epochs), test accuracy {centralized:.3f}")

    sampled = max(1, round(a["fraction"] * devices))
    # Runs compared side by side share the SuperNodes, so each round also carries the other runs' load (and
    # their ClientApps' cold starts, when one run is a round ahead): a round can take several times the slowest
    # reply its own run measured so far. min-nodes is every sampled device here, so a timeout could only fail
    # the run; a floor of 60 s costs nothing when every device answers and keeps a load spike from failing it.
    base = FlConfig(num_server_rounds=rounds, fraction_train=a["fraction"], min_nodes=sampled,
                    timeout_margin=a["timeout_margin"], timeout_floor=60.0, local_epochs=a["local_epochs"],
                    lr=a["lr"], batch_size=a["batch_size"], proximal_mu=a["proximal_mu"], server_lr=a["server_lr"],
                    hidden=a["hidden"], seed=ctx.seed, test_path=str(test_path),
                    evaluate_every=0 if a["device_eval"] else -1)
    runs = [("fedavg", "iid"), ("fedavg", skewed)] + ([("fedavg", mild)] if a["mild"] else [])
    runs += [("fedavg", "2class")] if a["two_class"] else []
    runs += [(strategy, skewed) for strategy in compare]
    settings = {f"{strategy}/{data}": replace(base, strategy=strategy, partition_set=sets[data])
                for strategy, data in runs}


    existing = superlink_tls_files(ctx.settings)  # certificates from `make certs` turn TLS on
    ca = _use_tls(ctx) if a["tls"] else (existing.ca if existing else None)
    # dashboard=1 serves the live dashboard (cloud/dashboard) over this run's FL journals while the lab runs.
    with lab_dashboard(bool(a["dashboard"]), ctx.console, fl_folders=[ctx.run.path / "runs"]), \
            ctx.stack(services=("superlink",)) as stack:
        ctx.step(f"3. Start {devices} SuperNodes (one per device) against the SuperLink at {stack.superlink_address}")
        federation = Federation(stack.superlink_address, ctx.run.path / "federation", devices, data_dir, ca=ca,
                                console=ctx.console, health_timeout_s=ctx.settings.health_timeout_s * 4)
        with federation:
            ctx.console.print(f"{devices} SuperNodes online, pids {federation.pids()}; "
                              f"logs in {federation.work_dir / 'logs'}")
            # Every round's replies are a milestone; all runs share one cap, however slow the machine.
            milestones = Milestones(a["cap_s"], progress=ctx.console.print, progress_every_s=10)
            ctx.step(f"4. {len(settings)} federated runs side by side, {rounds} rounds each: {', '.join(settings)}")
            results = federation.run_many(
                {name: (config, ctx.run.path / "runs" / name) for name, config in settings.items()},
                milestones=milestones, on_round=lambda name, entry: ctx.console.print(round_line(name, entry, rounds)))
            dropout = None
            if a["dropout"]:
                ctx.step(f"5. Drop a device: kill SuperNode {devices - 1} in round {a['drop_round']}, restart it after")
                plan = NodeDropout(federation, devices - 1, a["drop_round"], console=ctx.console)
                # Alone on the SuperNodes: the round with the killed node waits the measured timeout, then goes on.
                drop_config = replace(base, **{"partition_set": "iid", "min_nodes": min(sampled, devices - 1),
                                                "timeout_floor": a["timeout_floor"], "evaluate_every": -1})
                dropout = federation.run(drop_config, ctx.run.path / "runs" / "dropout", during=plan,
                                         milestones=milestones, label="dropout run: ",
                                         on_round=lambda entry: ctx.console.print(round_line("fedavg/iid+drop", entry,
                                                                                             rounds)))
                results["fedavg/iid+drop"] = dropout
            supernode_pids = federation.pids()

    ctx.step("6. Deploy the FedAvg (IID) global model to the devices as a signed ONNX bundle")
    final = dict(np.load(results["fedavg/iid"].model_path))
    bundle = publish_federated_model(final, ctx.settings.artifacts_dir, version=_next_version(ctx),
                                     metrics={"accuracy": results["fedavg/iid"].rounds[-1]["central"]["accuracy"]})
    verified, device_accuracy = _verify_on_devices(ctx, bundle, data_dir, devices)

    summaries = {name: summarize(result, centralized) for name, result in results.items()}
    ctx.table(f"lab-08: {devices} devices, {rounds} rounds (centralized accuracy {centralized:.3f})",
              ["setting", "final acc", "rounds to 90%", "KB/round", "s/round", "dropped"],
              [[name, s["final_accuracy"], s["rounds_to_90pct"] or f">{rounds}", f"{s['bytes_per_round'] / 1000:.1f}",
                s["seconds_per_round"], s["dropouts"]] for name, s in summaries.items()])
    ctx.console.print("rounds to 90%: first round at 90 % of the centralized accuracy. s/round: the first runs shared "
                      "the SuperNodes side by side; `make bench-fl` times one run alone")
    ctx.save_plot(plot_accuracy({n: s["curve"] for n, s in summaries.items()},
                                summaries["fedavg/iid"]["initial_accuracy"], centralized), "accuracy_per_round")
    ctx.run.write_json("summaries.json", summaries)

    metrics = {
        "centralized_accuracy": centralized,
        "accuracy": {n: s["final_accuracy"] for n, s in summaries.items()},
        "rounds_to_90pct": {n: s["rounds_to_90pct"] for n, s in summaries.items()},
        "bytes_per_round": {n: s["bytes_per_round"] for n, s in summaries.items()},
        "bundle": bundle.name, "bundle_verified": verified, "device_accuracy": device_accuracy,
        "stack_pids": stack.pids, "supernode_pids": supernode_pids, "tls": bool(a["tls"]),
        "milestones": [[name, seconds] for name, seconds in milestones.reached],  # (milestone, s since step 4)
    }
    if dropout is not None:
        metrics["dropout"] = {
            "partitions_per_round": {r["round"]: sorted(t["partition_id"] for t in r["train"]) for r in dropout.rounds},
            "dropped_rounds": [r["round"] for r in dropout.rounds if r["dropouts"]],
            "timeouts_s": {r["round"]: r["waiting"]["train"]["timeout_s"] for r in dropout.rounds},
            "final_accuracy": dropout.rounds[-1]["central"]["accuracy"],
        }
    return metrics


def _use_tls(ctx):
    """Turn TLS on for this lab's SuperLink: certificates from CERTS_DIR, or new ones in the run folder."""
    paths = CertPaths(ctx.settings.certs_dir)
    if not paths.complete():
        paths = make_certs(ctx.run.path / "certs", console=ctx.console)
    ctx.settings = ctx.settings.model_copy(update={"superlink_tls": True, "certs_dir": paths.folder.resolve()})
    ctx.console.print(f"TLS on: SuperLink certificate {paths.cert}, devices trust {paths.ca}")
    return paths.ca


def _next_version(ctx) -> int:
    """One more than the newest published digits-fedavg-mlp bundle."""
    found = [int(p.name.split("@")[1]) for p in bundles_dir(ctx.settings.artifacts_dir).glob("digits-fedavg-mlp@*")
             if p.name.split("@")[1].isdigit()]
    return max(found, default=0) + 1


def _verify_on_devices(ctx, bundle, data_dir, devices: int) -> tuple[bool, list[float]]:
    """Verify the bundle the way a device does (`edge verify`), then score it on each device's held-out data."""
    key = bundle.parent / "public_key.pem"
    done = subprocess.run([sys.executable, "-m", "edge.cli", "verify", "--bundle", str(bundle), "--key", str(key)],
                          capture_output=True, text=True, timeout=60)
    ctx.console.print(f"$ edge verify --bundle {bundle} --key {key}\n{(done.stdout or done.stderr).strip()}")
    runner = open_runner(load_bundle(bundle, load_public_key(key)))
    accuracy = []
    for device in range(devices):
        with np.load(data_dir / "iid" / f"device-{device}.npz") as part:
            accuracy.append(float((runner.predict(part["x_val"]).argmax(1) == part["y_val"]).mean()))
    ctx.console.print("held-out accuracy of the deployed bundle on each device: "
                      + ", ".join(f"device {d} {acc:.3f}" for d, acc in enumerate(accuracy)))
    return done.returncode == 0, accuracy
