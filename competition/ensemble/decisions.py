"""Decisions: turn a blend's probabilities into the labels that score best on macro-F1, honestly.

Two steps after the blend, each applied only when it pays:

1. Label shift (``priors.py``): estimate the test rows' class proportions by EM per member (each fold model of
   each blended model, calibrated by BCTS fitted on that fold's own out-of-fold rows), averaged,
   with a bootstrap interval; when the interval excludes the training proportions, correct the written test
   probabilities (calibrated by BCTS fitted on every out-of-fold row) to the estimate. The out-of-fold score is
   then also reported re-weighted to the estimated test proportions: the plain one describes rows with the
   training proportions, which the test does not have; and, as the estimate of the test score, plus what the
   written labels, an average of K fold models, are expected to gain over one fold model's
   (``confidence.fold_ensemble_gain``): each out-of-fold row is one model's.
2. Macro-F1 offsets (``offsets.py``): per-class additive offsets on the log-probabilities, fitted on the
   out-of-fold rows and applied only when their nested gain (fold k's offsets fitted without fold k) is at
   least ``offsets.MIN_GAIN``. After a corrected shift they are fitted on the corrected out-of-fold
   probabilities weighted to the test proportions, else they would repeat the correction.

Without a detected shift and without a paying offset nothing changes: the probabilities come back as given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import softmax

from competition.ensemble.confidence import fold_ensemble_gain
from competition.ensemble.offsets import OffsetDecision, decide_offsets
from competition.ensemble.priors import (
    PROB_FLOOR,
    LabelShift,
    Member,
    MemberCalibration,
    apply_bcts,
    calibrate_members,
    class_priors,
    correct_priors,
    detect_label_shift,
    em_priors,
    fit_bcts,
    log_probs,
    reweighted_macro_f1,
)
from competition.metrics import macro_f1

MODES = ("auto", "off")
# EM's estimate is only as good as the model: below this out-of-fold macro-F1, or when EM on the model's own
# out-of-fold rows misses their known proportions by more than SELF_CHECK, no shift is estimated.
MIN_F1_FOR_SHIFT = 0.5
SELF_CHECK = 0.02


@dataclass(frozen=True)
class Decisions:
    """What the decision steps did, and the probabilities after them."""

    oof_probs: np.ndarray  # (N, 10) honest: nested offsets per fold, in the space the test rows are decided in
    test_probs: np.ndarray  # (M, 10)
    shift: LabelShift | None = None  # None: the step was off
    offsets: OffsetDecision | None = None
    oof_f1: float = float("nan")  # macro-F1 of ``oof_probs`` on the out-of-fold rows
    reweighted_f1: float | None = None  # the same, re-weighted to the estimated test proportions (on a shift)
    fold_gain: float | None = None  # what the fold models' average is expected to gain over one (on a shift)
    estimated_test_f1: float | None = None  # the two added: the estimate of the test macro-F1 (on a shift)
    lines: list[str] = field(default_factory=list)  # one line per step, for the console

    @property
    def changed(self) -> bool:
        return bool((self.shift is not None and self.shift.shifted) or (self.offsets and self.offsets.applied))

    def manifest(self) -> dict:
        out: dict = {"changed": self.changed, "oof_macro_f1": self.oof_f1}
        if self.shift is not None:
            s = self.shift
            out["label_shift"] = {
                "shifted": s.shifted,
                "train_priors": np.round(s.train_priors, 4).tolist(),
                "test_priors": np.round(s.test_priors, 4).tolist(),
                "lower": np.round(s.lower, 4).tolist(),
                "upper": np.round(s.upper, 4).tolist(),
                "reweighted_oof_macro_f1": self.reweighted_f1,
                "fold_ensemble_gain": self.fold_gain,
                "estimated_test_macro_f1": self.estimated_test_f1,
            }
        if self.offsets is not None:
            o = self.offsets
            out["offsets"] = {
                "applied": o.applied,
                "offsets": np.round(o.offsets, 4).tolist(),
                "nested_before": o.nested_before,
                "nested_after": o.nested_after,
            }
        return out


def _unreliable(cal_oof: np.ndarray, y: np.ndarray) -> str | None:
    """Why the blend cannot be trusted to estimate class proportions, or None."""
    f1 = macro_f1(y, cal_oof.argmax(axis=1))
    if f1 < MIN_F1_FOR_SHIFT:
        return f"the blend's out-of-fold macro-F1 {f1:.3f} is below {MIN_F1_FOR_SHIFT} (too weak to count classes)"
    return None


def _reliable_members(cal: MemberCalibration) -> tuple[list[int], str]:
    """The members trusted to estimate class proportions, and a note on those left out: a member whose
    calibrated macro-F1 on its own rows is below ``MIN_F1_FOR_SHIFT``, or whose EM on those rows, whose
    proportions are known, misses them by more than ``SELF_CHECK``."""
    weak, missing, keep = 0, 0, []
    for i, (p, y, t) in enumerate(zip(cal.cal_oof, cal.y, cal.train_priors, strict=True)):
        if macro_f1(y, p.argmax(axis=1)) < MIN_F1_FOR_SHIFT:
            weak += 1
        elif np.abs(em_priors(p, t) - t).max() > SELF_CHECK:
            missing += 1
        else:
            keep.append(i)
    notes = [f"{weak} with macro-F1 below {MIN_F1_FOR_SHIFT} on their own rows"] if weak else []
    if missing:
        notes.append(f"{missing} whose estimate misses their own rows' known proportions by more than {SELF_CHECK}")
    if not notes:
        return keep, ""
    return keep, f"{len(cal.y) - len(keep)} of {len(cal.y)} models left out of the estimate: " + "; ".join(notes)


def decide(
    oof_probs: np.ndarray,
    test_probs: np.ndarray,
    y: np.ndarray,
    fold_of: np.ndarray,
    label_shift: str = "auto",
    offsets: str = "auto",
    members: list[Member] | None = None,
    fold_test_probs: np.ndarray | None = None,
) -> Decisions:
    """Run the label-shift and offset steps (each ``auto`` or ``off``) on a blend's honest out-of-fold
    probabilities (N, 10) and its test probabilities (M, 10). ``members``: the models whose label-shift
    estimates are averaged (``priors.fold_members``); without them the blend itself, calibrated on every
    out-of-fold row, is the one member. ``fold_test_probs``: (K, M, 10) each fold model's share of the test
    blend (``blend.candidate_fold_probs``), for the fold models' expected gain in the estimate (none without)."""
    for name, mode in (("label_shift", label_shift), ("offsets", offsets)):
        if mode not in MODES:
            raise ValueError(f"unknown {name} mode {mode!r}")
    n_classes = oof_probs.shape[1]
    oof, test, weight, shift, lines, fold_probs = oof_probs, test_probs, None, None, [], None
    if label_shift == "auto":
        logp_oof = log_probs(oof_probs)
        temperature, bias = fit_bcts(logp_oof, y)  # calibrated first: EM needs calibrated posteriors
        cal_oof = apply_bcts(logp_oof, temperature, bias)
        cal_test = apply_bcts(log_probs(test_probs), temperature, bias)
        train_priors = class_priors(y, n_classes)
        if members is None:
            members = [Member(logp_oof, np.asarray(y), log_probs(test_probs))]
        calibrated = calibrate_members(members)  # each member like its own out-of-fold rows
        keep, note = _reliable_members(calibrated)
        shift, reason = None, _unreliable(cal_oof, y) or ("no model is left to estimate with" if not keep else None)
        if note:
            lines.append(f"label shift: {note}")
        if reason:
            lines.append(f"label shift not estimated: {reason}")
        else:
            cal_members, member_train = calibrated.cal_test[keep], calibrated.train_priors[keep]
            shift = detect_label_shift(cal_members, train_priors, member_train_priors=member_train)
            lines.append(shift.message)
        if shift is not None and shift.shifted:
            train, est = shift.train_priors, shift.test_priors
            oof, test = correct_priors(cal_oof, train, est), correct_priors(cal_test, train, est)
            weight = est[y] / np.maximum(train[y], PROB_FLOOR)  # each row as the test proportions would weigh it
            if fold_test_probs is not None:  # each fold model's share, decided as the written blend is
                folds = [
                    correct_priors(apply_bcts(log_probs(f), temperature, bias), train, est) for f in fold_test_probs
                ]
                fold_probs = np.stack(folds)  # (K, M, 10)
    decision = None
    if offsets == "auto":
        logp_oof = log_probs(oof)  # a new array: shifted in place below
        decision = decide_offsets(logp_oof, y, fold_of, weight)
        lines.append(decision.message)
        if decision.applied:
            folds = np.unique(fold_of)  # per_fold rows are in this (sorted) order
            shifted_oof = logp_oof
            for k, off in zip(folds, decision.per_fold, strict=True):
                shifted_oof[fold_of == k] += off  # fold k decided by offsets that never saw its labels
            oof = softmax(shifted_oof, axis=1)
            test = softmax(log_probs(test) + decision.offsets, axis=1)
    pred = oof.argmax(axis=1)
    plain, reweighted, gain, estimated = macro_f1(y, pred), None, None, None
    if shift is not None and shift.shifted:
        reweighted = estimated = reweighted_macro_f1(y, pred, shift.train_priors, shift.test_priors)
        lines.append(
            f"out-of-fold macro-F1 re-weighted to the estimated test proportions: {reweighted:.4f} "
            f"(plain {plain:.4f}: the out-of-fold rows have the training proportions)"
        )
        if fold_probs is not None and len(fold_probs) > 1:
            shifts = decision.offsets if decision is not None and decision.applied else 0.0
            fold_preds = (log_probs(fold_probs) + shifts).argmax(axis=2)  # (K, M)
            gain = fold_ensemble_gain(test, test.argmax(axis=1), fold_preds)
            estimated = reweighted + gain
            lines.append(
                f"estimated test macro-F1 {estimated:.4f}: that, plus {gain:+.4f} the written labels, an average of "
                f"{len(fold_probs)} fold models, are expected to gain over one fold model's (each out-of-fold row is "
                "one model's)"
            )
    return Decisions(oof, test, shift, decision, plain, reweighted, gain, estimated, lines)
