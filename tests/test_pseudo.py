"""Test-domain pseudo-labels (``cv --pseudo``, competition/pseudo.py): honest per-fold sets, resume and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_submit import fake_run

from competition.cli import main
from competition.config import Config
from competition.data.load import load_competition
from competition.splits.folds import load_or_make_folds
from competition.store.atomic import write_json
from competition.train import unit
from competition.train.pseudo import (
    _fold_weights,
    confidence_threshold,
    fold_pseudo_labels,
    held_out_test_folds,
)
from competition.train.pseudo import test_folds as seeded_test_folds  # not test_*: pytest would collect it

# --- the per-fold sets, pure ----------------------------------------------------------------------------------


def test_threshold_is_the_lowest_confidence_whose_rows_reach_the_precision():
    conf = np.array([0.99, 0.95, 0.9, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([1, 1, 1, 0, 1, 1, 0], dtype=bool)
    # rows >= 0.9: 3 of 4 right; >= 0.7: 5 of 6; >= 0.6: 5 of 7
    assert confidence_threshold(conf, correct, 0.8) == 0.7
    assert confidence_threshold(conf, correct, 0.75) == 0.7  # the lowest that qualifies
    assert confidence_threshold(conf, correct, 0.9) == 0.95  # the tie at 0.9 goes in or out together
    assert confidence_threshold(conf, ~correct, 0.9) == float("inf")  # none qualifies: no pseudo rows


def synthetic(seed: int = 0, n: int = 300, m: int = 200, k: int = 3, models: int = 2):
    """Out-of-fold logits (N, 10) that are right with varying confidence, fold test logits (K, M, 10)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    fold_of = np.arange(n) % k
    oof = [rng.normal(size=(n, 10)) + 4 * np.eye(10)[y] * rng.uniform(0, 1, (n, 1)) for _ in range(models)]
    test = [rng.normal(size=(k, m, 10)) * 3 for _ in range(models)]
    weights = np.full((k, models), 1 / models)
    return oof, test, y, fold_of, weights


@pytest.mark.parametrize("space", ["logits", "probs"])
def test_a_folds_set_reads_only_that_folds_test_logits(space):
    oof, test, y, fold_of, weights = synthetic()
    before = fold_pseudo_labels(oof, test, y, fold_of, weights, space, 0.9)
    assert all(0 < len(s.idx) < 200 for s in before)
    changed = [t.copy() for t in test]
    for t in changed:
        t[1:] = np.random.default_rng(5).normal(size=t[1:].shape) * 3  # every fold's but fold 0's
    after = fold_pseudo_labels(oof, changed, y, fold_of, weights, space, 0.9)
    assert np.array_equal(before[0].idx, after[0].idx) and np.array_equal(before[0].labels, after[0].labels)
    assert not np.array_equal(before[1].idx, after[1].idx)  # the others moved with their logits


def test_a_folds_threshold_ignores_that_folds_rows_and_labels():
    oof, test, y, fold_of, weights = synthetic()
    before = fold_pseudo_labels(oof, test, y, fold_of, weights, "logits", 0.9)
    rows = fold_of == 0
    y2, oof2 = y.copy(), [o.copy() for o in oof]
    y2[rows] = (y[rows] + 1) % 10  # fold 0's labels all wrong and its logits replaced
    for o in oof2:
        o[rows] = np.random.default_rng(1).normal(size=o[rows].shape) * 10
    after = fold_pseudo_labels(oof2, test, y2, fold_of, weights, "logits", 0.9)
    assert after[0].threshold == before[0].threshold and np.array_equal(after[0].idx, before[0].idx)
    assert after[0].calib_rows == int((~rows).sum())
    assert after[1].threshold != before[1].threshold  # fold 1 does read fold 0's rows


def test_the_test_split_is_balanced_seeded_and_each_folds_set_leaves_its_test_fold_out():
    tf = seeded_test_folds(200, 3, 0)
    assert np.bincount(tf).tolist() == [67, 67, 66] and np.array_equal(tf, seeded_test_folds(200, 3, 0))
    assert not np.array_equal(tf, seeded_test_folds(200, 3, 1))  # another seed, another split
    oof, test, y, fold_of, weights = synthetic()
    every = fold_pseudo_labels(oof, test, y, fold_of, weights, "logits", 0.9)
    held = fold_pseudo_labels(oof, test, y, fold_of, weights, "logits", 0.9, tf)
    for k, (a, b) in enumerate(zip(every, held, strict=True)):
        assert a.threshold == b.threshold and np.array_equal(b.idx, a.idx[tf[a.idx] != k])  # only fold k's out
        assert np.array_equal(b.labels, a.labels[tf[a.idx] != k]) and 0 < len(b.idx) < len(a.idx)


def test_fold_weights_of_a_fitted_blend_are_used_per_fold():
    oof, test, y, fold_of, _ = synthetic()
    only_first = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    sets = fold_pseudo_labels(oof, test, y, fold_of, only_first, "logits", 0.9)
    alone = fold_pseudo_labels([oof[0]], [test[0]], y, fold_of, np.ones((3, 1)), "logits", 0.9)
    assert np.array_equal(sets[0].idx, alone[0].idx) and np.array_equal(sets[0].labels, alone[0].labels)
    assert not np.array_equal(sets[2].idx, alone[2].idx)


def test_weights_from_the_manifest_fitted_per_fold_equal_and_stack():
    models = ["r/a", "r/b"]
    fitted = {"blend": "fitted", "average": "probs", "weights": {"r/a": 0.5, "r/b": 0.5}}
    fitted["candidates"] = [
        {"blend": "fitted", "space": "logits", "fold_weights": [{"r/a": 0.0, "r/b": 1.0}] * 2},
        {"blend": "fitted", "space": "probs", "fold_weights": [{"r/a": 1.0, "r/b": 0.0}, {"r/a": 0.25, "r/b": 0.75}]},
    ]
    blend, space, w, note = _fold_weights(fitted, models, 2)
    assert (blend, space, note) == ("fitted", "probs", "") and w.tolist() == [[1.0, 0.0], [0.25, 0.75]]
    equal = {"blend": "equal", "average": "logits", "weights": {"r/a": 0.5, "r/b": 0.5}}
    assert _fold_weights(equal, models, 3)[2].tolist() == [[0.5, 0.5]] * 3
    blend, _, w, note = _fold_weights(equal | {"blend": "stack", "weights": {"r/a": 0.9, "r/b": 0.1}}, models, 2)
    assert blend == "equal" and w.tolist() == [[0.5, 0.5]] * 2 and "stack" in note


# --- cv --pseudo on a tiny competition ------------------------------------------------------------------------

CV = ["--folds", "2", "--epochs", "1", "--models", "image", "--workers", "1", "--device", "cpu"]


@pytest.fixture
def base(tmp_path, tiny_data, capsys):
    """A workdir whose saved split a made-up run ``base`` shares, and the submission of it (submit's manifest)."""
    comp = load_competition(tiny_data)
    wd = tmp_path / "wd"
    fold_of = load_or_make_folds(comp, wd, 2, 0, True, "auto")["fold"].to_numpy()
    fake_run(wd, "base", tiny_data, models=("fusion", "image"), folds=2, fold_of=fold_of)
    args = ["--data", str(tiny_data), "--workdir", str(wd), "--out", str(tmp_path / "sub"), "--name", "base"]
    assert main(["submit", *args, "--consensus", "off"]) == 0
    capsys.readouterr()
    return wd, tmp_path / "sub" / "base.csv"


def pseudo_cv(data: Path, wd: Path, sub: Path, *extra: str) -> int:
    return main(["cv", "--data", str(data), "--workdir", str(wd), *CV, "--pseudo", str(sub), *extra])


def test_pseudo_rows_join_each_folds_training_rows_never_its_validation_rows(base, tiny_data, monkeypatch, capsys):
    wd, sub = base
    comp = load_competition(tiny_data)
    seen = []
    fit = unit.Learner.fit

    def spy(self, image, audio, y, val=None, on_epoch=None, **kw):
        seen.append((image.copy(), y.copy(), val[0].copy()))
        return fit(self, image, audio, y, val=val, on_epoch=on_epoch, **kw)

    monkeypatch.setattr(unit.Learner, "fit", spy)
    assert pseudo_cv(tiny_data, wd, sub) == 0
    out = capsys.readouterr().out
    assert "pseudo-labels of base.json (" in out and "fold 1: t=" in out
    (run_dir,) = [p for p in wd.iterdir() if p.name.endswith("-pseudo")]  # the default name: <config>-pseudo
    cfg = json.loads((run_dir / "config.json").read_text())["config"]
    assert (
        cfg["pseudo"] == str(sub.with_suffix(".json").resolve())
        and cfg["pseudo_precision"] == Config().pseudo_precision
    )
    fold_of = load_or_make_folds(comp, wd, 2, 0, True, "auto")["fold"].to_numpy()
    z = np.load(run_dir / "pseudo.npz")
    assert len(seen) == 2
    for image, y, val_image in seen:
        k = int(fold_of[np.flatnonzero((comp.image == val_image[0]).all(1))[0]])
        tr, va = np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)
        idx, labels = z[f"idx{k}"], z[f"labels{k}"]
        assert len(idx) > 0 and idx.max() < comp.n_test
        assert np.array_equal(val_image, comp.image[va])  # validation: the fold's training-set rows only
        assert np.array_equal(image, np.concatenate([comp.image[tr], comp.test_image[idx]]))
        assert np.array_equal(y, np.concatenate([comp.y[tr], labels]))
    # the round blends with its source like any run
    args = ["--data", str(tiny_data), "--workdir", str(wd), "--out", str(wd.parent / "sub2"), "--consensus", "off"]
    assert main(["submit", *args, "--run", "base", "--run", run_dir.name]) == 0
    (written,) = (wd.parent / "sub2").glob("*.json")
    manifest = json.loads(written.read_text())
    assert manifest["models"] == ["base/fusion", "base/image", f"{run_dir.name}/image"]


def test_auto_prices_a_round_by_the_rows_cv_then_adds(base, tiny_data):
    """``auto`` prices a pseudo-label round by the rows its written source labels: the very sets the round saves."""
    from competition.pipeline.run import round_rows

    wd, sub = base
    comp = load_competition(tiny_data)
    rows = round_rows(sub.with_suffix(".json"), Config(folds=2), comp, wd)
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p") == 0
    with np.load(wd / "p" / "pseudo.npz") as z:
        saved = [len(z[f"idx{k}"]) for k in range(2)]
    assert rows == np.mean(saved) > 0
    assert round_rows(sub.with_suffix(".json"), Config(folds=2), comp, wd / "nowhere") is None  # no split saved there


def test_a_round_with_pseudo_init_source_starts_each_unit_from_the_sources_model_of_its_fold(
    tmp_path, tiny_data, monkeypatch, capsys
):
    import torch

    from competition.store.runs import checkpoint_path, load_checkpoint

    wd, subs = tmp_path / "wd", tmp_path / "sub"
    assert main(["cv", "--data", str(tiny_data), "--workdir", str(wd), *CV, "--run", "src"]) == 0
    args = ["--data", str(tiny_data), "--workdir", str(wd), "--out", str(subs), "--name", "src", "--run", "src"]
    assert main(["submit", *args, "--consensus", "off"]) == 0
    started = []
    fit = unit.Learner.fit

    def spy(self, *a, init=None, **kw):
        started.append(init)
        return fit(self, *a, init=init, **kw)

    monkeypatch.setattr(unit.Learner, "fit", spy)
    sub = subs / "src.csv"
    assert pseudo_cv(tiny_data, wd, sub, "--run", "warm", "--set", "pseudo_init=source") == 0
    assert len(started) == 2
    for k, init in enumerate(started):  # one worker: fold 0, then fold 1
        source = load_checkpoint(checkpoint_path(wd / "src", "image", k))["state_dict"]
        assert init.keys() == source.keys() and all(torch.equal(init[n], source[n]) for n in source)
    assert any(not torch.equal(started[0][n], started[1][n]) for n in started[0])  # each fold its own model
    # from scratch (the default), nothing to start from
    started.clear()
    assert pseudo_cv(tiny_data, wd, sub, "--run", "cold") == 0
    assert started == [None, None]
    capsys.readouterr()
    # a round whose model is shaped unlike the source's (a wider image encoder) cannot start from it: one error line
    assert pseudo_cv(tiny_data, wd, sub, "--run", "wide", "--set", "pseudo_init=source", "--set", "image_width=2") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image_width=2" in err[0] and "fix: pass --set image_width=1" in err[0], err
    assert not (wd / "wide" / "image" / "fold0.npz").exists()
    # a source whose runs kept no checkpoint: one error line naming the fix
    (wd / "src" / "image" / "fold1.pt").unlink()
    assert pseudo_cv(tiny_data, wd, sub, "--run", "warm2", "--set", "pseudo_init=source") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image fold 1 checkpoint" in err[0] and "pseudo_init=scratch" in err[0]


def test_resume_same_submission_same_predictions_changed_one_refused(base, tiny_data, capsys):
    wd, sub = base
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p1") == 0
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p2") == 0
    for k in range(2):
        a, b = np.load(wd / "p1" / "image" / f"fold{k}.npz"), np.load(wd / "p2" / "image" / f"fold{k}.npz")
        assert np.array_equal(a["oof_logits"], b["oof_logits"])  # same seed, config and submission: bitwise
    capsys.readouterr()
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p1") == 0  # resumes
    assert "0 units already finished" not in capsys.readouterr().out
    # the submission's runs changed under it (a fold file retrained): the saved sets no longer match
    path = wd / "base" / "image" / "fold0.npz"
    z = dict(np.load(path))
    np.savez(path, **(z | {"test_logits": z["test_logits"][::-1].copy()}))
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p1") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "p1/pseudo.json" in err and "changed" in err and "fix:" in err
    # another submission: the run's config refuses it
    shutil.copy(sub.with_suffix(".json"), sub.parent / "other.json")
    assert pseudo_cv(tiny_data, wd, sub.parent / "other.json", "--run", "p2") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pseudo:" in err and "fix:" in err


def edit_manifest(sub: Path, **changes) -> None:
    path = sub.with_suffix(".json")
    write_json(path, json.loads(path.read_text()) | changes)


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda wd, sub: sub.with_suffix(".json").unlink(), "submission manifest not found"),
        (lambda wd, sub: edit_manifest(sub, data_fingerprint="0" * 16), "submission made on data"),
        (lambda wd, sub: edit_manifest(sub, split_fingerprint="0" * 16), "fold split"),
        (lambda wd, sub: shutil.rmtree(wd / "base"), "run 'base' of model base/fusion not found"),
        (lambda wd, sub: (wd / "base" / "image" / "fold1.npz").unlink(), "fold(s) 1 of 2 missing"),
        (
            lambda wd, sub: edit_manifest(
                sub, models=["base/fusion", "base/audio"], weights={"base/fusion": 1, "base/audio": 1}, candidates=[]
            ),
            "base/audio is not in run",
        ),
        (lambda wd, sub: sub.with_suffix(".json").write_text("{"), "unreadable submission manifest"),
        (lambda wd, sub: edit_manifest(sub, runs=[{"name": "base"}]), "not a valid submission manifest"),
        (lambda wd, sub: edit_manifest(sub, weights={}), "not a valid submission manifest"),
    ],
)
def test_bad_submission_is_one_line_exit_2_and_makes_no_run(base, tiny_data, capsys, breakage, message):
    wd, sub = base
    breakage(wd, sub)
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0 and message in err and "fix" in err
    assert not (wd / "p").exists()


def test_a_chain_of_rounds_on_one_test_split_is_read_as_held_out_any_other_is_not(base, tiny_data, capsys):
    """Every round behind a submission must leave the same test split out for its fold models to be clean."""
    from competition.pipeline.run import confidence_estimate

    wd, sub = base
    comp = load_competition(tiny_data)
    subs = sub.parent

    def round_on(source: Path, name: str, *extra: str) -> Path:
        assert pseudo_cv(tiny_data, wd, source, "--run", name, *extra) == 0
        args = ["--data", str(tiny_data), "--workdir", str(wd), "--out", str(subs), "--name", name, "--run", name]
        assert main(["submit", *args, "--consensus", "off"]) == 0
        return subs / f"{name}.json"

    held = ("--set", "pseudo_test_folds=true")
    r1 = round_on(sub, "r1", *held)
    tf = seeded_test_folds(comp.n_test, 2, 0)
    with np.load(wd / "r1" / "pseudo.npz") as z:
        assert all(len(z[f"idx{k}"]) and (tf[z[f"idx{k}"]] != k).all() for k in range(2))
    assert json.loads((wd / "r1" / "pseudo.json").read_text())["test_folds_held_out"] is True
    assert "each fold's test fold left out" in " ".join(capsys.readouterr().out.split())  # rich wraps lines
    r2 = round_on(r1, "r2", *held)
    plain = round_on(sub, "plain")
    after_plain = round_on(plain, "after-plain", *held)
    other_seed = round_on(r1, "other-seed", *held, "--seed", "1")
    assert held_out_test_folds(sub.with_suffix(".json")) == (-1, -1)  # nothing trained on test rows
    assert held_out_test_folds(r1) == held_out_test_folds(r2) == (0, 2)
    assert held_out_test_folds(plain) is None and held_out_test_folds(after_plain) is None  # a round without
    assert held_out_test_folds(other_seed) is None  # its source's rounds left another split out
    clean, dirty = confidence_estimate(r2, comp), confidence_estimate(plain, comp)
    assert clean[1] is True and dirty[1] is False and 0 <= clean[0] <= 1 and 0 <= dirty[0] <= 1
