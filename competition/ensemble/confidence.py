"""Calibrated confidence: the test macro-F1 a blend's fold models expect of the written labels, without labels.

Each fold model's blended test probabilities are calibrated as the out-of-fold rows say (bias-corrected
temperature scaling, ``priors.fit_bcts``, fitted on the out-of-fold blend, where every row is one fold model's
output as a test row is), averaged over the fold models, and read as the chance that each class is a row's true
one; the written labels are scored against them (``metrics.expected_macro_f1``). Unlike the re-weighted
out-of-fold figure (``covariate``), it needs no training row like the test rows: it reads the test rows
themselves. Its own bias runs the other way on shifted data: each fold model's belief in the ensemble's label
is below the ensemble's accuracy, so it tends to understate (Hendrycks and Gimpel, 2017; Guillory et al.,
2021, on confidence-based accuracy estimates under shift).

A fold model that trained on pseudo-labelled test rows reproduces the labels it trained on: there its belief
is a fit, not a prediction, and the figure overstates. Where a pseudo-label round held out a test split
(``pseudo_test_folds``), ``use`` keeps for each test row the one fold model that never trained on it.

``fold_ensemble_gain`` says what the written labels, which average K fold models, are expected to gain over one
fold model's labels. An out-of-fold row is one fold model's prediction, so an out-of-fold score describes one
model, not their average: on four label-shift copies the average beat the mean fold model by 0.002-0.042
macro-F1 on the held-out rows, and the out-of-fold estimate fell short of the held-out score by about as much
(bench/results/label_shift.md). The gain is scored against the written probabilities (calibrated, decided), the
ones the submission stands behind: an average of log-probabilities keeps about one model's sharpness, while the
mean of the calibrated fold probabilities is under-confident (mean top probability 0.82 on rows it labels 0.905
right) and expected half the gain.
"""

from __future__ import annotations

import numpy as np

from competition.ensemble.consensus import Groups, consensus_on_test
from competition.ensemble.priors import apply_bcts, fit_bcts, log_probs
from competition.metrics import expected_macro_f1


def calibrated_test_probs(
    oof_probs: np.ndarray, y: np.ndarray, test_probs: np.ndarray, use: np.ndarray | None = None
) -> np.ndarray:
    """(M, 10): the mean over the K fold models of their (K, M, 10) test probabilities, each calibrated by the
    temperature and biases that fit the (N, 10) out-of-fold probabilities ``oof_probs`` to the labels ``y``;
    with ``use`` ((K, M) bool, at least one per row), per row the mean of the fold models it marks only."""
    temperature, bias = fit_bcts(log_probs(oof_probs), y)
    cal = np.stack([apply_bcts(log_probs(t), temperature, bias) for t in test_probs])  # (K, M, 10)
    if use is None:
        return cal.mean(axis=0)
    w = np.asarray(use, dtype=np.float64)[:, :, None]  # (K, M, 1)
    return (cal * w).sum(axis=0) / w.sum(axis=0)


def confidence_macro_f1(
    oof_probs: np.ndarray,
    y: np.ndarray,
    test_probs: np.ndarray,
    pred: np.ndarray,
    use: np.ndarray | None = None,
    groups: Groups | None = None,
) -> float:
    """The macro-F1 the calibrated fold models (per row those ``use`` marks) expect of the (M,) written labels
    ``pred``. With ``groups`` (the written labels had consensus), the beliefs are pooled within the test rows'
    duplicate groups as consensus pooled the labels: a row whose own fold model is unsure, in a group whose other
    rows are sure, is as likely right as its group."""
    beliefs = calibrated_test_probs(oof_probs, y, test_probs, use)
    if groups is not None:
        beliefs = consensus_on_test(beliefs, groups, y).probs
    return expected_macro_f1(beliefs, pred)


def fold_ensemble_gain(reference: np.ndarray, pred: np.ndarray, fold_preds: np.ndarray) -> float:
    """The macro-F1 the (M,) written labels ``pred`` are expected to gain over one fold model's (K, M) labels
    ``fold_preds``, scored against the (M, 10) probabilities ``reference`` (the written ones)."""
    single = np.mean([expected_macro_f1(reference, p) for p in fold_preds])
    return float(expected_macro_f1(reference, pred) - single)
