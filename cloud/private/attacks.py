"""Membership inference: guess from a model's outputs whether a sample was in its training set (numpy, scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Imported inside the functions that use them, to keep this module quick to import: sklearn.


@dataclass(frozen=True)
class AttackResult:
    """How well an attack separates members from non-members."""
    name: str
    auc: float  # area under the ROC curve; 0.5 = guessing
    advantage: float  # max over thresholds of TPR - FPR; 0 = guessing
    members: int
    nonmembers: int


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-sample cross-entropy loss (N,) from logits (N, C) and integer labels (N,), numerically stable."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)  # N, C
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


def auc_and_advantage(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC and membership advantage (max TPR - FPR) when a higher score means 'member'."""
    from sklearn.metrics import roc_auc_score, roc_curve

    scores = np.concatenate([member_scores, nonmember_scores])
    truth = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    fpr, tpr, _ = roc_curve(truth, scores)
    return float(roc_auc_score(truth, scores)), float(np.max(tpr - fpr))


def balanced(member: np.ndarray, nonmember: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index sets of equal size into members and non-members (so guessing scores exactly 0.5)."""
    rng = np.random.default_rng(seed)
    n = min(len(member), len(nonmember))
    return rng.choice(len(member), n, replace=False), rng.choice(len(nonmember), n, replace=False)


def loss_threshold_attack(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> AttackResult:
    """Yeom et al.'s attack: a low loss means 'member' (AUC and advantage do not depend on the set sizes)."""
    auc, adv = auc_and_advantage(-np.asarray(member_losses), -np.asarray(nonmember_losses))
    return AttackResult("loss threshold", auc, adv, len(member_losses), len(nonmember_losses))


def attack_features(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """What a shadow-model attack looks at: loss, top-3 sorted probabilities and the true class's (N, 5)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)  # N, C
    top = -np.sort(-probs, axis=1)[:, :3]  # N, 3
    true = probs[np.arange(len(labels)), labels][:, None]  # N, 1
    return np.hstack([cross_entropy(logits, labels)[:, None], top, true])


def shadow_model_attack(shadow_in: tuple[np.ndarray, np.ndarray], shadow_out: tuple[np.ndarray, np.ndarray],
                        target_in: tuple[np.ndarray, np.ndarray], target_out: tuple[np.ndarray, np.ndarray],
                        seed: int = 0) -> AttackResult:
    """Shokri et al.'s attack: learn 'member or not' from a shadow model the attacker trained itself.

    Each argument is (logits, labels): the shadow model's outputs on its own training data (in)
    and on data it never saw (out), then the target model's outputs on its members and
    non-members. A logistic regression trained on the shadow's features scores the target's.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    si, so = balanced(shadow_in[1], shadow_out[1], seed)
    x = np.vstack([attack_features(shadow_in[0][si], shadow_in[1][si]),
                   attack_features(shadow_out[0][so], shadow_out[1][so])])
    y = np.concatenate([np.ones(len(si)), np.zeros(len(so))])
    attacker = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)).fit(x, y)
    ti, to = balanced(target_in[1], target_out[1], seed + 1)
    member = attacker.predict_proba(attack_features(target_in[0][ti], target_in[1][ti]))[:, 1]
    nonmember = attacker.predict_proba(attack_features(target_out[0][to], target_out[1][to]))[:, 1]
    auc, adv = auc_and_advantage(member, nonmember)
    return AttackResult("shadow model", auc, adv, len(ti), len(to))
