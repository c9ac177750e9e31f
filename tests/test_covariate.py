"""Covariate-shift re-weighting: test-like training rows count more; without a shift nothing moves."""

from __future__ import annotations

import numpy as np

from competition.ensemble.covariate import likeness_weights
from competition.metrics import macro_f1


def rows(rng, n, hard_share):
    """(n,) labels, (n, 10) logits and predictions: easy rows confident and right, hard rows flat and right 60%
    of the time."""
    y = rng.integers(0, 10, n)
    hard = rng.random(n) < hard_share
    pred = np.where(hard & (rng.random(n) > 0.6), (y + rng.integers(1, 10, n)) % 10, y)
    logits = rng.normal(0, 0.3, (n, 10))
    logits[np.arange(n), pred] += np.where(hard, 0.8, 5.0)
    return y, logits, pred


def test_a_test_set_of_hard_rows_weights_the_hard_training_rows_up():
    rng = np.random.default_rng(0)
    y, oof, pred = rows(rng, 3000, 0.2)
    _, test, _ = rows(rng, 2000, 0.8)  # noisier test rows: four in five hard
    like = likeness_weights(oof, test.reshape(2, 1000, 10))  # two fold models' outputs
    assert like.auc > 0.7
    plain = macro_f1(y, pred)
    moved = macro_f1(y, pred, like.weights)
    # the truth on test-like rows: 0.8 x 0.6 + 0.2 x 1.0 = 0.68 accuracy; plain out of fold 0.92
    yt, _, pt = rows(np.random.default_rng(1), 20000, 0.8)
    truth = macro_f1(yt, pt)
    assert plain - truth > 0.2
    assert abs(moved - truth) < abs(plain - truth) / 3
    assert like.effective_rows < len(y)


def test_without_a_shift_the_estimate_stays_the_plain_figure():
    rng = np.random.default_rng(2)
    y, oof, pred = rows(rng, 3000, 0.3)
    _, test, _ = rows(rng, 3000, 0.3)
    like = likeness_weights(oof, test.reshape(3, 1000, 10))
    assert like.auc < 0.56
    assert abs(macro_f1(y, pred, like.weights) - macro_f1(y, pred)) < 0.01
    assert like.effective_rows > 0.95 * len(y)
    np.testing.assert_allclose(like.weights.mean(), 1.0)
