"""The saved split: stratified, disjoint, every row once, duplicates never split, reused and guarded."""

from __future__ import annotations

import numpy as np
import pytest

from competition.data.duplicates import duplicate_groups
from competition.data.load import load_competition
from competition.splits.folds import load_or_make_folds, make_folds
from competition.utils.errors import UserError


def test_grouped_folds_on_shipped_data_are_stratified_and_keep_recordings_together():
    comp = load_competition()
    groups = duplicate_groups(comp.image, comp.audio)
    fold = make_folds(comp.y, 5, 0, groups)
    assert set(np.unique(fold)) == set(range(5))  # every row assigned exactly once (one fold id per row)
    sizes = np.bincount(fold)
    assert sizes.min() > 0.9 * len(fold) / 5
    # no duplicate group on both sides of a split
    per_group = {g: set(fold[groups == g]) for g in np.unique(groups)[:400]}
    assert all(len(s) == 1 for s in per_group.values())
    shared = np.array([len(np.unique(fold[groups == g])) for g in np.unique(groups)])
    assert shared.max() == 1
    # class balance: each fold's class shares within 2 points of the overall shares
    overall = np.bincount(comp.y, minlength=10) / len(comp.y)
    for k in range(5):
        share = np.bincount(comp.y[fold == k], minlength=10) / (fold == k).sum()
        assert np.abs(share - overall).max() < 0.02


def test_plain_stratified_folds_partition_rows():
    y = np.repeat(np.arange(10), 20)
    fold = make_folds(y, 4, 1)
    for k in range(4):
        val = np.flatnonzero(fold == k)
        train = np.flatnonzero(fold != k)
        assert len(np.intersect1d(val, train)) == 0 and len(val) + len(train) == len(y)
        assert (np.bincount(y[val], minlength=10) == 5).all()


def test_folds_are_seeded():
    y = np.repeat(np.arange(10), 30)
    assert (make_folds(y, 5, 3) == make_folds(y, 5, 3)).all()
    assert (make_folds(y, 5, 3) != make_folds(y, 5, 4)).any()


def test_split_is_saved_once_and_reused(tiny_data, tmp_path):
    comp = load_competition(tiny_data)
    first = load_or_make_folds(comp, tmp_path, 3, 0, True)
    assert (tmp_path / "folds.csv").exists() and (tmp_path / "folds.json").exists()
    again = load_or_make_folds(comp, tmp_path, 3, 7, True)  # another seed reuses the saved split
    assert (first["fold"] == again["fold"]).all()
    with pytest.raises(UserError, match="folds=3"):
        load_or_make_folds(comp, tmp_path, 5, 0, True)
    with pytest.raises(UserError, match="grouped"):
        load_or_make_folds(comp, tmp_path, 3, 0, False)


def test_split_of_another_data_folder_is_refused(tiny_data, tmp_path):
    load_or_make_folds(load_competition(tiny_data), tmp_path, 3, 0, True)
    y = tiny_data / "y_train.csv"
    y.write_text(y.read_text().replace("\n0,", "\n0,", 1) + "")  # same content: accepted
    load_or_make_folds(load_competition(tiny_data), tmp_path, 3, 0, True)
    np.save(tiny_data / "x_test_sp.npy", np.load(tiny_data / "x_test_sp.npy") + 1.0)
    with pytest.raises(UserError, match="data_fingerprint"):
        load_or_make_folds(load_competition(tiny_data), tmp_path, 3, 0, True)


def test_too_many_folds_for_a_class_is_an_error():
    with pytest.raises(UserError, match="fewer than --folds"):
        make_folds(np.array([0, 0, 1, 1, 1, 1]), 3, 0)


def test_a_fold_whose_training_rows_lack_a_class_is_refused(tmp_path):
    from competition.splits.folds import check_every_class_trains
    from competition.utils.errors import UserError

    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 9])
    ok = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    with pytest.raises(UserError, match=r"fold 2's training rows hold no row of class\(es\) \[9\]"):
        check_every_class_trains(y, ok, tmp_path / "folds.csv")  # class 9's only row validates fold 2
    check_every_class_trains(np.array([0, 1, 9, 0, 1, 9, 0, 1, 9]), ok, tmp_path / "folds.csv")
