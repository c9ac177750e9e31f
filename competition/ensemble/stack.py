"""Stacking: a multinomial logistic regression (scikit-learn) on the models' out-of-fold log-probabilities,
as a blend candidate beside the equal and greedy-fitted blends (no files).

Its regularisation strength C is chosen by cross-validation over the saved folds of the rows it is fit on
(``LogisticRegressionCV`` with a ``PredefinedSplit``, so the inner folds keep duplicate groups together as
the saved split does). Scored *nested*: each fold's rows are predicted by a stacker fit, C choice
included, on the other folds only; never on the scored fold's labels. That needs three folds or more (two
to choose C in, one to score). The stacker written for the test rows is fit on every out-of-fold row and
reads each model's fold-averaged test log-probabilities.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import log_softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import PredefinedSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

CS = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse regularisation strengths tried in each fit (shipped data: 10-100)
MIN_FOLDS = 3  # nested: C is chosen on >= 2 folds without the scored one


def stack_features(logprobs: list[np.ndarray]) -> np.ndarray:
    """One (n, 10) array of log-probabilities (or logits) per model -> (n, 10 * n_models) features."""
    return np.concatenate([log_softmax(np.asarray(x, dtype=np.float64), axis=1) for x in logprobs], axis=1)


def fit_stacker(x: np.ndarray, y: np.ndarray, fold_of: np.ndarray, cs: tuple[float, ...] = CS) -> Pipeline:
    """Standardised features -> LogisticRegressionCV choosing C (log-loss) over the folds in ``fold_of``."""
    if len(np.unique(fold_of)) < 2:
        raise ValueError("fit_stacker needs rows of two folds or more to choose C")
    model = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=list(cs),
            l1_ratios=(0.0,),
            cv=PredefinedSplit(fold_of),
            scoring="neg_log_loss",
            max_iter=1000,
            use_legacy_attributes=False,
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(x, y)


def stacker_probs(model: Pipeline, x: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """(n, n_classes) probabilities; a class the stacker never saw gets probability 0."""
    out = np.zeros((len(x), n_classes))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def chosen_c(model: Pipeline) -> float:
    return float(np.ravel(model[-1].C_)[0])


def nested_stack(
    x: np.ndarray, y: np.ndarray, fold_of: np.ndarray, cs: tuple[float, ...] = CS
) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold predictions of the stacker itself: each fold's rows are predicted by a stacker fit (C
    chosen by CV over the remaining folds) without that fold's rows or labels. Returns (N, 10) probabilities
    and the C chosen for each fold."""
    folds = np.unique(fold_of)
    if len(folds) < MIN_FOLDS:
        raise ValueError(f"nested stacking needs {MIN_FOLDS} folds or more, got {len(folds)}")
    out = np.zeros((len(y), 10))
    cs_chosen = []
    for k in folds:
        fit, held = fold_of != k, fold_of == k
        model = fit_stacker(x[fit], y[fit], fold_of[fit], cs)
        out[held] = stacker_probs(model, x[held])
        cs_chosen.append(chosen_c(model))
    return out, cs_chosen


def model_shares(model: Pipeline, n_models: int) -> np.ndarray:
    """Each model's share of the stacker's absolute coefficients (on standardised features): how much the
    stacker leans on it, shown where the blends show weights. Sums to 1."""
    coef = np.abs(model[-1].coef_).reshape(-1, n_models, 10).sum(axis=(0, 2))
    return coef / coef.sum() if coef.sum() > 0 else np.full(n_models, 1.0 / n_models)
