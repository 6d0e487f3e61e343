"""Lab 09: differential privacy - DP-SGD at several ε, the privacy-utility curve, a membership attack, a budget."""

from __future__ import annotations

import tempfile

import numpy as np

from cloud.labkit.plots import _pyplot
from cloud.ml.data import digits_split
from cloud.private.attacks import cross_entropy, loss_threshold_attack, shadow_model_attack
from cloud.private.dp import advantage_bound, predict_logits, train_plain, train_private
from edge.federated.mlp import evaluate, init_params
from edge.private.dp import PrivacyBudgetExceeded, PrivacyLedger, mlp_to_torch, torch_to_mlp, train_round

TITLE = "Differential privacy: DP-SGD with Opacus, accountants, membership inference, budgets"
DEFAULTS = {
    "seed": 42,
    "epsilons": "0.5,1,2,4,8",  # target ε values, comma-separated
    "delta": 1e-5,
    "epochs": 20,
    "batch_size": 256,  # expected logical batch (Poisson sampling)
    "physical_batch": 64,  # what BatchMemoryManager puts through the model at once
    "max_grad_norm": 1.0,  # per-sample clipping bound C
    "lr": 0.01,
    "overfit_members": 100,  # training-set size of the deliberately overfit model
    "overfit_epochs": 200,
    "budget": 1.5,  # ε budget of the device in the refusal demo
    "device_noise": 1.5,  # σ the device trains with in the refusal demo
}
QUICK = {"epsilons": "1,8", "epochs": 8, "overfit_epochs": 120}


def _losses(model, x, y):
    """Per-sample cross-entropy of a model on flat digits."""
    return cross_entropy(predict_logits(model, x), y)


def utility_and_attack(ctx, split, outsiders) -> dict:
    """Non-private and DP-SGD runs at each target ε: accuracy, ε by two accountants, attack on each."""
    a = ctx.args
    targets = [float(e) for e in str(a["epsilons"]).split(",") if e.strip()]
    ctx.step(f"1. DP-SGD at ε ∈ {targets} and without DP ({a['epochs']} epochs, {len(split.x_train)} members)")
    x_out, y_out = outsiders
    common = dict(epochs=a["epochs"], batch_size=a["batch_size"], lr=a["lr"], seed=ctx.seed)
    plain = train_plain(split.x_train, split.y_train, split.x_test, split.y_test, **common)
    attack = loss_threshold_attack(_losses(plain.model, split.x_train, split.y_train),
                                   _losses(plain.model, x_out, y_out))
    accounting = []
    rows = [["none", plain.accuracy, plain.seconds_per_epoch, attack.auc, attack.advantage, "1"]]
    runs = []
    for target in targets:
        run = train_private(split.x_train, split.y_train, split.x_test, split.y_test, target_epsilon=target,
                            delta=a["delta"], max_physical_batch_size=a["physical_batch"],
                            max_grad_norm=a["max_grad_norm"], **common)
        hit = loss_threshold_attack(_losses(run.model, split.x_train, split.y_train),
                                    _losses(run.model, x_out, y_out))
        bound = advantage_bound(run.epsilon["prv"], a["delta"])
        runs.append((target, run, hit, bound))
        accounting.append([target, f"{run.noise_multiplier:.3f}", f"{run.sample_rate:.3f}", run.steps,
                           f"{run.epsilon['prv']:.3f}", f"{run.epsilon['rdp']:.3f}"])
        rows.append([target, run.accuracy, run.seconds_per_epoch, hit.auc, hit.advantage, f"{bound:.3f}"])
        ctx.console.print(f"  ε target {target}: σ={run.noise_multiplier:.3f}, test accuracy {run.accuracy:.3f}, "
                          f"attack AUC {hit.auc:.3f}")
    ctx.table(f"Accounting (δ={a['delta']:g}, C={a['max_grad_norm']}, expected batch {a['batch_size']})",
              ["target ε", "σ", "q", "steps", "ε PRV", "ε RDP"], accounting)
    ctx.table("Utility and the loss-threshold attack (AUC 0.5 = guessing)",
              ["target ε", "test acc", "s/epoch", "attack AUC", "advantage", "DP bound"], rows)
    dp_time = float(np.median([r.seconds_per_epoch for _, r, _, _ in runs])) if runs else 0.0
    ctx.console.print(f"DP-SGD epoch {dp_time:.3f} s against {plain.seconds_per_epoch:.3f} s without DP "
                      f"({dp_time / plain.seconds_per_epoch:.1f}x)")
    return {"plain": plain, "plain_attack": attack, "runs": runs, "dp_time_ratio": dp_time / plain.seconds_per_epoch}


def overfit_attack(ctx, split, outsiders) -> dict:
    """A deliberately overfit non-private model, attacked by loss threshold and by a shadow model."""
    a = ctx.args
    n = a["overfit_members"]
    ctx.step(f"2. Membership inference on a deliberately overfit model ({n} members, {a['overfit_epochs']} epochs)")
    x_out, y_out = outsiders
    overfit = dict(epochs=a["overfit_epochs"], batch_size=32, lr=3e-3)
    target = train_plain(split.x_train[:n], split.y_train[:n], split.x_test, split.y_test, seed=ctx.seed, **overfit)
    loss_attack = loss_threshold_attack(_losses(target.model, split.x_train[:n], split.y_train[:n]),
                                        _losses(target.model, x_out, y_out))
    # The attacker trains a shadow model the same way on data of its own (never the target's members).
    shadow_in, shadow_out = slice(n, 2 * n), slice(2 * n, None)
    shadow = train_plain(split.x_train[shadow_in], split.y_train[shadow_in], split.x_test, split.y_test,
                         seed=ctx.seed + 1, **overfit)

    def outputs(model, x, y):
        return predict_logits(model, x), y

    shadow_attack = shadow_model_attack(
        outputs(shadow.model, split.x_train[shadow_in], split.y_train[shadow_in]),
        outputs(shadow.model, split.x_train[shadow_out], split.y_train[shadow_out]),
        outputs(target.model, split.x_train[:n], split.y_train[:n]),
        outputs(target.model, x_out, y_out), seed=ctx.seed)
    gap = float(np.mean(_losses(target.model, x_out, y_out)) - np.mean(_losses(target.model, split.x_train[:n],
                                                                                 split.y_train[:n])))
    ctx.table("Attacks on the overfit model (0.5 AUC / 0 advantage = guessing)",
              ["attack", "members", "non-members", "AUC", "advantage"],
              [[r.name, r.members, r.nonmembers, r.auc, r.advantage] for r in (loss_attack, shadow_attack)])
    ctx.console.print(f"overfit model: test accuracy {target.accuracy:.3f}, final training loss "
                      f"{target.loss[-1]:.2e}, mean loss gap (non-members - members) {gap:.3f}")
    return {"loss": loss_attack, "shadow": shadow_attack, "accuracy": target.accuracy}


def budget_refusal(ctx, split) -> dict:
    """A device with an ε budget trains round after round until its ledger refuses."""


    a = ctx.args
    ctx.step(f"3. A device's budget: ε ≤ {a['budget']} for life, σ={a['device_noise']}, one epoch per round")
    state = tempfile.mkdtemp(prefix="device-state-", dir=ctx.run.path)
    x, y = split.x_train, split.y_train
    params = init_params(seed=ctx.seed)
    rows, refused_at, message = [], None, ""
    for round_id in range(1, 11):
        ledger = PrivacyLedger.open(state, "device-0", budget=a["budget"], delta=a["delta"])  # as a fresh process would
        model = mlp_to_torch(params)
        try:
            report = train_round(model, x, y, ledger, noise_multiplier=a["device_noise"], batch_size=64,
                                 epochs=1, lr=0.5, seed=ctx.seed + round_id, round_id=round_id)
        except PrivacyBudgetExceeded as refusal:
            refused_at, message = round_id, str(refusal)
            break
        params = torch_to_mlp(model)
        rows.append([round_id, report.steps, f"{report.epsilon_before:.3f}", f"{report.epsilon_after:.3f}",
                     f"{report.epsilon_rdp_after:.3f}", evaluate(params, split.x_test, split.y_test)[1]])
    ctx.table("Device rounds (one ledger, kept in the device's state folder)",
              ["round", "steps", "ε before", "ε after (PRV)", "ε after (RDP)", "test acc"], rows)
    ctx.console.print(f"[red]round {refused_at}: {message}[/]" if refused_at else "[yellow]no refusal[/]")
    spent = PrivacyLedger.open(state, "device-0", budget=a["budget"], delta=a["delta"]).spent()
    return {"refused_at_round": refused_at, "device_epsilon_spent": spent, "device_rounds": len(rows)}


def plot(ctx, utility, overfit) -> None:
    """Privacy-utility curve and attack AUC against ε."""
    plt = _pyplot()
    eps = [r.epsilon["prv"] for _, r, _, _ in utility["runs"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(eps, [r.accuracy for _, r, _, _ in utility["runs"]], marker="o", label="DP-SGD")
    left.axhline(utility["plain"].accuracy, color="gray", linestyle="--", label="no DP")
    left.set(xscale="log", xlabel="ε (PRV, δ fixed)", ylabel="test accuracy", title="Privacy-utility")
    right.plot(eps, [h.auc for _, _, h, _ in utility["runs"]], marker="o", label="DP-SGD, loss attack")
    right.axhline(utility["plain_attack"].auc, color="gray", linestyle="--", label="no DP")
    right.axhline(overfit["loss"].auc, color="red", linestyle=":", label="overfit, no DP")
    right.axhline(0.5, color="black", linewidth=0.8)
    right.set(xscale="log", xlabel="ε (PRV)", ylabel="attack AUC", title="Membership inference")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ctx.save_plot(fig, "privacy_utility")


def run(ctx) -> dict:
    """Utility and attack at each ε, the overfit model's leak, then a device's budget running out."""
    split = digits_split(ctx.seed)
    outsiders = (np.vstack([split.x_val, split.x_test]), np.concatenate([split.y_val, split.y_test]))
    utility = utility_and_attack(ctx, split, outsiders)
    overfit = overfit_attack(ctx, split, outsiders)
    plot(ctx, utility, overfit)
    device = budget_refusal(ctx, split)
    runs = utility["runs"]
    return {
        "accuracy_nonprivate": utility["plain"].accuracy,
        "attack_auc_nonprivate": utility["plain_attack"].auc,
        "targets": [t for t, *_ in runs],
        "epsilon_prv": [r.epsilon["prv"] for _, r, _, _ in runs],
        "epsilon_rdp": [r.epsilon["rdp"] for _, r, _, _ in runs],
        "noise_multipliers": [r.noise_multiplier for _, r, _, _ in runs],
        "accuracy_dp": [r.accuracy for _, r, _, _ in runs],
        "attack_auc_dp": [h.auc for _, _, h, _ in runs],
        "attack_advantage_dp": [h.advantage for _, _, h, _ in runs],
        "dp_epoch_time_ratio": utility["dp_time_ratio"],
        "overfit_attack_auc": overfit["loss"].auc,
        "overfit_attack_advantage": overfit["loss"].advantage,
        "overfit_shadow_auc": overfit["shadow"].auc,
        "overfit_accuracy": overfit["accuracy"],
        **device,
    }
