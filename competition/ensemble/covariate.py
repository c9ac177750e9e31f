"""Covariate shift: how test-like each training row is, and the out-of-fold macro-F1 re-weighted to the test rows.

A domain classifier (logistic regression) learns to tell a model's out-of-fold outputs on the training rows from
its fold models' outputs on the test rows; each training row's odds of being a test row are its importance weight
(Sugiyama et al., 2007). The out-of-fold macro-F1 weighted so estimates the macro-F1 on rows distributed like the
test rows, where the shift is one the training rows span: noisier test audio makes the model's outputs look like
those of the noisiest training rows, and those rows then count more. Features are the model's log-probabilities,
not the raw inputs: raw audio tells new speakers apart almost perfectly (the weights would degenerate), the
model's outputs mostly say how hard a row is. A shift beyond every training row (noisier than any of them) can
only be approached, not reached: the estimate then still overstates, by less.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

CLIP_QUANTILE = 0.99  # the largest weights are clipped here: a handful of rows must not carry the estimate
FOLDS = 5  # the domain classifier's probabilities are cross-fitted: no row is weighted by a fit that saw it


@dataclass(frozen=True)
class Likeness:
    weights: np.ndarray  # (N,) per training row, mean 1
    auc: float  # the domain classifier's cross-fitted AUC: 0.5 = the outputs do not tell test from training rows

    @property
    def effective_rows(self) -> float:
        """Kish's effective sample size of the weights (N when they are all equal)."""
        return float(self.weights.sum() ** 2 / (self.weights**2).sum())


def likeness_weights(oof_logits: np.ndarray, test_logits: np.ndarray, seed: int = 0) -> Likeness:
    """Importance weights of the training rows from a model's (N, C) out-of-fold logits and its (K, M, C) fold
    models' test logits (each fold model's outputs a sample of the test rows, as the out-of-fold rows are one
    fold model's outputs each: averaging the K would make the test rows look more confident than any row)."""
    oof = log_softmax(np.asarray(oof_logits, dtype=np.float64), axis=1)
    test = np.concatenate([log_softmax(np.asarray(t, dtype=np.float64), axis=1) for t in test_logits])
    x = np.concatenate([oof, test])
    d = np.r_[np.zeros(len(oof)), np.ones(len(test))]
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    clf = LogisticRegression(C=0.1, max_iter=2000)
    p = cross_val_predict(clf, x, d, cv=folds, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(d, p))
    p_oof = np.clip(p[: len(oof)], 1e-3, 1 - 1e-3)
    w = p_oof / (1 - p_oof)
    w = np.minimum(w, np.quantile(w, CLIP_QUANTILE))
    return Likeness(w / w.mean(), auc)
