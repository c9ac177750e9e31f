"""Variance-reduction levers: seed bagging (a unit per seed, averaged on loading, resumed per seed), weight
averaging (the averaged model is scored and saved), mixup/cutmix, test-time augmentation (validation and test
rows predicted alike), and that every lever is off by default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from competition.config import Config, load_config
from competition.data.load import load_competition
from competition.models import create_model
from competition.store.loading import load_finished_run, load_run
from competition.store.runs import model_seeds, unit_path
from competition.tracking.leaderboard import cv_rows
from competition.train import cv, executor
from competition.train.augment import mix_rows, tta_views
from competition.train.learner import Learner, model_kwargs
from competition.utils.errors import UserError

TINY = {"epochs": 1, "folds": 2, "batch_size": 32, "workers": 1, "models": "image"}


def tiny_cfg(**kw):
    return load_config(None, TINY | kw)


def test_levers_are_off_by_default():
    cfg = Config()
    assert (cfg.seeds, cfg.ema, cfg.swa_epochs, cfg.mixup, cfg.cutmix, cfg.tta_shift, cfg.tta_mask) == (
        1,
        0,
        0,
        0,
        0,
        0,
        0,
    )


@pytest.mark.parametrize(
    "bad", [{"seeds": "0"}, {"ema": "0.2"}, {"ema": "1"}, {"swa_epochs": "9"}, {"mixup": "-1"}, {"tta_shift": "9"},
            {"ema": "0.9", "swa_epochs": "1"}, {"per_model.image.seeds": "0"}],
)  # fmt: skip
def test_bad_lever_values_are_refused(bad):
    with pytest.raises(UserError):
        load_config(None, {"epochs": "2"} | bad)


def test_seeds_give_a_unit_each_averaged_on_loading_and_resume_per_seed(tiny_data, tmp_path, monkeypatch):
    real, calls = executor.train_unit, []

    def flaky(*args, **kwargs):
        calls.append((args[1], args[2], args[5]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during fold 0's second seed
        return real(*args, **kwargs)

    monkeypatch.setattr(executor, "train_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        cv.run_cv(tiny_cfg(seeds=3), tiny_data, tmp_path, "r", quiet=True)
    run_dir = tmp_path / "r"
    assert [p.name for p in sorted((run_dir / "image").glob("*.npz"))] == ["fold0.npz"]  # seed 0 where it always was
    assert load_run(run_dir, 240).oof == {}  # a fold counts once every seed of it is trained

    calls.clear()
    monkeypatch.setattr(executor, "train_unit", lambda *a, **k: calls.append((a[1], a[2], a[5])) or real(*a, **k))
    result = cv.run_cv(tiny_cfg(seeds=3), tiny_data, tmp_path, "r", quiet=True)
    assert calls == [("image", 0, 1), ("image", 0, 2), ("image", 1, 0), ("image", 1, 1), ("image", 1, 2)]
    names = sorted(p.name for p in (run_dir / "image").glob("fold*"))
    assert "fold1_seed2.npz" in names and "fold1_seed2.pt" in names and "fold1_seed2_history.csv" in names

    comp = load_competition(tiny_data)
    run = load_finished_run(run_dir, comp)
    for k in range(2):
        seeds = [np.load(unit_path(run_dir, "image", k, s)) for s in range(3)]
        assert not np.array_equal(seeds[0]["oof_logits"], seeds[1]["oof_logits"])  # distinct seeds
        val = seeds[0]["val_idx"]
        np.testing.assert_allclose(run.oof["image"][val], np.mean([z["oof_logits"] for z in seeds], 0), rtol=1e-6)
        np.testing.assert_allclose(run.test["image"][k], np.mean([z["test_logits"] for z in seeds], 0), rtol=1e-6)
        assert run.folds["image"][k].seeds == 3
    assert list(result.per_fold["seeds"]) == [3, 3]
    assert model_seeds(run.meta["config"], "image") == 3
    (row,) = cv_rows(tmp_path, Config())  # `runs` shows the bag
    assert (row["folds_done"], row["seeds"], row["recipe"]["seeds"]) == (2, 3, 3)


def test_seed_zero_of_a_bag_is_the_unbagged_unit(tiny_data, tmp_path):
    """Bagging adds seeds beside the run it extends: its seed 0 is exactly the unit of a run without it."""
    cv.run_cv(tiny_cfg(), tiny_data, tmp_path, "one", quiet=True)
    cv.run_cv(tiny_cfg(seeds=2), tiny_data, tmp_path, "two", quiet=True)
    for k in range(2):
        a, b = np.load(unit_path(tmp_path / "one", "image", k)), np.load(unit_path(tmp_path / "two", "image", k))
        np.testing.assert_array_equal(a["test_logits"], b["test_logits"])


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.random((n, 784), dtype=np.float32),
        rng.standard_normal((n, 507)).astype(np.float32),
        rng.integers(0, 10, n),
    )


def test_tta_treats_validation_and_test_rows_alike():
    image, audio, y = _data()
    cfg = load_config(None, {"epochs": 2, "batch_size": 32, "tta_shift": 1, "tta_mask": 4})
    learner = Learner("fusion", cfg, seed=3).fit(image[:64], audio[:64], y[:64], val=(image[64:], audio[64:], y[64:]))
    as_test = learner.predict_logits(image[64:], audio[64:])  # the test rows' path
    np.testing.assert_array_equal(learner.val_logits_, as_test)  # the out-of-fold rows' path: the same views
    plain = learner.predict_logits(image[64:], audio[64:], tta=False)
    assert not np.allclose(as_test, plain)  # the views do change the logits
    views = tta_views(torch.tensor(image[:2]), torch.tensor(audio[:2]), cfg)
    assert len(views) == 1 + 4 + 3
    right = views[1][0].view(2, 28, 28)
    assert (
        torch.equal(right[:, :, 1:], torch.tensor(image[:2]).view(2, 28, 28)[:, :, :-1]) and (right[:, :, 0] == 0).all()
    )


@pytest.mark.parametrize("keys", [{"ema": 0.9}, {"swa_epochs": 2}])
def test_the_averaged_model_is_scored_and_saved(keys):
    image, audio, y = _data()
    cfg = load_config(None, {"epochs": 3, "batch_size": 32, "lr": 1e-2} | keys)
    learner = Learner("fusion", cfg, seed=1).fit(image[:64], audio[:64], y[:64], val=(image[64:], audio[64:], y[64:]))
    plain = Learner("fusion", load_config(None, {"epochs": 3, "batch_size": 32, "lr": 1e-2}), seed=1)
    plain.fit(image[:64], audio[:64], y[:64])
    assert not np.allclose(learner.predict_logits(image, audio), plain.predict_logits(image, audio))
    # a model rebuilt from the saved weights predicts what was scored
    model = create_model("fusion", **model_kwargs("fusion", cfg))
    model.load_state_dict(learner.model_.state_dict())
    with torch.no_grad():
        again = model.eval()(torch.tensor(image[64:]), torch.tensor(audio[64:])).numpy()
    np.testing.assert_allclose(again, learner.val_logits_, rtol=1e-5, atol=1e-6)


def test_mixup_and_cutmix_mix_both_modalities_alike():
    gen = torch.Generator().manual_seed(0)
    image, audio, _ = (torch.tensor(a) for a in _data(8))
    off = load_config(None, {"epochs": 2})
    state = gen.get_state()
    assert mix_rows(image, audio, off, gen)[2] is None and torch.equal(gen.get_state(), state)  # nothing drawn
    img, aud, partner, lam = mix_rows(image, audio, load_config(None, {"epochs": 2, "mixup": 0.4}), gen)
    assert 0 <= lam <= 1
    torch.testing.assert_close(img, lam * image + (1 - lam) * image[partner])
    torch.testing.assert_close(aud, lam * audio + (1 - lam) * audio[partner])
    img, aud, partner, lam = mix_rows(image, audio, load_config(None, {"epochs": 2, "cutmix": 1.0}), gen)
    moved = partner != torch.arange(8)  # rows mixed with another row (random floats: every value differs)
    image_share = (img != image)[moved].float().mean().item()  # of the image taken from the partner
    frames_share = (aud.view(8, 39, 13) != audio.view(8, 39, 13)).all(2)[moved].float().mean().item()
    assert abs((1 - lam) - (image_share + frames_share) / 2) < 0.02
    assert abs(image_share - frames_share) < 1 / 39 + 0.01  # the same weight for both modalities
