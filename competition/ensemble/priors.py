"""Label shift: estimate the test rows' class proportions from the model's own predictions, decide whether
they differ from the training proportions, and correct the test probabilities for the difference.

The assumption is *label shift*: p(x | y) is the same on training and test rows, only p(y) moves. Steps:

1. Calibrate: bias-corrected temperature scaling (BCTS, Alexandari et al. 2020, "Maximum likelihood with
   bias-corrected calibration is hard-to-beat at label shift adaptation"), a temperature and one bias per
   class fitted on the out-of-fold log-probabilities by minimum NLL. EM below needs calibrated posteriors:
   an over-confident model biases its prior estimate.
2. Estimate: EM prior re-estimation (Saerens, Latinne and Decaestecker 2002) on the calibrated test
   probabilities, with a seeded bootstrap over the test rows for an interval.
3. Decide: ``detect_label_shift`` calls it a shift only when the interval excludes a training proportion
   by a margin.
4. Correct: multiply the posteriors by test/train prior ratios and renormalise (``correct_priors``).

``reweighted_macro_f1`` scores out-of-fold predictions as if the classes had the estimated test
proportions (weights test_prior[y] / train_prior[y]): a per-class recall does not move under label shift,
the precisions do, and macro-F1 with them.

Order with ``competition.offsets`` (macro-F1 decision offsets): offsets are fitted on out-of-fold rows, in
the training priors' space; on test rows the prior correction comes first, then the offsets. When a shift is
corrected, fit the offsets on the corrected out-of-fold rows weighted by test_prior[y] / train_prior[y]
instead, else they repeat the correction (see competition/offsets.py).

Pure functions of numpy arrays: no files, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, logsumexp, softmax
from sklearn.metrics import f1_score

EPS = 1e-6  # floor of an estimated prior: EM must never set a class to exactly 0 (it could not come back)
LOGP_FLOOR = -700.0  # a log-probability of -inf is read as this, so the NLL and its gradient stay finite
N_BOOT = 200  # bootstrap resamples of the test rows for the prior interval
MARGIN = 0.01  # how far (absolute proportion) the interval must clear a training proportion to call a shift
INV_T_BOUNDS = (1e-3, 1e3)  # inverse temperature range searched by BCTS


def class_priors(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Proportions of the classes 0..n_classes-1 in ``y`` (floored at EPS, so none is exactly 0)."""
    counts = np.bincount(np.asarray(y), minlength=n_classes).astype(np.float64)
    return _normalise(np.maximum(counts / counts.sum(), EPS))


def _normalise(p: np.ndarray) -> np.ndarray:
    return p / p.sum(axis=-1, keepdims=True)


def _as_logp(logp: np.ndarray) -> np.ndarray:
    # log_softmax accepts logits too: a per-row constant changes nothing after the softmax
    return np.maximum(log_softmax(np.asarray(logp, dtype=np.float64), axis=1), LOGP_FLOOR)


# ---- 1. calibration: bias-corrected temperature scaling -----------------------------------------------------


def _bcts_nll(params: np.ndarray, logp: np.ndarray, onehot: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean NLL of softmax(a * logp + b) and its gradient in (a, b). Convex in (a, b): a is the inverse
    temperature, which keeps the problem convex (the temperature itself would not)."""
    a, b = params[0], params[1:]
    z = a * logp + b
    lse = logsumexp(z, axis=1)
    nll = float(np.mean(lse - (z * onehot).sum(axis=1)))
    g = (np.exp(z - lse[:, None]) - onehot) / len(z)  # d NLL / d z
    return nll, np.concatenate([[np.sum(g * logp)], g.sum(axis=0)])


def fit_bcts(logp: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Temperature T and per-class biases b (mean 0) minimising the NLL of softmax(logp / T + b) on the
    labelled rows (out-of-fold log-probabilities or logits). L-BFGS-B from T=1, b=0."""
    logp = _as_logp(logp)
    onehot = np.eye(logp.shape[1])[np.asarray(y)]
    x0 = np.concatenate([[1.0], np.zeros(logp.shape[1])])
    bounds = [INV_T_BOUNDS] + [(None, None)] * logp.shape[1]
    res = minimize(_bcts_nll, x0, args=(logp, onehot), jac=True, method="L-BFGS-B", bounds=bounds)
    b = res.x[1:] - res.x[1:].mean()  # the softmax ignores a common shift: centre it for a unique answer
    return float(1.0 / res.x[0]), b


def apply_bcts(logp: np.ndarray, temperature: float, bias: np.ndarray) -> np.ndarray:
    """Calibrated probabilities softmax(logp / T + b)."""
    return softmax(_as_logp(logp) / temperature + bias, axis=1)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels (probabilities floored at 1e-300)."""
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y)), y], 1e-300))))


# ---- 2. estimate: EM prior re-estimation, with a bootstrap interval -----------------------------------------


def correct_priors(probs: np.ndarray, train_priors: np.ndarray, test_priors: np.ndarray) -> np.ndarray:
    """Posteriors under the test priors: p(y|x) * test[y] / train[y], renormalised per row (Bayes' rule
    with p(x|y) unchanged). Equal priors give back the probabilities (up to rounding)."""
    ratio = np.asarray(test_priors, dtype=np.float64) / np.maximum(train_priors, EPS)
    return _normalise(np.asarray(probs, dtype=np.float64) * ratio)


def em_priors(
    probs: np.ndarray,
    train_priors: np.ndarray,
    tol: float = 1e-6,
    max_iter: int = 1000,
    weights: np.ndarray | None = None,
    init: np.ndarray | None = None,
) -> np.ndarray:
    """Test priors by EM (Saerens et al. 2002) from calibrated test posteriors ``probs`` that reflect
    ``train_priors``. E-step: correct the posteriors to the current priors; M-step: the priors are the
    (``weights``-weighted) mean corrected posterior. Each prior is floored at EPS so a class is never
    collapsed to 0. Stops when no prior moves by more than ``tol``."""
    w = np.full(len(probs), 1.0 / len(probs)) if weights is None else np.asarray(weights) / np.sum(weights)
    q = np.asarray(probs, dtype=np.float64) / np.maximum(train_priors, EPS)  # p(x|y) up to a row factor
    priors = np.asarray(train_priors if init is None else init, dtype=np.float64)
    for _ in range(max_iter):
        # mean of the corrected posteriors q * priors / (q @ priors), as two matrix-vector products
        new = _normalise(np.maximum(priors * ((w / np.maximum(q @ priors, 1e-300)) @ q), EPS))
        done = np.max(np.abs(new - priors)) < tol
        priors = new
        if done:
            break
    return priors


def prior_interval(
    probs: np.ndarray,
    train_priors: np.ndarray,
    n_boot: int = N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
    tol: float = 1e-4,
    estimate: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap (1 - alpha) interval of each EM prior, resampling the test rows with a seeded
    generator. Resamples are drawn as multinomial counts (row weights), and each EM starts from the full
    sample's ``estimate`` when given, which is where it converges near (fewer iterations)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(probs), np.full(len(probs), 1.0 / len(probs)), size=n_boot)
    boots = np.array([em_priors(probs, train_priors, tol=tol, weights=c, init=estimate) for c in counts])
    lower, upper = np.quantile(boots, [alpha / 2, 1 - alpha / 2], axis=0)
    return lower, upper


# ---- 3. decide ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelShift:
    """The label-shift decision: priors, their bootstrap interval, and whether to correct."""

    train_priors: np.ndarray  # (C,) class proportions of the labelled (out-of-fold) rows
    test_priors: np.ndarray  # (C,) EM estimate on the test rows
    lower: np.ndarray  # (C,) bootstrap interval of test_priors
    upper: np.ndarray
    shifted: bool  # the interval clears a training proportion by the margin for at least one class
    message: str  # one line for a report

    def correct(self, probs: np.ndarray) -> np.ndarray:
        """The test probabilities corrected to the estimated priors, or unchanged when there is no shift."""
        return correct_priors(probs, self.train_priors, self.test_priors) if self.shifted else probs


def detect_label_shift(
    probs_test: np.ndarray,
    train_priors: np.ndarray,
    margin: float = MARGIN,
    n_boot: int = N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
) -> LabelShift:
    """EM estimate of the test priors from calibrated test probabilities, its bootstrap interval, and the
    decision: shifted when, for some class, the interval lies more than ``margin`` above or below the
    training proportion."""
    train_priors = np.asarray(train_priors, dtype=np.float64)
    est = em_priors(probs_test, train_priors)
    lower, upper = prior_interval(probs_test, train_priors, n_boot, alpha, seed, estimate=est)
    away = np.maximum(lower - train_priors, train_priors - upper)  # > 0: the interval excludes train
    shifted = bool(np.any(away > margin))
    worst = int(np.argmax(np.abs(est - train_priors)))
    message = (
        f"label shift {'detected' if shifted else 'not detected'}: largest move class {worst} "
        f"{train_priors[worst]:.3f} -> {est[worst]:.3f} "
        f"({100 * (1 - alpha):.0f}% interval {lower[worst]:.3f}-{upper[worst]:.3f}, margin {margin:g}); "
        f"{'correcting' if shifted else 'no correction'}"
    )
    return LabelShift(train_priors, est, lower, upper, shifted, message)


def calibrated_label_shift(
    logp_oof: np.ndarray, y: np.ndarray, logp_test: np.ndarray, **kwargs
) -> tuple[LabelShift, np.ndarray]:
    """The whole chain on a blend: BCTS fitted on the out-of-fold rows, applied to the test rows, then
    ``detect_label_shift`` (kwargs go to it). Returns the decision and the calibrated test probabilities
    (not yet corrected: call ``decision.correct`` on them)."""
    temperature, bias = fit_bcts(logp_oof, y)
    probs_test = apply_bcts(logp_test, temperature, bias)
    train_priors = class_priors(y, probs_test.shape[1])
    return detect_label_shift(probs_test, train_priors, **kwargs), probs_test


# ---- 4. score under the test priors -------------------------------------------------------------------------


def reweighted_macro_f1(y: np.ndarray, pred: np.ndarray, train_priors: np.ndarray, test_priors: np.ndarray) -> float:
    """Macro-F1 of labelled rows weighted w_i = test[y_i] / train[y_i]: an estimate of the macro-F1 the same
    decision rule would get on rows with the test class proportions (label shift: recalls stay, precisions
    move)."""
    y = np.asarray(y)
    w = np.asarray(test_priors)[y] / np.maximum(np.asarray(train_priors)[y], EPS)
    labels = np.arange(len(train_priors))
    return float(f1_score(y, pred, labels=labels, average="macro", sample_weight=w, zero_division=0))
