"""Real Opacus: ε within target by two accountants, noise costs accuracy, the attack, a device's lifelong budget."""

import numpy as np
import pytest

from cloud.ml.data import digits_split
from cloud.private.attacks import cross_entropy, loss_threshold_attack
from cloud.private.dp import advantage_bound, epsilon_for, predict_logits, train_plain, train_private


@pytest.fixture(scope="module")
def split():
    return digits_split(42)


@pytest.fixture(scope="module")
def outsiders(split):
    return np.vstack([split.x_val, split.x_test]), np.concatenate([split.y_val, split.y_test])


def _attack(model, members, outsiders):
    return loss_threshold_attack(cross_entropy(predict_logits(model, members[0]), members[1]),
                                 cross_entropy(predict_logits(model, outsiders[0]), outsiders[1]))


def test_epsilon_within_target_by_prv_and_rdp_reported_and_seeded(split):
    # Execute: the same DP run twice with the same seed.
    runs = [train_private(split.x_train, split.y_train, split.x_test, split.y_test, target_epsilon=3.0,
                          epochs=3, seed=7) for _ in range(2)]
    # Assert: PRV ε ≤ target (Opacus chose σ for it); RDP, a looser bound, is reported beside it.
    first, second = runs
    assert 2.5 < first.epsilon["prv"] <= 3.0
    assert first.epsilon["prv"] <= first.epsilon["rdp"] < 4.0
    assert first.steps == 3 * round(1 / first.sample_rate)
    assert first.accuracy == second.accuracy and first.epsilon == second.epsilon


def test_more_noise_does_not_beat_the_nonprivate_model(split):
    common = dict(epochs=6, seed=1)
    plain = train_plain(split.x_train, split.y_train, split.x_test, split.y_test, **common)
    accuracies = [train_private(split.x_train, split.y_train, split.x_test, split.y_test,
                                noise_multiplier=sigma, **common).accuracy for sigma in (0.8, 3.0)]
    assert plain.accuracy > 0.9
    assert all(a <= plain.accuracy + 0.01 for a in accuracies)
    assert accuracies[1] <= accuracies[0] + 0.02


def test_attack_finds_the_overfit_model_and_not_the_dp_one(split, outsiders):
    # Bounds (measured seeds 7 and 42: overfit AUC 0.63-0.65, DP at ε=3 AUC 0.50):
    # overfit AUC ≥ 0.58; DP at ε ≤ 3 within 0.5 ± 0.05 and advantage ≤ 0.1 (the DP bound is 0.91).
    n = 100
    overfit = train_plain(split.x_train[:n], split.y_train[:n], split.x_test, split.y_test,
                          epochs=120, batch_size=32, lr=3e-3, seed=42)
    leaky = _attack(overfit.model, (split.x_train[:n], split.y_train[:n]), outsiders)
    private = train_private(split.x_train, split.y_train, split.x_test, split.y_test, target_epsilon=3.0,
                            epochs=8, seed=42)
    safe = _attack(private.model, (split.x_train, split.y_train), outsiders)
    assert leaky.auc >= 0.58 and leaky.advantage >= 0.2
    assert private.epsilon["prv"] <= 3.0
    assert abs(safe.auc - 0.5) <= 0.05
    assert safe.advantage <= min(0.1, advantage_bound(private.epsilon["prv"], 1e-5))


def test_device_epsilon_accumulates_across_rounds_and_budget_refuses(split, tmp_path):
    from edge.federated.mlp import init_params
    from edge.private.dp import PrivacyBudgetExceeded, PrivacyLedger, mlp_to_torch, torch_to_mlp, train_round

    params, spent = init_params(seed=0), []
    for round_id in (1, 2, 3):
        ledger = PrivacyLedger.open(tmp_path, "device-0", budget=1.5)  # re-read each round, like a new process
        model = mlp_to_torch(params)
        report = train_round(model, split.x_train, split.y_train, ledger, noise_multiplier=1.5, batch_size=64,
                             epochs=1, lr=0.5, seed=round_id, round_id=round_id)
        params = torch_to_mlp(model)
        spent.append(report.epsilon_after)
    single_round = epsilon_for([PrivacyLedger.open(tmp_path, "device-0", budget=1.5).history[0]], 1e-5)
    # ε grows every round, and a fresh accountant per round would report only the first value each time.
    assert spent == sorted(spent) and spent[0] < spent[1] < spent[2] <= 1.5
    assert spent[2] > 1.5 * single_round
    ledger = PrivacyLedger.open(tmp_path, "device-0", budget=1.5)
    assert ledger.spent() == pytest.approx(spent[2])
    with pytest.raises(PrivacyBudgetExceeded, match=r"would reach 1\.5\d+ > budget 1\.5"):
        train_round(mlp_to_torch(params), split.x_train, split.y_train, ledger, noise_multiplier=1.5,
                    batch_size=64, epochs=1, lr=0.5, seed=4, round_id=4)
    assert len(PrivacyLedger.open(tmp_path, "device-0", budget=1.5).history) == 3  # the refusal spent nothing
