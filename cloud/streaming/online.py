"""The stream processor's River parts, built in one place: the online classifier, the drift detector and the anomaly detector."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Imported inside the functions that use them, to keep this module quick to import: river.


@dataclass(frozen=True)
class OnlineModel:
    """What ``build_online_model`` returns: River objects the processor feeds one event at a time."""
    classifier: Any  # predict_one / learn_one on 16 pooled pixels (``processor.pooled_features``) -> digit
    scaler: Any  # learn_one / transform_one: telemetry into [0, 1] for the anomaly detector
    anomaly: Any  # score_one / learn_one on the scaled telemetry; a score near 1 is unusual
    new_drift_detector: Callable[[], Any]  # a fresh detector (update / drift_detected / estimation), one per model version


def build_online_model(seed: int = 0, adwin_delta: float = 0.002) -> OnlineModel:
    """The processor's online classifier, drift-detector factory and anomaly detector; swap River's models here.

    This is the one place to change what the cloud learns from the stream. The classifier may be any
    River classifier (or pipeline) with ``predict_one``/``learn_one``, e.g.
    ``compose.Pipeline(preprocessing.StandardScaler(), tree.HoeffdingTreeClassifier())``; the drift
    detector any of ``river.drift`` (``PageHinkley``, ``KSWIN``, ...) that has ``estimation``; the
    anomaly detector any of ``river.anomaly`` with ``score_one``/``learn_one``.

    Parameters
    ----------
    seed
        Seed of the anomaly detector's random trees (the same seed gives the same scores).
    adwin_delta
        ADWIN's confidence: smaller waits for stronger evidence before it flags a change in the error rate.

    Examples
    --------
    >>> model = build_online_model(seed=0)
    >>> model.classifier.learn_one({"p0": 0.2, "p1": 0.8}, 7)
    >>> model.classifier.predict_one({"p0": 0.2, "p1": 0.8})
    7
    >>> detector = model.new_drift_detector()
    >>> for error in [0] * 200 + [1] * 100:
    ...     detector.update(error)
    >>> round(detector.estimation, 2), model.new_drift_detector() is not detector
    (1.0, True)
    """
    # River takes about 2 s to import: only a running processor pays for it, not importing this module.
    from river import anomaly, compose, drift, linear_model, preprocessing

    return OnlineModel(
        classifier=compose.Pipeline(preprocessing.StandardScaler(), linear_model.SoftmaxRegression()),
        scaler=preprocessing.MinMaxScaler(),
        anomaly=anomaly.HalfSpaceTrees(seed=seed),
        new_drift_detector=functools.partial(drift.ADWIN, delta=adwin_delta, clock=8),
    )
