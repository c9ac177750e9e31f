"""Calibrated confidence: the expected macro-F1 of labels from calibrated probabilities, without labels."""

import numpy as np
from scipy.special import softmax

from competition.ensemble.confidence import calibrated_test_probs, confidence_macro_f1
from competition.ensemble.consensus import Groups, pool
from competition.metrics import expected_macro_f1, macro_f1


def test_expected_macro_f1_is_macro_f1_on_one_hot_probabilities():
    y = np.random.default_rng(0).integers(0, 10, 300)
    pred = np.where(np.arange(300) % 7 == 0, (y + 1) % 10, y)
    assert abs(expected_macro_f1(np.eye(10)[y], pred) - macro_f1(y, pred)) < 1e-12


def _rows(rng, n, temperature):
    """(n, 10) logits whose softmax at ``temperature`` is each row's true class distribution, and labels drawn
    from it: a model over-confident by 1 / ``temperature``."""
    p = rng.dirichlet(np.full(10, 0.3), n)
    y = np.array([rng.choice(10, p=r) for r in p])
    return np.log(p) / temperature, y


def test_calibration_undoes_an_over_confident_model_on_test_rows_like_the_training_rows():
    oof, y = _rows(np.random.default_rng(1), 4000, 0.5)
    test, ty = _rows(np.random.default_rng(2), 4000, 0.5)
    pred = test.argmax(1)
    est = confidence_macro_f1(softmax(oof, axis=1), y, softmax(test, axis=1)[None], pred)
    raw = expected_macro_f1(softmax(test, axis=1), pred)  # the over-confident probabilities as they are
    truth = macro_f1(ty, pred)
    assert abs(est - truth) < 0.02 and raw - truth > 0.05, (est, raw, truth)


def test_use_keeps_per_row_the_fold_models_it_marks():
    oof, y = _rows(np.random.default_rng(3), 500, 1.0)
    test = np.stack([_rows(np.random.default_rng(s), 60, 1.0)[0] for s in (4, 5, 6)])  # (3, 60, 10)
    probs = softmax(test, axis=2)
    use = np.arange(3)[:, None] == (np.arange(60) % 3)[None, :]  # (3, 60): row i read by fold i % 3 only
    cal = calibrated_test_probs(softmax(oof, axis=1), y, probs, use)
    alone = [calibrated_test_probs(softmax(oof, axis=1), y, probs[k : k + 1]) for k in range(3)]
    assert np.allclose(cal, np.stack([alone[i % 3][i] for i in range(60)]))
    assert np.allclose(calibrated_test_probs(softmax(oof, axis=1), y, probs, np.ones((3, 60), bool)),
                       calibrated_test_probs(softmax(oof, axis=1), y, probs))  # fmt: skip


def test_groups_pool_the_beliefs_as_consensus_pooled_the_written_labels():
    """Duplicate test rows: consensus wrote one label per group; each row's own belief in it is weak where its
    partners' is strong, and pooled the beliefs score the group's label as the group believes it."""
    oof, y = _rows(np.random.default_rng(7), 800, 1.0)
    test, _ = _rows(np.random.default_rng(8), 90, 1.0)
    probs = softmax(test, axis=1)[None]  # (1, 90, 10)
    groups = Groups(train=np.arange(800), test=800 + np.arange(90) // 3)  # 30 test groups of 3, none with training
    cal = calibrated_test_probs(softmax(oof, axis=1), y, probs)
    pred = pool(cal, groups.test).argmax(1)  # consensus labels: one per group
    alone = confidence_macro_f1(softmax(oof, axis=1), y, probs, pred)
    pooled = confidence_macro_f1(softmax(oof, axis=1), y, probs, pred, groups=groups)
    assert abs(pooled - expected_macro_f1(pool(cal, groups.test), pred)) < 1e-12
    assert pooled > alone  # each row's own belief in its group's label is below the group's
    # a test row that repeats a training row takes its label, believed for certain
    repeats = Groups(train=np.arange(800), test=np.array([0]))  # test row 0 in training row 0's group
    label = np.array([y[0]])
    certain = expected_macro_f1(np.eye(10)[label], label)
    assert confidence_macro_f1(softmax(oof, axis=1), y, probs[:, :1], label, groups=repeats) == certain
