"""Duplicate-aware consensus: hand-made groups with known answers, and ``submit --consensus`` end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

from competition.data.duplicates import duplicate_groups
from competition.data.load import load_competition
from competition.ensemble.consensus import (
    consensus_f1,
    decide_consensus,
    joint_groups,
    mixed_groups,
    pool,
    split_groups,
)
from competition.metrics import macro_f1
from competition.splits.folds import make_folds
from competition.utils.errors import UserError
from tests.test_submit import fake_run, submit


def grouped_data(n_groups: int = 40, size: int = 3, n_test_groups: int = 10, seed: int = 0):
    """Training rows in groups of ``size`` that share one audio row (and label); test rows: the first
    ``n_test_groups`` groups of 4 test-only recordings, then one test row repeating each of the first 5
    training recordings. Images are unique everywhere. Returns features, labels, folds (by group) and the
    true test labels."""
    rng = np.random.default_rng(seed)
    rec_audio = rng.normal(size=(n_groups + n_test_groups, 6))
    rec_label = np.arange(n_groups + n_test_groups) % 10
    train_rec = np.repeat(np.arange(n_groups), size)
    test_rec = np.concatenate([np.repeat(np.arange(n_groups, n_groups + n_test_groups), 4), np.arange(5)])
    image = rng.normal(size=(len(train_rec), 4))
    test_image = rng.normal(size=(len(test_rec), 4))
    fold_of = train_rec % 3
    return (
        [image, rec_audio[train_rec]],
        [test_image, rec_audio[test_rec]],
        rec_label[train_rec],
        fold_of,
        rec_label[test_rec],
    )


def noisy_probs(y: np.ndarray, wrong_every: int, seed: int) -> np.ndarray:
    """Probabilities right with a margin on most rows, mildly wrong (next class) on every ``wrong_every``-th."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(y), 10)) * 0.1
    wrong = np.arange(len(y)) % wrong_every == 1
    logits[np.arange(len(y)), np.where(wrong, (y + 1) % 10, y)] += np.where(wrong, 1.0, 3.0)
    return softmax(logits, axis=1)


def test_joint_groups_join_test_rows_with_test_and_training_rows():
    train, test, y, _, _ = grouped_data()
    g = joint_groups(train, test)
    assert len(np.unique(g.train)) == 40 and len(np.unique(g.test)) == 15
    assert np.isin(g.test[-5:], g.train).all() and not np.isin(g.test[:-5], g.train).any()
    assert (g.test[-5:] == g.train[[0, 3, 6, 9, 12]]).all()  # each repeats a training recording
    assert mixed_groups(g.train, y) == 0 and split_groups(g.train, np.repeat(np.arange(40) % 3, 3)) == 0
    # any modality joins: a test row sharing only its image with a training row joins that row's group
    test[0][0] = train[0][7]
    assert joint_groups(train, test).test[0] == joint_groups(train, test).train[7]


def test_pooling_gives_every_row_of_a_group_one_label_and_fixes_label_pure_groups():
    train, test, y, fold_of, _ = grouped_data()
    g = joint_groups(train, test)
    oof = noisy_probs(y, wrong_every=3, seed=1)  # one row in three wrong, never a whole group
    pooled = pool(oof, g.train)
    labels = pooled.argmax(1)
    for grp in np.unique(g.train):
        assert len(set(labels[g.train == grp])) == 1
    assert np.allclose(pooled.sum(1), 1.0)
    assert macro_f1(y, oof.argmax(1)) < 0.8 and consensus_f1(y, oof, g.train) == 1.0
    # sum of log-probabilities: a group's label is the argmax of its rows' summed log-probabilities
    grp = g.train == g.train[0]
    assert labels[grp][0] == np.log(oof[grp]).sum(0).argmax()


def test_test_rows_repeating_training_rows_take_their_label_and_the_rest_are_pooled():
    train, test, y, fold_of, y_test = grouped_data()
    g = joint_groups(train, test)
    test_probs = noisy_probs(y_test, wrong_every=4, seed=2)
    test_probs[-5:] = softmax(np.eye(10)[(y_test[-5:] + 3) % 10] * 9, axis=1)  # confidently wrong
    rep = decide_consensus("auto", g, y, fold_of, noisy_probs(y, 3, 1), test_probs)
    assert rep.applied and rep.oof_after == 1.0 and rep.oof_before < 0.8
    t = rep.test
    assert (t.probs.argmax(1) == y_test).all()  # training labels for the last 5, pooled groups for the rest
    assert t.from_train == 5 and t.groups == 10 and t.grouped_rows == 40
    assert t.changed == int((test_probs.argmax(1) != y_test).sum())
    assert "5 rows take a training row's label" in rep.line and "\n" not in rep.line
    assert rep.manifest()["test_rows_from_train_labels"] == 5


def test_mixed_groups_turn_consensus_off_in_one_line():
    train, test, y, fold_of, _ = grouped_data()
    g = joint_groups(train, test)
    y = y.copy()
    y[[1, 4]] = (y[[1, 4]] + 1) % 10  # two groups now hold two labels
    oof, tp = noisy_probs(y, 3, 1), noisy_probs(np.zeros(45, dtype=int), 3, 2)
    rep = decide_consensus("auto", g, y, fold_of, oof, tp)
    assert not rep.applied and rep.mixed_groups == 2
    assert rep.line.startswith("consensus off: 2 of 40 duplicate groups") and "\n" not in rep.line
    with pytest.raises(UserError, match="2 of 40 duplicate groups of training rows hold more than one label"):
        decide_consensus("on", g, y, fold_of, oof, tp)


def test_a_split_that_is_not_grouped_is_refused():
    train, test, y, _, _ = grouped_data()
    g = joint_groups(train, test)
    fold_of = np.arange(len(y)) % 3  # the rows of each group land in three folds
    oof, tp = noisy_probs(y, 3, 1), noisy_probs(np.zeros(45, dtype=int), 3, 2)
    rep = decide_consensus("auto", g, y, fold_of, oof, tp)
    assert not rep.applied and rep.line.startswith("consensus refused: 40 duplicate groups") and "leak" in rep.line
    with pytest.raises(UserError, match="span several folds.*fix:"):
        decide_consensus("on", g, y, fold_of, oof, tp)


def test_without_duplicates_consensus_is_a_no_op_that_says_so():
    rng = np.random.default_rng(0)
    train, test = [rng.normal(size=(30, 4))], [rng.normal(size=(10, 4))]
    y = np.arange(30) % 10
    rep = decide_consensus("on", joint_groups(train, test), y, np.arange(30) % 3, noisy_probs(y, 3, 1), None)
    assert not rep.applied and "no duplicate rows" in rep.line


def test_auto_keeps_consensus_off_when_it_lowers_the_score():
    train, test, y, fold_of, _ = grouped_data()
    g = joint_groups(train, test)
    oof = noisy_probs(y, 3, 1)
    oof[::3] = softmax(np.eye(10)[(y[::3] + 1) % 10] * 40, axis=1)  # a confidently wrong row in every group
    rep = decide_consensus("auto", g, y, fold_of, oof, noisy_probs(np.zeros(45, dtype=int), 3, 2))
    assert rep.oof_after < rep.oof_before and not rep.applied and "(lower: off)" in rep.line


# --- submit end to end on the tiny data -------------------------------------------------------------------


def test_submit_consensus_on_a_grouped_split(tmp_path, tiny_data, capsys):
    comp = load_competition(tiny_data)
    fold_of = make_folds(comp.y, 2, 0, duplicate_groups(comp.image, comp.audio))
    fake_run(tmp_path / "wd", "r1", tiny_data, fold_of=fold_of)
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub", "--consensus", "on", "--name", "c") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "consensus on: out-of-fold macro-F1" in out and "blend + consensus (written)" in out
    manifest = json.loads((tmp_path / "sub" / "c.json").read_text())
    assert manifest["consensus"]["applied"] and manifest["consensus"]["test_groups"] > 0
    assert manifest["test_predictions"] == {"r1/fusion": "fold models (2)", "r1/image": "fold models (2)"}
    labels = pd.read_csv(tmp_path / "sub" / "c.csv")["label"].to_numpy()
    g = joint_groups([comp.image, comp.audio], [comp.test_image, comp.test_audio])
    for grp in np.unique(g.test):
        assert len(set(labels[g.test == grp])) == 1
    # fake test logits say row i -> class i % 10: consensus changed the rows of groups that disagree
    assert manifest["consensus"]["test_rows_changed"] == int((labels != np.arange(len(labels)) % 10).sum()) > 0


def test_submit_consensus_on_refuses_a_split_that_is_not_grouped(tmp_path, tiny_data, capsys):
    fake_run(tmp_path / "wd", "r1", tiny_data)  # row i -> fold i % 2: duplicates split across folds
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub", "--consensus", "on") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --consensus on:") and "span several folds" in err and len(err.splitlines()) == 1
    assert not list((tmp_path / "sub").glob("*"))  # nothing written (the folder is checked writable first)
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub") == 0  # auto: off, with the reason
    assert "consensus refused:" in " ".join(capsys.readouterr().out.split())
