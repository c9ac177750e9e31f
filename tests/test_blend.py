"""Blending with hand-made logits whose answers are known: averaging spaces, Caruana weights, nested scores and
the agreement shift (``competition/blend.py``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import one_hot_logits
from scipy.special import log_softmax, softmax

from competition.ensemble.blend import (
    agreement_shift,
    blend_models,
    caruana_weights,
    combine,
    fold_average,
    nested_caruana,
    odd_ones_out,
    to_space,
)


def complementary(n: int = 200, seed: int = 0):
    """Models a and b: each confidently right on its half of the rows and mildly wrong on the other half,
    so either alone is right on half the rows and their equal blend on all; c is confidently wrong."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    wrong = (y + 1) % 10
    half = np.arange(n) < n // 2
    a = np.where(half[:, None], one_hot_logits(y, 6.0), one_hot_logits(wrong, 1.0))
    b = np.where(half[:, None], one_hot_logits(wrong, 1.0), one_hot_logits(y, 6.0))
    c = one_hot_logits((y + 5) % 10, 8.0)
    return y, a, b, c


def test_equal_blend_of_complementary_models_is_right_everywhere():
    y, a, b, _ = complementary()
    assert (a.argmax(1) == y).mean() == 0.5 and (b.argmax(1) == y).mean() == 0.5
    for space in ("logits", "probs"):
        probs = combine(np.stack([to_space(a, space), to_space(b, space)]), np.array([0.5, 0.5]), space)
        assert (probs.argmax(1) == y).all()
        np.testing.assert_allclose(probs.sum(1), 1.0)
    # the two spaces are the arithmetic and the normalised geometric mean of the probabilities
    pa, pb = softmax(a, axis=1), softmax(b, axis=1)
    probs = combine(np.stack([to_space(a, "probs"), to_space(b, "probs")]), np.array([0.25, 0.75]), "probs")
    np.testing.assert_allclose(probs, 0.25 * pa + 0.75 * pb)
    geo = pa**0.25 * pb**0.75
    logits = combine(np.stack([to_space(a, "logits"), to_space(b, "logits")]), np.array([0.25, 0.75]), "logits")
    np.testing.assert_allclose(logits, geo / geo.sum(1, keepdims=True))


def test_fold_average_in_each_space():
    rng = np.random.default_rng(1)
    folds = rng.normal(size=(3, 7, 10)) * 3
    np.testing.assert_allclose(fold_average(folds, "probs"), softmax(folds, axis=2).mean(0))
    np.testing.assert_allclose(softmax(fold_average(folds, "logits"), axis=1), softmax(folds.mean(0), axis=1))
    np.testing.assert_allclose(fold_average(folds, "logits"), log_softmax(folds, axis=2).mean(0))


@pytest.mark.parametrize("space", ["logits", "probs"])
def test_caruana_finds_the_complementary_pair_and_drops_the_bad_model(space):
    y, a, b, c = complementary()
    w = caruana_weights(np.stack([to_space(m, space) for m in (c, a, b)]), y, space)
    np.testing.assert_allclose(w, [0.0, 0.5, 0.5])


@pytest.mark.parametrize("space", ["logits", "probs"])
def test_caruana_keeps_the_single_best_model_when_others_only_hurt(space):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 10, 300)
    good = one_hot_logits(y, 3.0) + rng.normal(size=(300, 10)) * 0.1
    noise = [rng.normal(size=(300, 10)) * 5 for _ in range(2)]
    w = caruana_weights(np.stack([to_space(m, space) for m in (noise[0], good, noise[1])]), y, space)
    np.testing.assert_allclose(w, [0.0, 1.0, 0.0])


@pytest.mark.parametrize("seed", range(5))
def test_weights_are_non_negative_and_sum_to_one(seed):
    rng = np.random.default_rng(seed)
    n, k = 120, 3
    y = rng.integers(0, 10, n)
    stacked = np.stack([one_hot_logits(y, rng.uniform(0, 2)) + rng.normal(size=(n, 10)) for _ in range(4)])
    fold_of = rng.permutation(np.arange(n) % k)
    for space in ("logits", "probs"):
        s = to_space(stacked, space)
        rounds = int(rng.integers(1, 30))
        w = caruana_weights(s, y, space, rounds)
        assert w.shape == (4,) and (w >= 0).all() and np.isclose(w.sum(), 1.0)
        assert any(np.allclose(w * s, np.round(w * s)) for s in range(1, rounds + 1))  # counts / steps
        _, fold_w = nested_caruana(s, y, fold_of, space, rounds)
        assert fold_w.shape == (k, 4) and (fold_w >= 0).all() and np.allclose(fold_w.sum(1), 1.0)


def test_nested_score_fits_each_fold_without_its_rows():
    rng = np.random.default_rng(3)
    n = 150
    y = rng.integers(0, 10, n)
    stacked = to_space(np.stack([one_hot_logits(y, 1.0) + rng.normal(size=(n, 10)) for _ in range(3)]), "probs")
    fold_of = np.arange(n) % 3
    nested, fold_w = nested_caruana(stacked, y, fold_of, "probs")
    for k in range(3):
        fit, held = fold_of != k, fold_of == k
        w = caruana_weights(stacked[:, fit], y[fit], "probs")
        np.testing.assert_allclose(fold_w[k], w)
        np.testing.assert_allclose(nested[held], combine(stacked[:, held], w, "probs"))


def test_blend_models_preserves_test_row_order_and_reports_every_candidate():
    y, a, b, c = complementary(n=100)
    m = 30
    target = np.arange(m) % 10  # test row i should come out as class i % 10
    test = {name: np.stack([one_hot_logits(target, 2.0)] * 2) for name in ("a", "b", "c")}
    res = blend_models({"a": a, "b": b, "c": c}, test, y, np.arange(100) % 2)
    assert [s.name for s in res.singles] == ["a", "b", "c"]
    assert [(x.name, x.space) for x in res.blends] == [
        ("equal", "logits"),
        ("fitted", "logits"),
        ("equal", "probs"),
        ("fitted", "probs"),
    ]
    assert res.chosen.name == "fitted" and res.chosen.nested_f1 == 1.0  # c sinks the equal blend
    np.testing.assert_allclose(res.chosen.weights, [0.5, 0.5, 0.0])
    assert res.test_probs.shape == (m, 10) and np.allclose(res.test_probs.sum(1), 1.0)
    assert (res.test_probs.argmax(1) == target).all()


def test_agreement_shift_flags_the_pairs_with_a_model_whose_test_inputs_changed():
    rng = np.random.default_rng(0)
    y, y_test = rng.integers(0, 10, 600), rng.integers(0, 10, 300)
    right = one_hot_logits(y, 3.0)  # (N, 10): every model right out of fold
    oof = {m: right + 0.1 * rng.normal(size=right.shape) for m in ("fusion", "image", "audio")}
    test = {m: np.stack([one_hot_logits(y_test, 3.0)] * 2) for m in ("fusion", "image")}  # (K, M, 10)
    noisy = np.where(rng.random(300) < 0.7, rng.integers(0, 10, 300), y_test)  # audio: 70% of test rows guessed
    test["audio"] = np.stack([one_hot_logits(noisy, 3.0)] * 2)
    pairs = {(a.a, a.b): a for a in agreement_shift(oof, test)}
    assert set(pairs) == {("fusion", "image"), ("fusion", "audio"), ("image", "audio")}
    assert pairs["fusion", "image"].oof == pairs["fusion", "image"].test == 1.0
    assert not pairs["fusion", "image"].shifted
    assert pairs["fusion", "audio"].shifted and pairs["image", "audio"].shifted
    assert pairs["image", "audio"].test == pytest.approx((noisy == y_test).mean())
    assert odd_ones_out(list(pairs.values())) == ["audio"]  # the others still agree: audio is the one that moved
    everyone = [dataclasses.replace(a, shifted=True) for a in pairs.values()]
    assert odd_ones_out(everyone) == []  # every pair parts: nothing tells which models moved
    assert odd_ones_out([pairs["image", "audio"]]) == []  # two models: either could have moved
    # a small drop, well within chance on 300 rows, is not a shift
    test["audio"] = np.stack([one_hot_logits(np.where(np.arange(300) < 6, (y_test + 1) % 10, y_test), 3.0)] * 2)
    assert not any(a.shifted for a in agreement_shift(oof, test))
