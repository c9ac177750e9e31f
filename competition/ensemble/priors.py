"""Label shift: estimate the test rows' class proportions from the model's own predictions, decide whether
they differ from the training proportions, and correct the test probabilities for the difference.

The assumption is *label shift*: p(x | y) is the same on training and test rows, only p(y) moves. Steps:

1. Calibrate: bias-corrected temperature scaling (BCTS, Alexandari et al. 2020, "Maximum likelihood with
   bias-corrected calibration is hard-to-beat at label shift adaptation"), a temperature and one bias per
   class fitted on the out-of-fold log-probabilities by minimum NLL. EM below needs calibrated posteriors:
   an over-confident model biases its prior estimate.
2. Estimate: EM prior re-estimation (Saerens, Latinne and Decaestecker 2002) on the calibrated test
   probabilities, with a seeded bootstrap over the test rows for an interval.

   Per member, not on the average. The written test probabilities average K fold models (or S full-data
   refits); that average is less confident than any one model, while each out-of-fold row comes from one
   model, so a calibration fitted out of fold and applied to the average leaves it under-confident, and EM
   on under-confident posteriors overshoots the rare training classes (measured on the label-shift copies:
   0.16-0.19 for a true 0.10). So the estimate is made per *member*: each model of the blend, per fold
   (``fold_members``). Fold model k's test probabilities are calibrated with BCTS fitted on fold k's own
   out-of-fold rows -- the rows that same model predicted, so calibration and test see one model -- and EM
   runs against the class proportions of those rows; the estimate is the mean of the members' estimates
   (``member_priors``). A full-data refit has no rows of its own: it is calibrated on every out-of-fold row.

   Members are the blend's models, not the blend itself. The blend of each fold's models was measured too
   (the equal and fitted blends' weights, or the stacker, applied to fold k's models alone): through the
   stacker, whose inputs are out-of-fold log-probabilities of imbalanced rows, it missed the rare classes
   by 0.12-0.18 on the imbalanced-training copies, where the per-model members missed by 0.04-0.05. The
   proportions are a property of the test rows, which every calibrated model estimates; more members also
   average out one model's calibration noise (a rare class has a handful of rows in one fold).

   The interval (``prior_interval``) is a bootstrap of that mean: each resample draws test rows once and
   gives the *same* rows to every member, runs EM per member and averages. The members predict the same
   test rows, so their errors are strongly correlated; an interval per member (then averaged) would be
   the interval of one member, and independent resamples per member would treat correlated estimates as
   independent and make the interval too narrow. Resampling the rows jointly keeps the correlation and is
   the interval of the quantity used. It covers the test rows' sampling noise only (not the noise of the
   calibration fits).
3. Decide: ``detect_label_shift`` calls it a shift only when the interval excludes a training proportion
   by a margin.
4. Correct: multiply the posteriors by test/train prior ratios and renormalise (``correct_priors``); what is
   corrected is the written blend's test probabilities, calibrated by BCTS fitted on all its out-of-fold rows.

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

from competition.metrics import macro_f1

EPS = 1e-6  # floor of an estimated prior: EM must never set a class to exactly 0 (it could not come back)
LOGP_FLOOR = -700.0  # a log-probability of -inf is read as this, so the NLL and its gradient stay finite
N_BOOT = 200  # bootstrap resamples of the test rows for the prior interval
MARGIN = 0.01  # how far (absolute proportion) the interval must clear a training proportion to call a shift
INV_T_BOUNDS = (1e-3, 1e3)  # inverse temperature range searched by BCTS
PROB_FLOOR = 1e-12  # probabilities are floored here before the log (a blend can hold exact zeros)


def class_priors(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Proportions of the classes 0..n_classes-1 in ``y`` (floored at EPS, so none is exactly 0)."""
    counts = np.bincount(np.asarray(y), minlength=n_classes).astype(np.float64)
    return _normalise(np.maximum(counts / counts.sum(), EPS))


def log_probs(p: np.ndarray) -> np.ndarray:
    """The log of probabilities floored at ``PROB_FLOOR`` (the input BCTS is fitted and applied on)."""
    return np.log(np.maximum(p, PROB_FLOOR))


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


def _members(probs: np.ndarray, train_priors: np.ndarray, member_train_priors: np.ndarray | None):
    """``probs`` as (S, M, C) members and their (S, C) training priors: one (M, C) array is one member; each
    member reflects ``train_priors`` unless ``member_train_priors`` says otherwise."""
    probs = np.asarray(probs, dtype=np.float64)
    members = probs[None] if probs.ndim == 2 else probs
    if member_train_priors is None:
        member_train_priors = np.broadcast_to(train_priors, (len(members), len(train_priors)))
    member_train_priors = np.asarray(member_train_priors, dtype=np.float64)
    if member_train_priors.shape != (len(members), members.shape[2]):
        raise ValueError(f"member_train_priors {member_train_priors.shape} do not fit members {members.shape}")
    return members, member_train_priors


def member_priors(
    members: np.ndarray,
    member_train_priors: np.ndarray,
    tol: float = 1e-6,
    weights: np.ndarray | None = None,
    init: np.ndarray | None = None,
) -> np.ndarray:
    """The mean of the members' EM estimates: ``members`` (S, M, C) calibrated test posteriors of S models
    of the same test rows, member s reflecting ``member_train_priors[s]``; ``weights``: one row weighting
    for every member; ``init`` (S, C): where each member's EM starts."""
    starts = member_train_priors if init is None else init
    return np.mean(
        [
            em_priors(p, t, tol=tol, weights=weights, init=i)
            for p, t, i in zip(members, member_train_priors, starts, strict=True)
        ],
        axis=0,
    )


def prior_interval(
    probs: np.ndarray,
    train_priors: np.ndarray,
    n_boot: int = N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
    tol: float = 1e-4,
    estimate: np.ndarray | None = None,
    member_train_priors: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap (1 - alpha) interval of the EM prior estimate (the mean over members when
    ``probs`` is (S, M, C)), resampling the test rows with a seeded generator; each resample gives the same
    rows to every member. Resamples are drawn as multinomial counts (row weights), and each EM starts from
    the full sample's ``estimate`` ((C,) or one per member (S, C)) when given, near where it converges."""
    members, member_train = _members(probs, train_priors, member_train_priors)
    init = None if estimate is None else np.broadcast_to(estimate, member_train.shape)
    n_rows = members.shape[1]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot)
    boots = np.array([member_priors(members, member_train, tol=tol, weights=c, init=init) for c in counts])
    lower, upper = np.quantile(boots, [alpha / 2, 1 - alpha / 2], axis=0)
    return lower, upper


# ---- 3. decide ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelShift:
    """The label-shift decision: priors, their bootstrap interval, and whether to correct."""

    train_priors: np.ndarray  # (C,) class proportions of the labelled (out-of-fold) rows
    test_priors: np.ndarray  # (C,) EM estimate on the test rows (mean over the members)
    lower: np.ndarray  # (C,) bootstrap interval of test_priors
    upper: np.ndarray
    shifted: bool  # the interval clears a training proportion by the margin for at least one class
    message: str  # one line for a report
    members: int = 1  # how many models' estimates were averaged

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
    member_train_priors: np.ndarray | None = None,
) -> LabelShift:
    """EM estimate of the test priors from calibrated test probabilities -- (M, C), or (S, M, C) for S
    members whose estimates are averaged, member s reflecting ``member_train_priors[s]`` (default
    ``train_priors``) -- its bootstrap interval, and the decision: shifted when, for some class, the
    interval lies more than ``margin`` above or below the training proportion ``train_priors``."""
    train_priors = np.asarray(train_priors, dtype=np.float64)
    members, member_train = _members(probs_test, train_priors, member_train_priors)
    per_member = np.array([em_priors(p, t) for p, t in zip(members, member_train, strict=True)])
    est = per_member.mean(axis=0)
    lower, upper = prior_interval(
        members, train_priors, n_boot, alpha, seed, estimate=per_member, member_train_priors=member_train
    )
    away = np.maximum(lower - train_priors, train_priors - upper)  # > 0: the interval excludes train
    shifted = bool(np.any(away > margin))
    worst = int(np.argmax(np.abs(est - train_priors)))
    over = f" (mean of {len(members)} models' estimates)" if len(members) > 1 else ""
    message = (
        f"label shift {'detected' if shifted else 'not detected'}: largest move class {worst} "
        f"{train_priors[worst]:.3f} -> {est[worst]:.3f}{over} "
        f"({100 * (1 - alpha):.0f}% interval {lower[worst]:.3f}-{upper[worst]:.3f}, margin {margin:g}); "
        f"{'correcting' if shifted else 'no correction'}"
    )
    return LabelShift(train_priors, est, lower, upper, shifted, message, len(members))


@dataclass(frozen=True)
class Member:
    """One model that predicts the test rows, and the labelled rows its calibration is fitted on: for fold
    model k of a cv run, its out-of-fold rows (fold k's validation rows, which that very model predicted);
    for a full-data refit, every out-of-fold row of its model."""

    logp_oof: np.ndarray  # (n, C) log-probabilities (or logits) of the labelled rows
    y: np.ndarray  # (n,) their labels
    logp_test: np.ndarray  # (M, C) log-probabilities (or logits) of the test rows


@dataclass(frozen=True)
class MemberCalibration:
    """Each member's BCTS calibration and what it gives."""

    temperatures: np.ndarray  # (S,)
    biases: np.ndarray  # (S, C)
    train_priors: np.ndarray  # (S, C) class proportions of the rows each calibration was fitted on
    y: list[np.ndarray]  # member s's labels
    cal_oof: list[np.ndarray]  # member s's calibrated probabilities of its own labelled rows
    cal_test: np.ndarray  # (S, M, C) calibrated test probabilities of each member


def calibrate_members(members: list[Member]) -> MemberCalibration:
    """BCTS per member, fitted on its own labelled rows and applied to its test rows."""
    n_classes = members[0].logp_test.shape[1]
    temps, biases, priors, cal_oof, cal_test = [], [], [], [], []
    for m in members:
        temperature, bias = fit_bcts(m.logp_oof, m.y)
        temps.append(temperature)
        biases.append(bias)
        priors.append(class_priors(m.y, n_classes))
        cal_oof.append(apply_bcts(m.logp_oof, temperature, bias))
        cal_test.append(apply_bcts(m.logp_test, temperature, bias))
    labels = [np.asarray(m.y) for m in members]
    return MemberCalibration(np.array(temps), np.array(biases), np.array(priors), labels, cal_oof, np.array(cal_test))


def calibrated_label_shift(
    members: list[Member], train_priors: np.ndarray, **kwargs
) -> tuple[LabelShift, MemberCalibration]:
    """The whole estimate: ``calibrate_members``, then ``detect_label_shift`` on the calibrated members (each
    reflecting the proportions of its own rows), decided against ``train_priors`` (kwargs go to it). Returns
    the decision and the calibrations."""
    cal = calibrate_members(members)
    shift = detect_label_shift(cal.cal_test, train_priors, member_train_priors=cal.train_priors, **kwargs)
    return shift, cal


def fold_members(
    oof: dict[str, np.ndarray], test: dict[str, np.ndarray], y: np.ndarray, fold_of: np.ndarray, refits: bool = False
) -> list[Member]:
    """The members of a set of cv-run models: ``oof`` {model: (N, C) out-of-fold logits}, ``test`` {model:
    (S, M, C) test logits}. Fold models (S = the number of folds, stacked in the folds' sorted order) are
    each paired with their own fold's rows; full-data refits (``refits``) with every row."""
    folds = np.unique(fold_of)
    out = []
    for m, logits in oof.items():
        if not refits and len(test[m]) != len(folds):
            raise ValueError(f"{m}: {len(test[m])} test predictors for {len(folds)} folds")
        for s, logits_test in enumerate(test[m]):
            rows = np.ones(len(y), dtype=bool) if refits else fold_of == folds[s]
            out.append(Member(_as_logp(logits[rows]), np.asarray(y)[rows], _as_logp(logits_test)))
    return out


# ---- 4. score under the test priors -------------------------------------------------------------------------


def reweighted_macro_f1(y: np.ndarray, pred: np.ndarray, train_priors: np.ndarray, test_priors: np.ndarray) -> float:
    """Macro-F1 of labelled rows weighted w_i = test[y_i] / train[y_i]: an estimate of the macro-F1 the same
    decision rule would get on rows with the test class proportions (label shift: recalls stay, precisions
    move)."""
    y = np.asarray(y)
    return macro_f1(y, pred, np.asarray(test_priors)[y] / np.maximum(np.asarray(train_priors)[y], EPS))
