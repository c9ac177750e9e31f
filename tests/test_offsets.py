"""Macro-F1 decision offsets (competition/offsets.py), and their composition with the label-shift
correction of competition/priors.py, on synthetic Gaussian data (see tests/test_priors.py)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score
from test_priors import UNIFORM, C, gaussians, sample

from competition.ensemble.offsets import _macro_f1_many, apply_offsets, decide_offsets, fit_offsets, nested_offsets
from competition.ensemble.priors import class_priors, correct_priors, detect_label_shift
from competition.metrics import macro_f1

IMBALANCED = np.linspace(40, 800, C) / np.linspace(40, 800, C).sum()


def folds(n: int, k: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def test_counting_macro_f1_matches_the_metric():
    rng = np.random.default_rng(0)
    y = rng.integers(0, C - 1, 400)  # class 9 never true: the zero-division case
    preds = rng.integers(0, C, (4, 400))
    preds[0, :200] = y[:200]
    preds[1] = np.minimum(preds[1], 7)  # classes 8 and 9 never predicted
    np.testing.assert_allclose(_macro_f1_many(y, preds, C), [macro_f1(y, p) for p in preds], atol=1e-12)
    w = rng.uniform(0.2, 3.0, len(y))
    weighted = [f1_score(y, p, labels=np.arange(C), average="macro", sample_weight=w, zero_division=0) for p in preds]
    np.testing.assert_allclose(_macro_f1_many(y, preds, C, w), weighted, atol=1e-12)


def test_offsets_improve_macro_f1_on_an_imbalanced_problem():
    means = gaussians(sep=1.2)
    logp, y = sample(means, IMBALANCED, 2000, IMBALANCED, seed=1)
    fresh, y_fresh = sample(means, IMBALANCED, 4000, IMBALANCED, seed=2)  # same distribution, unseen rows
    offsets = fit_offsets(logp, y)
    assert abs(offsets.mean()) < 1e-12 and np.array_equal(offsets, fit_offsets(logp, y))  # centred, deterministic
    assert macro_f1(y_fresh, apply_offsets(fresh, offsets)) > macro_f1(y_fresh, fresh.argmax(axis=1)) + 0.01
    decision = decide_offsets(logp, y, folds(len(y)))
    assert decision.applied, decision.message
    assert decision.nested_after >= decision.nested_before + 0.0005
    np.testing.assert_array_equal(decision.predict(fresh), apply_offsets(fresh, decision.offsets))


def test_the_scored_folds_labels_are_never_used_for_its_offsets():
    logp, y = sample(gaussians(sep=1.2), IMBALANCED, 1500, IMBALANCED, seed=3)
    fold_of = folds(len(y))
    pred, per_fold = nested_offsets(logp, y, fold_of)
    garbage = y.copy()
    scored = fold_of == 0
    garbage[scored] = np.random.default_rng(4).integers(0, C, scored.sum())
    pred_g, per_fold_g = nested_offsets(logp, garbage, fold_of)
    np.testing.assert_array_equal(pred_g[scored], pred[scored])
    np.testing.assert_array_equal(per_fold_g[0], per_fold[0])
    assert not np.array_equal(per_fold_g[1:], per_fold[1:])  # the other folds do fit on fold 0's labels


def test_offsets_not_applied_without_enough_nested_gain():
    logp, y = sample(gaussians(sep=1.2), IMBALANCED, 1000, IMBALANCED, seed=5)
    decision = decide_offsets(logp, y, folds(len(y)), min_gain=1.0)
    assert not decision.applied and "not applied" in decision.message
    assert np.any(decision.offsets != 0)  # fitted, but held back
    np.testing.assert_array_equal(decision.predict(logp), logp.argmax(axis=1))


def test_without_label_shift_the_correction_adds_nothing_to_the_offsets():
    means = gaussians(sep=2.0)
    oof, y = sample(means, UNIFORM, 1500, UNIFORM, seed=6)
    test, _ = sample(means, UNIFORM, 3000, UNIFORM, seed=7)
    offsets = fit_offsets(oof, y)
    assert np.any(offsets != 0)
    probs = np.exp(test)
    alone = apply_offsets(test, offsets)
    # equal train/test priors: the correction is the identity, so offsets after it equal offsets alone
    np.testing.assert_array_equal(apply_offsets(np.log(correct_priors(probs, UNIFORM, UNIFORM)), offsets), alone)
    # and the decision step does not correct at all when it finds no shift
    shift = detect_label_shift(probs, UNIFORM, n_boot=50)
    assert not shift.shifted, shift.message
    np.testing.assert_array_equal(apply_offsets(np.log(shift.correct(probs)), offsets), alone)


def test_under_label_shift_offsets_fitted_in_the_test_priors_space_do_not_correct_twice():
    means = gaussians(sep=1.2)
    oof, y = sample(means, IMBALANCED, 2000, IMBALANCED, seed=10)
    test, y_test = sample(means, UNIFORM, 3000, IMBALANCED, seed=20)  # balanced test rows, same model
    train = class_priors(y, C)
    corrected_oof = np.log(correct_priors(np.exp(oof), train, UNIFORM))
    corrected_test = np.log(correct_priors(np.exp(test), train, UNIFORM))
    corrected_f1 = macro_f1(y_test, corrected_test.argmax(axis=1))
    in_train_space = decide_offsets(oof, y, folds(len(y)))
    in_test_space = decide_offsets(corrected_oof, y, folds(len(y)), UNIFORM[y] / train[y])
    # offsets fitted on the imbalanced rows favour the rare classes again after the correction did
    assert in_train_space.applied
    assert macro_f1(y_test, in_train_space.predict(corrected_test)) < corrected_f1 - 0.02
    assert macro_f1(y_test, in_test_space.predict(corrected_test)) >= corrected_f1 - 0.005
