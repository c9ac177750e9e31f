"""Metrics: pure functions of labels and predictions (the competition scores macro-F1)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from competition.data.load import N_CLASSES


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The competition metric: unweighted mean of the per-class F1 over the classes 0-9; ``weights``: each row
    counted so many times (re-weighted estimates), default once."""
    labels = np.arange(N_CLASSES)
    return float(f1_score(y_true, y_pred, average="macro", labels=labels, sample_weight=weights, zero_division=0))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(accuracy_score(y_true, y_pred))


def scores(y_true: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Macro-F1 and accuracy of argmax predictions from (N, 10) logits or probabilities."""
    pred = np.asarray(logits).argmax(axis=1)
    return {"macro_f1": macro_f1(y_true, pred), "accuracy": accuracy(y_true, pred)}
