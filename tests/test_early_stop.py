"""Training length by early stopping (``early_stop``): the inner split, the WSD schedule, the validation fold that
steers nothing, determinism, and the paths that train units (cv, refit, the progress display)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import competition.train.refit as refit
from competition.config import load_config
from competition.data.duplicates import duplicate_groups
from competition.data.load import load_competition
from competition.splits.kinds import inner_split
from competition.store.loading import load_run
from competition.store.runs import UnitResult, read_run_config
from competition.train import cv, unit
from competition.train.learner import WSD, Learner
from competition.train.progress import CVProgress, EpochEvent
from competition.utils.errors import UserError

ES = {"early_stop": True, "batch_size": 32, "workers": 1, "folds": 2}


def noisy_problem(n: int = 300, seed: int = 0, flip: float = 0.3):
    """An easy pattern (the label's pixel block is bright) with a share of labels flipped at random: the model
    learns the pattern in a few epochs, then memorises the flipped labels, so a held-out loss turns up."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    img = rng.normal(0, 0.3, (n, 784)).astype(np.float32)
    for c in range(10):
        img[y == c, c * 70 : c * 70 + 70] += 1.0
    aud = rng.normal(0, 1, (n, 507)).astype(np.float32)
    noisy = rng.random(n) < flip
    y = np.where(noisy, rng.integers(0, 10, n), y)
    return img, aud, y


def test_inner_split_keeps_groups_whole_and_takes_about_the_share():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 400, 2000)  # recordings repeated ~5 times
    y = groups % 10
    inner = inner_split(y, groups, 0.1, seed=3)
    rest = np.setdiff1d(np.arange(len(y)), inner)
    assert not set(groups[inner]) & set(groups[rest])
    assert 0.07 < len(inner) / len(y) < 0.13
    assert set(y[inner]) == set(range(10))  # stratified: every class on both sides
    np.testing.assert_array_equal(inner, inner_split(y, groups, 0.1, seed=3))
    assert not np.array_equal(inner, inner_split(y, groups, 0.1, seed=4))
    # few groups (the cluster split's speaker-like clusters): one whole group
    clusters = np.repeat([0, 1, 2], 100)
    inner = inner_split(np.tile(np.arange(10), 30), clusters, 0.1, seed=0)
    assert len(np.unique(clusters[inner])) == 1 and len(inner) == 100
    with pytest.raises(UserError, match="single group"):
        inner_split(y, np.zeros(len(y), dtype=int), 0.1, seed=0)


def test_inner_rows_of_a_unit_are_its_training_rows_and_keep_duplicates_on_one_side(tiny_data, tmp_path):
    comp = load_competition(tiny_data)
    groups = duplicate_groups(comp.image, comp.audio)
    assert len(np.unique(groups)) < comp.n_train  # the shipped rows repeat recordings: there is something to keep
    fold_of = (np.arange(comp.n_train) % 2).astype(np.int64)  # a split that ignores them: inner must not
    cfg = load_config(None, ES | {"inner_share": 0.2})
    for fold in (0, 1):
        tr = np.flatnonzero(fold_of != fold)
        inner = tr[unit.inner_rows(comp, tr, cfg, seed=7)]
        assert (fold_of[inner] != fold).all() and len(inner) > 0  # never a validation-fold row
        assert not set(groups[inner]) & set(groups[np.setdiff1d(tr, inner)])


def test_wsd_warms_up_holds_then_decays_to_zero_and_respects_max_epochs():
    wsd = WSD(lr=1.0, max_epochs=20, patience=2)
    assert wsd.rate(1, 0, 10) == pytest.approx(0.1) and wsd.rate(1, 9, 10) == pytest.approx(1.0)
    for epoch, loss in enumerate([2.0, 1.0, 0.9, 0.95, 0.9], start=1):  # no gain after epoch 3
        wsd.end_epoch(epoch, loss)
    assert wsd.phase == "decay" and wsd.decay_from == 5 and wsd.last_epoch == 5 + 2  # round(0.3 * 5) = 2
    rates = [wsd.rate(e, s, 10) for e in (6, 7) for s in range(10)]
    assert rates[0] == pytest.approx(1.0) and all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert 0 < rates[-1] < 0.01
    capped = WSD(lr=1.0, max_epochs=10, patience=100)
    for epoch in range(1, 10):
        capped.end_epoch(epoch, 1.0 / epoch)  # always improving: the cap starts the decay in time
        if capped.phase == "decay":
            break
    assert capped.last_epoch == 10 and capped.decay_from == 8  # 8 + round(2.4) = 10


def test_config_keys_are_validated_and_per_model():
    for bad in ({"max_epochs": 1}, {"patience": 0}, {"inner_share": 0}, {"inner_share": 0.7}):
        with pytest.raises(UserError):
            load_config(None, bad)
    cfg = load_config(None, {"per_model.audio.early_stop": "true", "per_model.audio.max_epochs": "9"})
    assert cfg.for_model("audio").early_stop and cfg.for_model("audio").max_epochs == 9
    assert not cfg.for_model("image").early_stop
    assert unit.planned_epochs(cfg, "audio") == 9 and unit.planned_epochs(cfg, "image") == cfg.epochs


def test_stops_before_max_epochs_on_an_easy_problem_and_the_validation_fold_steers_nothing():
    img, aud, y = noisy_problem()
    v_img, v_aud, v_y = noisy_problem(100, seed=1)
    inner = np.arange(30)
    cfg = load_config(None, {"early_stop": True, "max_epochs": 40, "patience": 2, "batch_size": 32, "lr": 3e-3})
    a = Learner("image", cfg, seed=5).fit(img, aud, y, val=(v_img, v_aud, v_y), inner=inner)
    garbage = np.random.default_rng(9).integers(0, 10, len(v_y))
    b = Learner("image", cfg, seed=5).fit(img, aud, y, val=(v_img, v_aud, garbage), inner=inner)
    hist = pd.DataFrame(a.history_)
    assert a.epochs_ == len(hist) < 40
    phases = hist["phase"].tolist()
    decay_from = phases.index("decay")  # epochs before the decay
    assert phases[0] == "warmup" and set(phases[1:decay_from]) == {"stable"}
    assert phases.count("decay") == max(1, round(0.3 * decay_from)) == a.epochs_ - decay_from
    assert hist["inner_loss"].iloc[:decay_from].notna().all() and hist["inner_loss"].iloc[decay_from:].isna().all()
    assert a.epochs_ == b.epochs_
    for (k, va), vb in zip(a.model_.state_dict().items(), b.model_.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert not np.allclose(pd.DataFrame(b.history_)["val_loss"], hist["val_loss"])  # it was scored, not used


def test_inner_rows_are_held_out_until_the_decay_then_join(monkeypatch):
    from competition.train import learner as training

    img, aud, y = noisy_problem(120)
    inner = np.arange(0, 120, 6)
    seen = []
    monkeypatch.setattr(training, "augment_batch", lambda i, a, cfg, g: (seen.append(i.clone()), (i, a))[1])
    cfg = load_config(None, {"early_stop": True, "max_epochs": 3, "batch_size": 16})
    learner = Learner("image", cfg, seed=0).fit(img, aud, y, inner=inner)
    assert learner.epochs_ == 3 and [r["phase"] for r in learner.history_] == ["warmup", "stable", "decay"]
    per_epoch = np.split(torch.cat(seen).numpy(), np.cumsum([len(y) - len(inner)] * 2))
    held = {r.tobytes() for r in img[inner]}
    assert not any(r.tobytes() in held for r in np.concatenate(per_epoch[:2]))  # warm-up and stable epochs
    assert {r.tobytes() for r in per_epoch[2]} == {r.tobytes() for r in img}  # decay: every row, once


def test_cv_with_early_stop_is_deterministic_and_records_the_epochs_trained(tiny_data, tmp_path):
    cfg = load_config(None, ES | {"models": ["image", "audio"], "max_epochs": 4, "patience": 1})
    a = cv.run_cv(cfg, tiny_data, tmp_path / "a", "r", quiet=True)
    cv.run_cv(cfg, tiny_data, tmp_path / "b", "r", quiet=True)
    comp = load_competition(tiny_data)
    oa, ob = load_run(tmp_path / "a" / "r", comp.n_train).oof, load_run(tmp_path / "b" / "r", comp.n_train).oof
    for m in ("image", "audio"):
        np.testing.assert_array_equal(oa[m], ob[m])
    for r in a.per_fold.itertuples():
        hist = pd.read_csv(tmp_path / "a" / "r" / r.model / f"fold{r.fold}_history.csv")
        assert r.epochs == len(hist) <= 4 and hist["phase"].iloc[-1] == "decay"
        assert {"inner_loss", "inner_macro_f1", "val_macro_f1"} <= set(hist.columns)
    # a full-data refit stops the same way, on an inner split of all rows
    run = tmp_path / "a" / "r"
    preds = refit.refit_run(run, read_run_config(run), comp, ["image"], 1, quiet=True)["image"]
    assert preds.shape == (1, comp.n_test, 10) and np.isfinite(preds).all()
    with np.load(refit.refit_path(run, "image", 0)) as z:
        assert 2 <= json.loads(str(z["result"]))["epochs"] <= 4


def test_progress_takes_the_unused_epochs_of_an_early_stopped_unit_off_the_total():
    with CVProgress(2 * 10, {"image": 10}) as progress:
        for epoch in range(1, 5):
            progress.epoch(EpochEvent("image", 0, 10, {"epoch": epoch, "phase": "stable"}))
        progress.unit_trained(UnitResult("image", 0, 0.9, 0.9, 1.0, epochs=4))
        overall = progress.progress.tasks[progress.overall]
        assert overall.total == 14 and overall.completed == 4
