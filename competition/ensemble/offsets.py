"""Offsets: per-class additive offsets on blended log-probabilities, chosen to maximise macro-F1 (the
argmax of the probabilities maximises accuracy, not macro-F1: a rare or often-confused class can gain F1
by being predicted a little more often).

Fitted on out-of-fold rows by coordinate ascent: a few deterministic sweeps over the classes, each class's
offset set to the best value of a fixed grid with the other offsets held. Judged *nested*: for each fold,
offsets fitted on the other folds' rows predict that fold's rows, so the gain is not the fitting rows' own
optimism. ``decide_offsets`` applies them only when that nested gain is at least MIN_GAIN.

Order with ``competition.priors`` (label shift): offsets are fitted on out-of-fold rows, in the training
priors' space; on test rows the prior correction comes first, then the offsets::

    labels = apply_offsets(np.log(correct_priors(probs_test, train_priors, test_priors)), offsets)

Without a detected shift the correction is the identity and that is all. With one, offsets fitted in the
training priors' space correct twice: on imbalanced training rows they learn to favour the rare classes,
and the prior correction has already moved the test posteriors towards them (bench/label_shift_synthetic.py:
balanced test macro-F1 0.67 corrected, 0.61 corrected + such offsets). Then fit them on the *corrected*
out-of-fold probabilities with ``sample_weight = test_priors[y] / train_priors[y]``, so the macro-F1 they
maximise is the one expected under the test priors::

    w = test_priors[y] / train_priors[y]
    decision = decide_offsets(np.log(correct_priors(probs_oof, train_priors, test_priors)), y, fold_of, w)

Pure functions of numpy arrays: no files, no printing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import log_softmax

from competition.metrics import macro_f1

GRID = np.round(np.linspace(-3.0, 3.0, 61), 10)  # candidate offsets in nats, step 0.1 (includes 0)
SWEEPS = 3  # coordinate-ascent passes over the classes (stops early when a pass changes nothing)
MIN_GAIN = 0.0005  # nested macro-F1 gain over plain argmax needed to apply the offsets


def _macro_f1_many(
    y: np.ndarray, preds: np.ndarray, n_classes: int, sample_weight: np.ndarray | None = None
) -> np.ndarray:
    """Macro-F1 of each row of ``preds`` (G, N) against ``y`` (N,), by (weighted) counting: the same value
    as scikit-learn's ``f1_score(average="macro", sample_weight=...)`` over the classes 0..n_classes-1 (a
    class with no true and no predicted row scores 0, as in ``competition.metrics.macro_f1``) without G
    calls into scikit-learn."""
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    wg = np.broadcast_to(w, preds.shape)
    cell = np.arange(len(preds))[:, None] * n_classes + preds  # (candidate, predicted class) bin of each row
    pred_n = np.bincount(cell.ravel(), weights=wg.ravel(), minlength=len(preds) * n_classes)
    hit = preds == y
    tp = np.bincount(cell[hit], weights=wg[hit], minlength=len(preds) * n_classes)
    true_n = np.bincount(y, weights=w, minlength=n_classes)
    denom = pred_n.reshape(-1, n_classes) + true_n
    f1 = np.divide(2.0 * tp.reshape(-1, n_classes), denom, out=np.zeros(denom.shape), where=denom > 0)
    return f1.mean(axis=1)


def _best_offset(
    scores: np.ndarray, y: np.ndarray, c: int, current: float, grid: np.ndarray, sample_weight: np.ndarray | None
) -> float:
    """The grid value for class c's offset with the highest macro-F1, the others held. A row predicts c
    exactly when its score for c plus the offset beats its best other class, so each candidate is one
    comparison, not a new argmax. Ties go to the value nearest the current one (no move without a gain)."""
    others = scores.copy()
    others[:, c] = -np.inf
    rival = others.argmax(axis=1)
    gap = others[np.arange(len(y)), rival] - scores[:, c]  # the offset c needs to win the row
    candidates = np.append(grid, current)
    preds = np.where(candidates[:, None] > gap[None, :], c, rival[None, :])
    f1 = _macro_f1_many(y, preds, scores.shape[1], sample_weight)
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - current))]])


def fit_offsets(
    logp: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    grid: np.ndarray = GRID,
    sweeps: int = SWEEPS,
) -> np.ndarray:
    """(C,) offsets maximising the (``sample_weight``-weighted) macro-F1 of argmax(logp + offsets) on the
    labelled rows (coordinate ascent from 0, classes in order, deterministic). Returned with mean 0: a common
    shift changes no argmax."""
    logp = log_softmax(np.asarray(logp, dtype=np.float64), axis=1)
    y = np.asarray(y)
    offsets = np.zeros(logp.shape[1])
    for _ in range(sweeps):
        before = offsets.copy()
        for c in range(logp.shape[1]):
            offsets[c] = 0.0  # scores without c's own offset: _best_offset adds each candidate
            offsets[c] = _best_offset(logp + offsets, y, c, before[c], grid, sample_weight)
        if np.array_equal(offsets, before):
            break
    return offsets - offsets.mean()


def apply_offsets(logp: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Labels argmax(log-probabilities + offsets)."""
    return (log_softmax(np.asarray(logp, dtype=np.float64), axis=1) + offsets).argmax(axis=1)


def nested_offsets(
    logp: np.ndarray, y: np.ndarray, fold_of: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Honest predictions: each fold's rows labelled with offsets fitted on the other folds' rows only.
    Returns the (N,) nested labels and the (n_folds, C) offsets, one row per fold in sorted fold order."""
    fold_of, y = np.asarray(fold_of), np.asarray(y)
    pred = np.empty(len(y), dtype=np.int64)
    per_fold = []
    for k in np.unique(fold_of):
        out = fold_of == k
        w = None if sample_weight is None else np.asarray(sample_weight)[~out]
        offsets = fit_offsets(logp[~out], y[~out], w)
        pred[out] = apply_offsets(logp[out], offsets)
        per_fold.append(offsets)
    return pred, np.array(per_fold)


def _score(y: np.ndarray, pred: np.ndarray, n_classes: int, sample_weight: np.ndarray | None) -> float:
    if sample_weight is None:
        return macro_f1(y, pred)  # the competition metric itself
    return float(_macro_f1_many(np.asarray(y), pred[None], n_classes, sample_weight)[0])


@dataclass(frozen=True)
class OffsetDecision:
    """Offsets fitted on all out-of-fold rows, their nested score, and whether to use them."""

    offsets: np.ndarray  # (C,) fitted on every labelled row
    nested_before: float  # macro-F1 of plain argmax (no fitting, so already honest)
    nested_after: float  # macro-F1 of the nested offset predictions
    applied: bool  # nested gain >= min_gain
    message: str  # one line for a report
    per_fold: np.ndarray | None = None  # (n_folds, C) the nested offsets, folds in sorted order

    def predict(self, logp: np.ndarray) -> np.ndarray:
        """Labels: with the offsets when applied, else plain argmax."""
        return apply_offsets(logp, self.offsets if self.applied else np.zeros_like(self.offsets))


def decide_offsets(
    logp: np.ndarray,
    y: np.ndarray,
    fold_of: np.ndarray,
    sample_weight: np.ndarray | None = None,
    min_gain: float = MIN_GAIN,
) -> OffsetDecision:
    """Fit offsets on all rows and apply them only if the nested macro-F1 gain over argmax is >= min_gain.
    ``sample_weight`` (e.g. test_prior[y] / train_prior[y] from ``competition.priors``) weights both the fit
    and the before/after scores."""
    n_classes = np.shape(logp)[1]
    before = _score(y, np.asarray(logp).argmax(axis=1), n_classes, sample_weight)
    nested_pred, per_fold = nested_offsets(logp, y, fold_of, sample_weight)
    after = _score(y, nested_pred, n_classes, sample_weight)
    applied = after - before >= min_gain
    offsets = fit_offsets(logp, y, sample_weight)
    message = (
        f"macro-F1 offsets {'applied' if applied else 'not applied'}: nested out-of-fold macro-F1 "
        f"{before:.4f} -> {after:.4f} ({after - before:+.4f}, needs {min_gain:+.4f}); "
        f"offsets {np.array2string(offsets, precision=2, separator=' ')}"
    )
    return OffsetDecision(offsets, before, after, applied, message, per_fold)
