"""Label shift (competition/priors.py) on synthetic data with a known answer: class-conditional Gaussians
whose exact Bayes posteriors under the training priors are a perfectly calibrated model."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax

from competition.ensemble.decisions import decide
from competition.ensemble.priors import (
    EPS,
    Member,
    apply_bcts,
    calibrated_label_shift,
    class_priors,
    correct_priors,
    detect_label_shift,
    em_priors,
    fit_bcts,
    fold_members,
    nll,
    reweighted_macro_f1,
)
from competition.metrics import macro_f1

C = 10
UNIFORM = np.full(C, 1.0 / C)
SHIFTED = np.array([0.02, 0.04, 0.06, 0.08, 0.10, 0.10, 0.12, 0.14, 0.16, 0.18])


def gaussians(seed: int = 0, sep: float = 1.5, dim: int = 5) -> np.ndarray:
    """Class means of a 10-class problem (unit-variance Gaussians around them)."""
    return np.random.default_rng(seed).normal(size=(C, dim)) * sep


def sample(means: np.ndarray, priors: np.ndarray, n: int, model_priors: np.ndarray, seed: int):
    """n rows with labels drawn from ``priors`` and the exact log-posteriors of a model that assumes
    ``model_priors`` (calibrated when they are the rows' own priors). Returns (log-posteriors, labels)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(C, size=n, p=priors)
    x = means[y] + rng.normal(size=(n, means.shape[1]))
    loglik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    return log_softmax(loglik + np.log(model_priors), axis=1), y


def test_em_recovers_a_shifted_test_prior():
    logp, _ = sample(gaussians(), SHIFTED, 5000, UNIFORM, seed=1)
    est = em_priors(np.exp(logp), UNIFORM)
    assert np.abs(est - SHIFTED).max() < 0.03
    assert np.abs(UNIFORM - SHIFTED).max() > 0.07  # the uncorrected prior is far off: the test can fail


def test_no_shift_is_not_detected_and_nothing_is_corrected():
    means = gaussians(sep=2.0)
    logp, _ = sample(means, UNIFORM, 3000, UNIFORM, seed=2)
    probs = np.exp(logp)
    shift = detect_label_shift(probs, UNIFORM, n_boot=100)
    assert not shift.shifted, shift.message
    assert "not detected" in shift.message
    assert shift.correct(probs) is probs  # not corrected, not even renormalised
    assert np.all(shift.lower <= shift.upper)


def test_a_shift_is_detected_and_corrected():
    means = gaussians(sep=2.0)
    logp, y = sample(means, SHIFTED, 3000, UNIFORM, seed=3)
    probs = np.exp(logp)
    shift = detect_label_shift(probs, UNIFORM, n_boot=100)
    assert shift.shifted, shift.message
    assert np.all(shift.lower - 0.02 <= SHIFTED) and np.all(SHIFTED <= shift.upper + 0.02)
    corrected = shift.correct(probs)
    np.testing.assert_allclose(corrected, correct_priors(probs, UNIFORM, shift.test_priors))
    assert nll(corrected, y) < nll(probs, y)  # the corrected posteriors fit the shifted rows better


def test_bcts_lowers_the_nll_of_overconfident_biased_logits():
    logp, y = sample(gaussians(), UNIFORM, 3000, UNIFORM, seed=4)
    extra = np.array([1.5] + [0.0] * (C - 1))  # a bias towards class 0 on top of the over-confidence
    logits = 3.0 * logp + extra
    temperature, bias = fit_bcts(logits, y)
    before, after = nll(softmax(logits, axis=1), y), nll(apply_bcts(logits, temperature, bias), y)
    assert after < before - 0.3, (before, after)
    assert abs(temperature - 3.0) < 0.3
    assert abs(bias.sum()) < 1e-9  # centred
    _, unbiased = fit_bcts(3.0 * logp, y)
    removed = bias - unbiased  # the same rows without the extra bias: sampling noise cancels
    np.testing.assert_allclose(removed, -(extra - extra.mean()) / temperature, atol=0.05)


def test_em_never_sets_a_prior_to_zero():
    priors = np.array([0.0] + [1.0 / (C - 1)] * (C - 1))  # class 0 absent from the test rows
    logp, _ = sample(gaussians(sep=3.0), priors, 2000, UNIFORM, seed=5)
    probs = np.exp(logp)
    est = em_priors(probs, UNIFORM, max_iter=5000)
    assert EPS * 0.99 <= est[0] < 0.01  # found (nearly) absent, yet not 0
    probs[:, 1] = 0.0  # a class the model gives probability exactly 0 on every row: EM would set 0
    probs /= probs.sum(axis=1, keepdims=True)
    est = em_priors(probs, UNIFORM, max_iter=5000)
    assert np.all(est >= EPS * 0.99) and np.all(np.isfinite(est)) and abs(est.sum() - 1.0) < 1e-9
    corrected = correct_priors(np.exp(logp), UNIFORM, est)
    assert np.all(corrected[:, 1] > 0) and np.all(np.isfinite(corrected))  # class 1 can still be predicted


def test_calibration_before_em_reduces_its_error():
    means = gaussians(sep=1.5)
    oof, y = sample(means, UNIFORM, 3000, UNIFORM, seed=6)
    test, _ = sample(means, SHIFTED, 3000, UNIFORM, seed=7)
    extra = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # miscalibrated towards classes 5, 6
    raw_est = em_priors(softmax(2.0 * test + extra, axis=1), UNIFORM)
    shift, _ = calibrated_label_shift([Member(2.0 * oof + extra, y, 2.0 * test + extra)], UNIFORM, n_boot=20)
    calibrated_error = np.abs(shift.test_priors - SHIFTED).max()
    assert calibrated_error < 0.03
    assert calibrated_error < np.abs(raw_est - SHIFTED).max() / 2


def test_correct_priors_with_equal_priors_is_the_identity():
    logp, _ = sample(gaussians(), UNIFORM, 500, UNIFORM, seed=8)
    probs = np.exp(logp)
    np.testing.assert_allclose(correct_priors(probs, SHIFTED, SHIFTED), probs, atol=1e-12)
    assert not np.allclose(correct_priors(probs, UNIFORM, SHIFTED), probs)


def test_reweighted_oof_macro_f1_estimates_the_test_macro_f1():
    means = gaussians(sep=1.2)
    train = np.linspace(1.0, 10.0, C) / np.linspace(1.0, 10.0, C).sum()
    oof, y = sample(means, train, 6000, train, seed=9)
    test, y_test = sample(means, UNIFORM, 6000, train, seed=10)
    oof_f1 = macro_f1(y, oof.argmax(axis=1))
    estimate = reweighted_macro_f1(y, oof.argmax(axis=1), class_priors(y, C), UNIFORM)
    actual = macro_f1(y_test, test.argmax(axis=1))
    assert abs(estimate - actual) < 0.015
    assert abs(estimate - actual) < abs(oof_f1 - actual) / 2  # the plain out-of-fold score misleads more
    assert reweighted_macro_f1(y, oof.argmax(axis=1), train, train) == macro_f1(y, oof.argmax(axis=1))


def fold_models(test_priors: np.ndarray, k: int = 3, seed: int = 14, n: int = 3000, n_test: int = 3000):
    """A cv run of ``k`` fold models on balanced training rows and test rows drawn with ``test_priors``: fold
    model j learned its own, slightly wrong, class means and is over-confident (logits x 2), as small models
    of different folds are; its out-of-fold rows are fold j's. Returns (oof logits, y, fold_of, (k, M, C) test
    logits, the test labels)."""
    rng = np.random.default_rng(seed)
    means = gaussians(seed, sep=1.5)
    y = rng.choice(C, size=n, p=UNIFORM)
    x = means[y] + rng.normal(size=(n, means.shape[1]))
    y_test = rng.choice(C, size=n_test, p=test_priors)
    x_test = means[y_test] + rng.normal(size=(n_test, means.shape[1]))
    fold_of = np.arange(n) % k
    oof, test = np.zeros((n, C)), np.zeros((k, n_test, C))

    def logits(rows, learned):
        return -1.0 * ((rows[:, None, :] - learned[None]) ** 2).sum(axis=2)  # 2 x the log-likelihood's scale

    for j in range(k):
        learned = means + rng.normal(scale=0.6, size=means.shape)
        oof[fold_of == j] = logits(x[fold_of == j], learned)
        test[j] = logits(x_test, learned)
    return oof, y, fold_of, test, y_test


def test_per_fold_members_recover_a_shifted_test_prior():
    oof, y, fold_of, test, _ = fold_models(SHIFTED)
    members = fold_members({"m": oof}, {"m": test}, y, fold_of)
    assert len(members) == 3 and all(len(m.y) == 1000 for m in members)  # each fold model with its own rows
    shift, cal = calibrated_label_shift(members, class_priors(y, C), n_boot=50)
    assert shift.shifted and shift.members == 3, shift.message
    assert np.abs(shift.test_priors - SHIFTED).max() < 0.03  # tolerance: 3 points of proportion on 3,000 rows
    assert np.all(shift.lower <= shift.test_priors) and np.all(shift.test_priors <= shift.upper)
    assert np.all(cal.temperatures > 1.3)  # each over-confident fold model is softened by its own calibration
    # the fold models disagree, so their average is less confident than each: calibrated like one model's
    # out-of-fold rows and estimated as one member, it misses by more
    averaged = Member(oof, y, log_softmax(test, axis=2).mean(axis=0))
    old, _ = calibrated_label_shift([averaged], class_priors(y, C), n_boot=10)
    assert np.abs(shift.test_priors - SHIFTED).max() < np.abs(old.test_priors - SHIFTED).max() - 0.01


def test_per_fold_members_find_no_shift_and_decide_changes_nothing():
    oof, y, fold_of, test, _ = fold_models(UNIFORM, seed=12)
    members = fold_members({"m": oof}, {"m": test}, y, fold_of)
    shift, _ = calibrated_label_shift(members, class_priors(y, C), n_boot=50)
    assert not shift.shifted, shift.message
    assert np.abs(shift.test_priors - UNIFORM).max() < 0.02
    oof_probs, test_probs = softmax(oof, axis=1), softmax(test, axis=2).mean(axis=0)
    d = decide(oof_probs, test_probs, y, fold_of, offsets="off", members=members)
    assert not d.changed and d.test_probs is test_probs  # the very array: the written CSV cannot move


def test_refit_members_are_calibrated_on_every_row():
    oof, y, fold_of, test, _ = fold_models(SHIFTED, k=3, seed=13)
    members = fold_members({"m": oof}, {"m": test[:2]}, y, fold_of, refits=True)
    assert len(members) == 2 and all(len(m.y) == len(y) for m in members)
