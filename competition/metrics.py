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


def expected_macro_f1(probs: np.ndarray, pred: np.ndarray) -> float:
    """The macro-F1 labels ``pred`` (M,) would score if each row's true class followed its row of (M, 10)
    calibrated ``probs``: per class the expected true positives, false positives and false negatives, summed over
    the rows, make its F1 (a plug-in estimate, without labels). Classes neither predicted nor expected score 0,
    as in ``macro_f1``."""
    probs, pred = np.asarray(probs, dtype=np.float64), np.asarray(pred)
    hit = np.eye(N_CLASSES, dtype=bool)[pred]  # (M, 10): row predicted as the class
    tp = (probs * hit).sum(axis=0)
    fp = ((1 - probs) * hit).sum(axis=0)
    fn = (probs * ~hit).sum(axis=0)
    denom = 2 * tp + fp + fn
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-300), 0.0)))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(accuracy_score(y_true, y_pred))


def scores(y_true: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Macro-F1 and accuracy of argmax predictions from (N, 10) logits or probabilities."""
    pred = np.asarray(logits).argmax(axis=1)
    return {"macro_f1": macro_f1(y_true, pred), "accuracy": accuracy(y_true, pred)}
