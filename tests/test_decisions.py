"""The decision steps after the blend (ensemble/decisions.py): nothing changes without a shift or a paying offset;
a prior shift is detected, corrected and scored re-weighted; the out-of-fold probabilities stay nested."""

from __future__ import annotations

import numpy as np
from scipy.special import softmax
from test_priors import SHIFTED, UNIFORM, C, fold_models, gaussians, sample

from competition.ensemble.decisions import decide
from competition.ensemble.priors import fold_members
from competition.metrics import macro_f1


def _problem(test_priors: np.ndarray, seed: int = 0, sep: float = 1.2):
    """OOF rows with balanced labels and 5 folds, and test rows drawn with ``test_priors``."""
    means = gaussians(seed, sep=sep)
    logp_oof, y = sample(means, UNIFORM, 3000, UNIFORM, seed=seed + 1)
    logp_test, y_test = sample(means, test_priors, 3000, UNIFORM, seed=seed + 2)
    fold_of = np.arange(len(y)) % 5
    return np.exp(logp_oof), y, fold_of, np.exp(logp_test), y_test


def test_without_shift_or_paying_offsets_the_probabilities_come_back_unchanged():
    oof, y, fold_of, test, _ = _problem(UNIFORM, sep=3.0)  # calibrated, balanced, no shift: nothing to gain
    d = decide(oof, test, y, fold_of)
    assert not d.shift.shifted and not d.offsets.applied and not d.changed
    assert d.test_probs is test and d.oof_probs is oof  # the very arrays: the written CSV cannot move
    assert d.estimated_test_f1 is None
    off = decide(oof, test, y, fold_of, "off", "off")
    assert off.shift is None and off.offsets is None and off.test_probs is test


def test_a_prior_shift_is_detected_corrected_and_scored_reweighted():
    oof, y, fold_of, test, y_test = _problem(SHIFTED, seed=3)
    d = decide(oof, test, y, fold_of, offsets="off")
    assert d.shift.shifted and d.changed
    assert np.abs(d.shift.test_priors - SHIFTED).max() < 0.04
    before, after = macro_f1(y_test, test.argmax(1)), macro_f1(y_test, d.test_probs.argmax(1))
    assert after > before + 0.01, (before, after)
    assert abs(d.estimated_test_f1 - after) < 0.03  # the re-weighted OOF estimate tracks the shifted test
    assert abs(macro_f1(y, oof.argmax(1)) - after) > abs(d.estimated_test_f1 - after)  # closer than plain OOF


def test_nested_offsets_decide_each_fold_without_its_labels():
    oof, y, fold_of, test, _ = _problem(UNIFORM, seed=5, sep=0.9)
    y_noisy = y.copy()
    biased = oof * np.where(np.arange(C) == 3, 4.0, 1.0)  # an over-predicted class: offsets pay
    biased /= biased.sum(1, keepdims=True)
    d = decide(biased, test, y_noisy, fold_of, label_shift="off")
    assert d.offsets.applied
    garbage = y_noisy.copy()
    garbage[fold_of == 0] = (garbage[fold_of == 0] + 1) % C  # fold 0's labels replaced
    g = decide(biased, test, garbage, fold_of, label_shift="off")
    # fold 0's rows are decided by offsets fitted on folds 1-4 only, which did not change
    np.testing.assert_array_equal(d.oof_probs[fold_of == 0].argmax(1), g.oof_probs[fold_of == 0].argmax(1))


def test_a_member_too_weak_to_count_classes_is_left_out_of_the_estimate():
    oof, y, fold_of, test, _ = fold_models(SHIFTED)
    rng = np.random.default_rng(0)
    noise = {"m": oof, "weak": rng.normal(size=oof.shape)}  # a model that knows nothing: macro-F1 ~ 0.1
    members = fold_members(noise, {"m": test, "weak": rng.normal(size=test.shape)}, y, fold_of)
    oof_probs, test_probs = softmax(oof, axis=1), softmax(test, axis=2).mean(axis=0)
    d = decide(oof_probs, test_probs, y, fold_of, offsets="off", members=members)
    assert any("3 of 6 models left out" in line for line in d.lines), d.lines
    assert d.shift.members == 3 and d.shift.shifted
    assert np.abs(d.shift.test_priors - SHIFTED).max() < 0.03


def test_the_estimate_adds_what_the_average_of_the_fold_models_is_expected_to_gain_over_one():
    from competition.ensemble.priors import apply_bcts, correct_priors, fit_bcts, log_probs

    oof, y, fold_of, test, y_test = fold_models(SHIFTED)  # each fold model learned its own wrong class means
    folds = softmax(test, axis=2)  # (3, M, 10)
    oof_probs, test_probs = softmax(oof, axis=1), softmax(test.mean(axis=0), axis=1)  # the logits averaged
    d = decide(oof_probs, test_probs, y, fold_of, offsets="off", fold_test_probs=folds)
    assert d.shift.shifted and d.fold_gain is not None
    assert d.estimated_test_f1 == d.reweighted_f1 + d.fold_gain
    # the gain the held-out labels show: the written labels against each fold model's, decided alike
    t, b = fit_bcts(log_probs(oof_probs), y)
    fold_f1 = [
        macro_f1(
            y_test, correct_priors(apply_bcts(log_probs(f), t, b), d.shift.train_priors, d.shift.test_priors).argmax(1)
        )
        for f in folds
    ]
    true_gain = macro_f1(y_test, d.test_probs.argmax(1)) - np.mean(fold_f1)
    assert 0.02 < d.fold_gain < true_gain, (d.fold_gain, true_gain)  # most of it, and on the low side
    after = macro_f1(y_test, d.test_probs.argmax(1))
    assert abs(d.estimated_test_f1 - after) < abs(d.reweighted_f1 - after)  # closer than the re-weighted figure
    # fold models that all say the same gain nothing by averaging; without fold figures the estimate is as before
    same = decide(oof_probs, test_probs, y, fold_of, offsets="off", fold_test_probs=np.stack([test_probs] * 3))
    assert abs(same.fold_gain) < 1e-12 and same.reweighted_f1 == d.reweighted_f1
    plain = decide(oof_probs, test_probs, y, fold_of, offsets="off")
    assert plain.fold_gain is None and plain.estimated_test_f1 == plain.reweighted_f1 == d.reweighted_f1
