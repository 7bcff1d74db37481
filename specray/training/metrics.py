"""Classifier quality on held-out tokens: F1, AUC and calibration (ECE).

Calibration matters as much as ranking here: DISCO's tau and SpecDec++'s product of P(accept)
read the outputs as probabilities, and so does the engine's cost gate.
"""

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score


def expected_calibration_error(prob: np.ndarray, label: np.ndarray, bins: int = 10) -> float:
    """Mean |predicted - observed| acceptance over equal-width probability bins, weighted by bin size."""
    which = np.minimum((prob * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(prob[mask].mean() - label[mask].mean())
    return float(total / max(len(prob), 1))


def auc(prob: np.ndarray, label: np.ndarray) -> float | None:
    """ROC AUC; None when the labels hold one class only (it is undefined)."""
    hard = label >= 0.5
    return float(roc_auc_score(hard, prob)) if 0 < hard.sum() < len(hard) else None


def classifier_metrics(prob: np.ndarray, label: np.ndarray) -> dict:
    """F1 at 0.5, AUC, ECE and the base rate of `label` (hard 0/1 or soft accept_prob)."""
    if len(prob) == 0:
        return {"rows": 0}
    hard = label >= 0.5
    return {
        "rows": int(len(prob)),
        "accept_rate": round(float(label.mean()), 4),
        "f1": round(float(f1_score(hard, prob >= 0.5, zero_division=0.0)), 4),
        "auc": None if (a := auc(prob, label)) is None else round(a, 4),
        "ece": round(expected_calibration_error(prob, label), 4),
    }
