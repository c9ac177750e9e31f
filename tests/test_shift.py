"""Adversarial validation, the shift-aware (speaker-cluster) split and auto's choice, the per-modality
shift check of submit. Hand-made small data: synthetic "speakers" whose voice is an offset of the MFCC means."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.data.duplicates import duplicate_groups
from competition.data.load import Competition
from competition.ensemble.blend import Agreement, odd_ones_out, shifted_blocks
from competition.splits.adversarial import _likeness, adversarial_auc, adversarial_validation, load, save
from competition.splits.folds import load_or_make_folds
from competition.splits.speakers import speaker_clusters
from competition.utils.errors import UserError


def _recordings(speakers: list[int], rng: np.random.Generator, takes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(R, 507) MFCC rows and labels: each speaker's voice (a per-coefficient offset) plus a digit pattern."""
    voice = np.random.default_rng(99).normal(0, 2.0, (6, 13))  # the same six voices in every call
    digit = np.random.default_rng(98).normal(0, 2.0, (10, 39, 13))
    rows, labels = [], []
    for s in speakers:
        for d in range(10):
            for _ in range(takes):
                rows.append((digit[d] + voice[s] + rng.normal(0, 0.5, (39, 13))).reshape(-1))
                labels.append(d)
    return np.asarray(rows, dtype=np.float32), np.asarray(labels)


def _competition(train_speakers: list[int], test_speakers: list[int], seed: int = 0) -> Competition:
    """Each recording repeated twice in the training rows (with other images), as the shipped audio is."""
    rng = np.random.default_rng(seed)
    audio, y = _recordings(train_speakers, rng)
    audio, y = np.repeat(audio, 2, axis=0), np.repeat(y, 2)
    test_audio, _ = _recordings(test_speakers, rng, takes=2)
    n, m = len(y), len(test_audio)
    return Competition(
        root=Path(f"synthetic-{seed}"),
        image=rng.random((n, 784), dtype=np.float32),
        audio=audio,
        y=y,
        row_ids=np.arange(n),
        test_image=rng.random((m, 784), dtype=np.float32),
        test_audio=test_audio,
        sample_submission=pd.DataFrame({"row_id": np.arange(m), "label": 0}),
        fingerprint=f"synthetic{seed}{train_speakers}{test_speakers}",
    )


def test_adversarial_auc_is_half_on_a_random_split_and_one_on_a_shifted_one():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 8))
    is_test = (rng.random(600) < 0.3).astype(int)
    auc, std, folds, oof, _, _ = adversarial_auc(x, is_test, np.arange(600))
    assert abs(auc - 0.5) < 0.1 and len(folds) == 5 and std >= 0 and oof.shape == (600,)
    shifted = x + 1.5 * is_test[:, None]
    assert adversarial_auc(shifted, is_test, np.arange(600))[0] > 0.95


def test_adversarial_groups_duplicates_so_recordings_are_not_mistaken_for_a_shift():
    rng = np.random.default_rng(1)
    recordings = rng.normal(size=(150, 8))
    x = np.repeat(recordings, 4, axis=0)  # each recording in four rows, all on one side (train or test)
    is_test = np.repeat((rng.random(150) < 0.4).astype(int), 4)
    plain = adversarial_auc(x, is_test, np.arange(len(x)))[0]  # recognises recordings it saw in training
    grouped = adversarial_auc(x, is_test, duplicate_groups(x))[0]
    assert plain > 0.9 and abs(grouped - 0.5) < 0.15


def test_adversarial_validation_sees_new_speakers_in_the_audio_only():
    alike = adversarial_validation(_competition([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]))
    new = adversarial_validation(_competition([0, 1, 2, 3], [4, 5]))
    assert new["audio"].auc > 0.95 and new["both"].auc > 0.9
    assert abs(new["image"].auc - 0.5) < 0.15
    assert abs(alike["audio"].auc - 0.5) < 0.15


def test_test_likeness_is_high_for_test_rows_only_when_the_test_is_shifted(tmp_path):
    comp = _competition([0, 1, 2, 3], [4, 5])
    new = adversarial_validation(comp, max_rows=300)  # a subsample: the other rows scored by the fold classifiers
    n = comp.n_train
    for m in ("audio", "both"):
        p = new[m].test_likeness
        assert p.shape == (n + comp.n_test,) and np.all((p >= 0) & (p <= 1))
        assert p[n:].mean() > 0.7 and p[:n].mean() < 0.3
    image = new["image"].test_likeness
    assert abs(image[n:].mean() - image[:n].mean()) < 0.2  # random pixels: no shift to see
    save(tmp_path / "adversarial.json", comp, new)
    again = load(tmp_path / "adversarial.json", comp)
    assert {m: r.summary() for m, r in again.items()} == {m: r.summary() for m, r in new.items()}
    assert all(np.array_equal(again[m].test_likeness, new[m].test_likeness) for m in new)
    (tmp_path / "adversarial.npz").unlink()  # saved by an earlier version: the cache is computed again
    assert load(tmp_path / "adversarial.json", comp) is None
    assert load(tmp_path / "adversarial.json", comp, need_rows=False)["audio"].test_likeness is None


def test_rows_outside_the_subsample_are_scored_by_the_fold_that_never_saw_their_duplicates():
    class Constant:  # a fold classifier that answers its fold's number
        def __init__(self, k):
            self.k = k

        def predict_proba(self, x):
            return np.c_[1 - np.full(len(x), self.k), np.full(len(x), self.k)]

    groups = np.array([0, 0, 1, 1, 2, 3, 3])  # rows 0, 2, 3 in the subsample, in folds 0, 1, 1
    rows = np.array([0, 2, 4])
    oof = np.array([0.25, 0.5, 0.75])
    fold_of = np.array([0, 1, 1])
    p = _likeness(np.zeros((7, 2)), rows, groups, oof, fold_of, [Constant(0.1), Constant(0.3)])
    # row 1 duplicates row 0 (fold 0's validation row: fold 0's classifier never saw it), row 3 row 2 (fold 1);
    # rows 5, 6 have no duplicate in the subsample: the mean of the fold classifiers
    assert p.tolist() == pytest.approx([0.25, 0.1, 0.5, 0.3, 0.75, 0.2, 0.2])


def test_speaker_clusters_find_the_voices():
    audio, y = _recordings([0, 1, 2], np.random.default_rng(3))
    cluster = speaker_clusters(audio, y, 3)
    voice = np.repeat([0, 1, 2], 40)
    assert pd.crosstab(cluster, voice).gt(0).sum(axis=1).eq(1).all()  # each cluster is one voice


def test_auto_picks_the_cluster_split_on_new_speakers_saves_and_reuses_it(tmp_path):
    comp = _competition([0, 1, 2, 3], [4, 5])
    split = load_or_make_folds(comp, tmp_path, 3, 0, True, "auto")
    assert split.attrs["split"] == "cluster" and "AUC" in split.attrs["why"]
    assert json.loads((tmp_path / "folds.json").read_text())["split"] == "cluster"
    assert (tmp_path / "adversarial.json").is_file()
    assert split.groupby("group")["fold"].nunique().eq(1).all()  # no group on both sides of a split
    assert split.groupby(duplicate_groups(comp.audio))["fold"].nunique().eq(1).all()  # nor a recording
    again = load_or_make_folds(comp, tmp_path, 3, 5, True, "cluster")  # another seed reuses the saved split
    assert (again["fold"] == split["fold"]).all()
    with pytest.raises(UserError, match="split"):
        load_or_make_folds(comp, tmp_path, 3, 0, True, "grouped")  # another kind is never silently reused


def test_auto_keeps_the_grouped_split_when_the_test_rows_are_alike(tmp_path):
    comp = _competition([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5])
    split = load_or_make_folds(comp, tmp_path, 3, 0, True, "auto")
    asked = load_or_make_folds(comp, tmp_path / "grouped", 3, 0, True, "grouped")
    assert split.attrs["split"] == "grouped" and (split["fold"] == asked["fold"]).all()
    stratified = load_or_make_folds(comp, tmp_path / "old", 3, 0, False, "auto")  # group_duplicates = false
    assert stratified.attrs["split"] == "stratified"


def _pairs(models: list[str], shifted: set[frozenset]) -> list[Agreement]:
    out = []
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            moved = frozenset((a, b)) in shifted
            out.append(Agreement(a, b, 0.97, 0.6 if moved else 0.96, moved))
    return out


def test_per_modality_shift_check_leaves_out_every_audio_model_that_agree_with_each_other():
    # Issue 15's case: two runs, each with an audio model; the audio models agree with each other on the test
    # rows (new speakers move them alike) but part from every image-reading model, which agree among themselves.
    models = ["d/fusion", "d/image", "d/audio", "r/fusion", "r/gated", "r/image", "r/audio"]
    kinds = {"audio": ("audio",), "image": ("image",)}
    reads = {m: kinds.get(m.split("/")[1], ("image", "audio")) for m in models}
    audio = {"d/audio", "r/audio"}
    shifted = {frozenset((a, b)) for a in audio for b in models if b not in audio}
    agreement = _pairs(models, shifted)
    assert odd_ones_out(agreement) == []  # the per-model rule keeps both
    assert shifted_blocks(agreement, reads) == ["d/audio", "r/audio"]
    # Nothing shifted: nothing goes. One image model alone parting: it goes, as before.
    assert shifted_blocks(_pairs(models, set()), reads) == []
    lone = {frozenset(("r/image", b)) for b in models if b != "r/image"}
    assert shifted_blocks(_pairs(models, lone), reads) == ["r/image"]


def test_per_modality_shift_check_leaves_nothing_out_when_either_side_could_have_moved():
    models = ["a/image", "b/image", "a/audio", "b/audio"]
    reads = {m: (m.split("/")[1],) for m in models}
    shifted = {frozenset((a, b)) for a in models[:2] for b in models[2:]}
    assert shifted_blocks(_pairs(models, shifted), reads) == []


def test_too_few_test_rows_skip_adversarial_validation_and_auto_keeps_grouped(tmp_path):
    comp = _competition([0, 1, 2, 3], [4, 5])
    few = dataclasses.replace(comp, test_image=comp.test_image[:4], test_audio=comp.test_audio[:4])
    assert adversarial_validation(few) == {}
    assert load_or_make_folds(few, tmp_path, 3, 0, True, "auto").attrs["split"] == "grouped"
