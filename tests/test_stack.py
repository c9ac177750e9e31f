"""Stacking: its nested score never reads the scored fold's labels; ``submit --blend stack``."""

from __future__ import annotations

import json

import numpy as np

from competition.ensemble.blend import blend_models
from competition.ensemble.stack import fit_stacker, nested_stack, stack_features, stacker_probs
from tests.test_blend import complementary
from tests.test_submit import fake_run, submit

CS = (0.1, 1.0)  # two strengths keep the tests quick; C is still chosen inside each fit


def problem(n: int = 300, seed: int = 0):
    """Three models of different quality, five folds."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    models = []
    for margin in (2.0, 1.0, 0.5):
        x = rng.normal(size=(n, 10))
        x[np.arange(n), y] += margin
        models.append(x)
    return stack_features(models), y, np.arange(n) % 5


def test_nested_stack_never_uses_the_scored_folds_labels():
    x, y, fold_of = problem()
    nested, cs = nested_stack(x, y, fold_of, CS)
    assert nested.shape == (300, 10) and np.allclose(nested.sum(1), 1.0) and len(cs) == 5
    rng = np.random.default_rng(1)
    for k in (0, 3):
        garbage = y.copy()
        garbage[fold_of == k] = rng.integers(0, 10, (fold_of == k).sum())  # the scored fold's labels destroyed
        again, _ = nested_stack(x, garbage, fold_of, CS)
        np.testing.assert_array_equal(again[fold_of == k], nested[fold_of == k])
        # the check can fail: the other folds' predictions do read these labels
        assert not np.allclose(again[fold_of != k], nested[fold_of != k])


def test_nested_stack_equals_a_stacker_fit_on_the_other_folds():
    x, y, fold_of = problem(seed=2)
    nested, cs = nested_stack(x, y, fold_of, CS)
    fit = fold_of != 3
    model = fit_stacker(x[fit], y[fit], fold_of[fit], CS)
    np.testing.assert_allclose(nested[fold_of == 3], stacker_probs(model, x[fold_of == 3]))


def test_blend_models_offers_the_stack_with_three_folds_or_more():
    y, a, b, c = complementary(n=150)
    test = {m: np.zeros((3, 20, 10)) for m in "abc"}
    res = blend_models({"a": a, "b": b, "c": c}, test, y, np.arange(150) % 3)
    stack = [x for x in res.blends if x.name == "stack"]
    assert len(stack) == 1 and stack[0].nested_f1 is not None and len(stack[0].details["fold_C"]) == 3
    assert np.isclose(stack[0].weights.sum(), 1.0) and stack[0].test_probs.shape == (20, 10)
    res2 = blend_models({"a": a, "b": b, "c": c}, test, y, np.arange(150) % 2)
    assert "stack" not in [x.name for x in res2.blends]


def test_submit_blend_stack(tmp_path, tiny_data, capsys):
    fake_run(tmp_path / "wd", "r1", tiny_data, folds=3)
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub", "--blend", "stack", "--name", "s") == 0
    manifest = json.loads((tmp_path / "sub" / "s.json").read_text())
    assert manifest["blend"] == "stack" and manifest["oof_nested_macro_f1"] > 0.5
    assert [c["blend"] for c in manifest["candidates"]][-1] == "stack" and "C" in manifest["candidates"][-1]
    assert "stack blend" in capsys.readouterr().out
    fake_run(tmp_path / "wd2", "r1", tiny_data, folds=2)
    assert submit(tmp_path / "wd2", tiny_data, tmp_path / "sub2", "--blend", "stack") == 2
    err = capsys.readouterr().err
    assert "needs 3 or more" in err and len(err.strip().splitlines()) == 1
