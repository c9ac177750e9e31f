"""Calibrated confidence: the test macro-F1 a blend's fold models expect of the written labels, without labels.

Each fold model's blended test probabilities are calibrated as the out-of-fold rows say (bias-corrected
temperature scaling, ``priors.fit_bcts``, fitted on the out-of-fold blend, where every row is one fold model's
output as a test row is), averaged over the fold models, and read as the chance that each class is a row's true
one; the written labels are scored against them (``metrics.expected_macro_f1``). Unlike the re-weighted
out-of-fold figure (``covariate``), it needs no training row like the test rows: it reads the test rows
themselves. Its own bias runs the other way on shifted data: each fold model's belief in the ensemble's label
is below the ensemble's accuracy, so it tends to understate (Hendrycks and Gimpel, 2017; Guillory et al.,
2021, on confidence-based accuracy estimates under shift).
"""

from __future__ import annotations

import numpy as np

from competition.ensemble.priors import apply_bcts, fit_bcts, log_probs
from competition.metrics import expected_macro_f1


def calibrated_test_probs(oof_probs: np.ndarray, y: np.ndarray, test_probs: np.ndarray) -> np.ndarray:
    """(M, 10): the mean over the K fold models of their (K, M, 10) test probabilities, each calibrated by the
    temperature and biases that fit the (N, 10) out-of-fold probabilities ``oof_probs`` to the labels ``y``."""
    temperature, bias = fit_bcts(log_probs(oof_probs), y)
    return np.mean([apply_bcts(log_probs(t), temperature, bias) for t in test_probs], axis=0)


def confidence_macro_f1(oof_probs: np.ndarray, y: np.ndarray, test_probs: np.ndarray, pred: np.ndarray) -> float:
    """The macro-F1 the calibrated fold models expect of the (M,) written labels ``pred``."""
    return expected_macro_f1(calibrated_test_probs(oof_probs, y, test_probs), pred)
