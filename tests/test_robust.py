"""Robust models: augmentations (training rows only, shapes, dtypes, seeding), the gated and attention fusion
models, the lazily imported timm backbones, per-recording audio normalisation, and bench/degrade.py's degraded
competition copies."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ROOT
from torch import nn

from competition.config import Config, load_config
from competition.data.duplicates import duplicate_ids
from competition.data.load import load_competition, normalise_audio
from competition.models import create_model, model_hparams
from competition.train import augment, cv
from competition.train import learner as training
from competition.train.unit import fit_unit
from competition.utils.errors import UserError
from competition.utils.paths import RECIPES_DIR

IMAGE_TRANSFORMS = [
    (augment.random_shift, 3),
    (augment.random_rotate, 20.0),
    (augment.random_erase, 0.3),
    (augment.add_pixel_noise, 0.2),
]
AUDIO_TRANSFORMS = [(augment.mix_audio, 2.0), (augment.time_mask, 8), (augment.freq_mask, 4), (augment.add_noise, 0.5)]
TRANSFORMS = IMAGE_TRANSFORMS + AUDIO_TRANSFORMS
ALL_ON = {
    "shift": 2, "rotate": 15.0, "erase": 0.3, "erase_p": 0.5, "image_noise": 0.1, "image_noise_p": 0.5,
    "audio_mix": 2.0, "audio_mix_p": 0.5, "time_mask": 6, "freq_mask": 3, "audio_noise": 0.3, "audio_noise_p": 0.5,
}  # fmt: skip


IMAGE_FNS = [f for f, _ in IMAGE_TRANSFORMS]


def batch(fn, b: int = 16) -> torch.Tensor:
    """A batch of what ``fn`` transforms: (B, 784) pixels in [0, 1] or (B, 507) standardised MFCCs."""
    g = torch.Generator().manual_seed(123)
    return torch.rand(b, 784, generator=g) if fn in IMAGE_FNS else torch.randn(b, 507, generator=g)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the transforms ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn,mag", TRANSFORMS, ids=[f.__name__ for f, _ in TRANSFORMS])
def test_transform_keeps_shape_dtype_and_input(fn, mag):
    x = batch(fn)
    before = x.clone()
    out = fn(x, mag, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(x, before)  # not modified in place
    assert not torch.equal(out, x)  # it did something
    if fn in IMAGE_FNS:
        assert out.min() >= 0 and out.max() <= 1  # still pixels


@pytest.mark.parametrize("fn,mag", TRANSFORMS, ids=[f.__name__ for f, _ in TRANSFORMS])
def test_transform_is_seeded(fn, mag):
    x = batch(fn)
    torch.testing.assert_close(fn(x, mag, gen(1)), fn(x, mag, gen(1)))
    assert not torch.equal(fn(x, mag, gen(1)), fn(x, mag, gen(2)))


@pytest.mark.parametrize("fn,mag", TRANSFORMS, ids=[f.__name__ for f, _ in TRANSFORMS])
def test_transform_off_draws_nothing_and_p_picks_rows(fn, mag):
    x = batch(fn, b=64)
    g = gen()
    state = g.get_state()
    assert fn(x, 0, g) is x and fn(x, mag, g, p=0.0) is x
    assert torch.equal(g.get_state(), state)  # an "off" transform leaves the random stream alone
    out = fn(x, mag, gen(), p=0.5)
    changed = (out != x).any(dim=1)
    assert 10 < changed.sum() < 54  # about half the rows, the others untouched


def test_masks_blank_contiguous_frames_and_coefficients():
    x = torch.randn(32, 507) + 10  # no zeros in the input
    t = augment.time_mask(x, 8, gen()).view(32, 39, 13)
    for row in t:
        frames = torch.nonzero((row == 0).all(dim=1)).flatten()
        assert len(frames) <= 8 and (row == 0).sum() == 13 * len(frames)
        if len(frames):
            assert frames[-1] - frames[0] == len(frames) - 1  # one band
    f = augment.freq_mask(x, 4, gen()).view(32, 39, 13)
    for row in f:
        coefs = torch.nonzero((row == 0).all(dim=0)).flatten()
        assert len(coefs) <= 4 and (row == 0).sum() == 39 * len(coefs)
    assert (f == 0).any()


def test_rotation_by_zero_degrees_rows_are_exact():
    x = torch.rand(8, 784)
    out = augment.random_rotate(x, 30.0, gen(), p=0.0)
    assert out is x


def test_augment_batch_defaults_are_off_and_shift_only_keeps_its_old_stream():
    img, aud = torch.rand(8, 784), torch.randn(8, 507)
    out_img, out_aud = augment.augment_batch(img, aud, Config(), gen())
    assert out_img is img and out_aud is aud
    # a config using only the older keys (shift, audio_noise) draws exactly what it drew before
    g1, g2 = gen(5), gen(5)
    a_img, a_aud = augment.augment_batch(img, aud, Config(shift=2, audio_noise=0.3), g1)
    b_img = augment.random_shift(img, 2, g2)
    b_aud = aud + 0.3 * torch.randn(aud.shape, generator=g2)
    torch.testing.assert_close((a_img, a_aud), (b_img, b_aud))
    assert torch.equal(g1.get_state(), g2.get_state())


def test_augmentation_config_keys_are_validated():
    with pytest.raises(UserError, match="rotate"):
        load_config(None, {"rotate": "200"})
    with pytest.raises(UserError, match="erase_p"):
        load_config(None, {"erase_p": "1.5"})
    with pytest.raises(UserError, match="time_mask"):
        load_config(None, {"time_mask": "40"})
    cfg = load_config(RECIPES_DIR / "robust.toml")
    assert cfg.modality_dropout > 0 and cfg.audio_mix > 0 and cfg.erase > 0
    assert cfg.for_model("fusion").audio_mix > 0 and cfg.for_model("audio").audio_mix == 0


# --- augmentation inside training ---------------------------------------------------------------------------


def tiny_arrays(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    img = rng.random((n, 784), dtype=np.float32)
    aud = rng.standard_normal((n, 507), dtype=np.float32)
    return img, aud, rng.integers(0, 10, n)


def test_only_training_rows_are_augmented(monkeypatch):
    img, aud, y = tiny_arrays()
    v_img, v_aud, v_y = tiny_arrays(20, seed=1)
    copies = [a.copy() for a in (img, aud, v_img, v_aud)]
    seen = []

    def spy(i, a, cfg, g):
        seen.append((i.clone(), a.clone()))
        return augment.augment_batch(i, a, cfg, g)

    monkeypatch.setattr(training, "augment_batch", spy)
    cfg = load_config(None, ALL_ON | {"epochs": 2, "batch_size": 16, "modality_dropout": 0.3})
    learner = training.Learner("gated", cfg, seed=0).fit(img, aud, y, val=(v_img, v_aud, v_y))
    # every augmented batch holds training rows only: each epoch sees each training row once
    got = torch.cat([i for i, _ in seen])
    assert len(got) == 2 * len(img)
    rows = {r.numpy().tobytes() for r in got}
    assert rows == {r.tobytes() for r in img}
    # prediction is not augmented: it is the eval-mode model on the untouched rows, every time
    n_calls = len(seen)
    logits = learner.predict_logits(v_img, v_aud)
    assert len(seen) == n_calls
    with torch.no_grad():
        direct = learner.model_.eval()(torch.tensor(v_img), torch.tensor(v_aud)).numpy()
    np.testing.assert_allclose(logits, direct, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(logits, learner.val_logits_)
    for a, b in zip((img, aud, v_img, v_aud), copies, strict=True):
        np.testing.assert_array_equal(a, b)  # no input array was touched


def test_augmented_training_is_seeded():
    img, aud, y = tiny_arrays()
    cfg = load_config(None, ALL_ON | {"epochs": 1, "batch_size": 16})
    runs = [training.Learner("fusion", cfg, seed=s).fit(img, aud, y).predict_logits(img, aud) for s in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


# --- the new fusion models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gated", "attention"])
def test_new_fusion_trains_one_step_and_exposes_embeddings(name):
    assert set(model_hparams(name)) == set(model_hparams("fusion"))  # the same config keys reach it
    m = create_model(name, image_dropout=0.1, audio_dropout=0.2, modality_dropout=0.4)
    img, aud, y = torch.rand(8, 784), torch.randn(8, 507), torch.arange(8) % 10
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in m.parameters()]
    loss = nn.functional.cross_entropy(m(img, aud), y)
    loss.backward()
    opt.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))  # every layer learns
    m.eval()
    feats = m.forward_features(img, aud)
    assert feats.shape == (8, 128)
    torch.testing.assert_close(m.forward_head(feats), m(img, aud))
    enc = m.encode(img, aud)
    assert enc["image"].shape == (8, 64) and enc["audio"].shape == (8, 64)
    torch.testing.assert_close(enc["fused"], feats)  # eval mode: no modality dropout


@pytest.mark.parametrize("name", ["gated", "attention"])
def test_modality_weights_scale_the_concatenated_embeddings(name):
    m = create_model(name).eval()
    img, aud = torch.rand(5, 784), torch.randn(5, 507)
    enc = m.encode(img, aud)
    w = m.modality_weights(enc["image"], enc["audio"])
    assert w.shape == (5, 2) and (w > 0).all()
    if name == "attention":
        torch.testing.assert_close(w.sum(dim=1), torch.full((5,), 2.0))  # softmax, x2
    else:
        assert (w < 1).all()  # sigmoid gates
    torch.testing.assert_close(enc["fused"], torch.cat([w[:, :1] * enc["image"], w[:, 1:] * enc["audio"]], 1))


def test_modality_dropout_blanks_one_modality_never_both():
    from competition.models import drop_modalities

    img, aud = torch.ones(4000, 64), torch.ones(4000, 64)
    torch.manual_seed(0)
    i, a = drop_modalities(img, aud, 0.4, training=True)
    img_off, aud_off = (i == 0).all(1), (a == 0).all(1)
    assert not (img_off & aud_off).any()
    assert 0.17 < img_off.float().mean() < 0.23 and 0.17 < aud_off.float().mean() < 0.23
    assert drop_modalities(img, aud, 0.4, training=False) == (img, aud)


def test_new_models_run_through_cv(tiny_data, tmp_path):
    cfg = load_config(None, ALL_ON | {"epochs": 1, "folds": 2, "workers": 1, "models": "gated,attention"})
    result = cv.run_cv(cfg, tiny_data, tmp_path, "robust", quiet=True)
    assert set(result.oof.index) == {"gated", "attention"}
    ck = torch.load(tmp_path / "robust" / "gated" / "fold0.pt", weights_only=False)
    assert ck["hparams"]["modality_dropout"] == 0.0 and set(ck["hparams"]) == set(model_hparams("gated"))


# --- timm backbones ------------------------------------------------------------------------------------------


class _FakeBackbone(nn.Module):
    """Stands in for a timm model built with num_classes=0: pooled features of width num_features."""

    num_features = 12

    def __init__(self, in_chans: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, self.num_features, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def fake_timm(calls: list) -> types.ModuleType:
    mod = types.ModuleType("timm")

    def create_model(name, pretrained=False, in_chans=3, num_classes=1000, drop_rate=0.0):
        calls.append({"name": name, "pretrained": pretrained, "in_chans": in_chans, "num_classes": num_classes})
        if name not in ("resnet18", "efficientnet_b0"):
            raise RuntimeError(f"Unknown model ({name})")
        return _FakeBackbone(in_chans)

    mod.create_model = create_model
    return mod


def test_timm_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    with pytest.raises(UserError, match=r"timm could not be imported .*install timm and a torchvision matching torch"):
        create_model("timm_resnet18")
    with pytest.raises(UserError, match="timm could not be imported"):
        create_model("timm_resnet18_gated", modality_dropout=0.2)


def test_timm_models_wrap_the_backbone_lazily(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "timm", fake_timm(calls))
    for name, dim in [("timm_resnet18", 64), ("timm_efficientnet_b0_gated", 128)]:
        m = create_model(name, image_dropout=0.1)
        img, aud, y = torch.rand(4, 784), torch.randn(4, 507), torch.arange(4)
        loss = nn.functional.cross_entropy(m(img, aud), y)
        loss.backward()
        torch.optim.SGD(m.parameters(), lr=0.1).step()
        assert m.eval().forward_features(img, aud).shape == (4, dim)
    assert [c["in_chans"] for c in calls] == [1, 1] and all(c["num_classes"] == 0 for c in calls)
    assert not any(c["pretrained"] for c in calls)
    from competition.models import TimmImageEncoder

    with pytest.raises(UserError, match="timm backbone 'resnet9000'"):
        TimmImageEncoder("resnet9000")


def _timm_importable() -> bool:
    try:
        import timm  # noqa: F401
    except Exception:
        return False
    return True


def test_cli_without_timm_is_exit_2(tiny_data, tmp_path, root):
    if _timm_importable():
        pytest.skip("timm imports here")
    args = ["--data", str(tiny_data), "--workdir", str(tmp_path), "--folds", "2", "--epochs", "1", "--workers", "1"]
    proc = subprocess.run(
        [sys.executable, "run.py", "cv", *args, "--models", "timm_resnet18"], cwd=root, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: timm could not be imported") and proc.stderr.count("\n") == 1


@pytest.mark.timm
@pytest.mark.parametrize(
    "name,dim", [("timm_resnet18", 64), ("timm_efficientnet_b0", 64), ("timm_resnet18_gated", 128)]
)
def test_real_timm_backbones_train_one_step(name, dim):
    pytest.importorskip("timm")
    m = create_model(name, image_dropout=0.1)
    img, aud, y = torch.rand(4, 784), torch.randn(4, 507), torch.arange(4)
    nn.functional.cross_entropy(m(img, aud), y).backward()
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    assert m.eval().forward_features(img, aud).shape == (4, dim)
    assert m(img, aud).shape == (4, 10)


# --- bench/degrade.py ----------------------------------------------------------------------------------------


def degrade(src: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "bench/degrade.py", "--data", str(src), "--out", str(out), *flags]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_degraded_copy_keeps_layout_duplicates_and_is_seeded(tiny_data, tmp_path):
    # make every recording appear twice, as in the shipped data, so grouping has something to keep
    aud = np.load(tiny_data / "x_train_sp.npy")
    aud[120:] = aud[:120]
    np.save(tiny_data / "x_train_sp.npy", aud)
    flags = ("--snr", "inf,0", "--test-snr", "-5", "--occlude", "0.5", "--pixel-noise", "40")
    for out in ("a", "b"):
        proc = degrade(tiny_data, tmp_path / out, *flags)
        assert proc.returncode == 0, proc.stderr
    a, b = tmp_path / "a", tmp_path / "b"
    for name in ("x_train_wr.npy", "x_train_sp.npy", "x_test_wr.npy", "x_test_sp.npy"):
        src, got = np.load(tiny_data / name), np.load(a / name)
        assert got.shape == src.shape and got.dtype == src.dtype
        np.testing.assert_array_equal(got, np.load(b / name))  # same seed, same copy
    for name in ("y_train.csv", "sample_submission.csv"):
        assert (a / name).read_bytes() == (tiny_data / name).read_bytes()
    rows = pd.read_csv(a / "degrade_rows.csv")
    assert list(rows["part"]) == ["train"] * 240 + ["test"] * 60
    rows = rows[rows["part"] == "train"]
    got = np.load(a / "x_train_sp.npy")
    ids, ids_src = duplicate_ids(got), duplicate_ids(aud)
    pairs = set(zip(ids, ids_src, strict=True))
    assert len(pairs) == len(set(ids)) == len(set(ids_src)) < 120  # duplicates stay duplicates
    clean = np.isinf(rows["snr_db"]).to_numpy()
    assert 0 < clean.sum() < len(rows)
    np.testing.assert_array_equal(got[clean], aud[clean])
    noise = got[~clean] - aud[~clean]
    snr = 10 * np.log10(np.mean(aud[~clean] ** 2, axis=1) / np.mean(noise**2, axis=1))
    assert abs(snr.mean()) < 0.5  # 0 dB asked for
    img_src, img = np.load(tiny_data / "x_train_wr.npy"), np.load(a / "x_train_wr.npy")
    assert (img != img_src).any(axis=1).mean() > 0.9  # pixel noise on (almost) every row
    # the test rows are noisier than the training rows
    t_src, t_got = np.load(tiny_data / "x_test_sp.npy"), np.load(a / "x_test_sp.npy")
    assert np.mean((t_got - t_src) ** 2) > np.mean(noise**2)
    assert json.loads((a / "degrade.json").read_text())["snr"] == "inf,0"
    assert not (degrade(tiny_data, tmp_path / "c", *flags[:-2], "--seed", "1").returncode)
    assert not np.array_equal(np.load(tmp_path / "c" / "x_train_sp.npy"), got)
    # the copy is a competition folder like any other, with the same duplicate groups
    comp = load_competition(a)
    assert comp.n_train == 240 and comp.n_test == 60


def test_degrade_bad_flags_exit_2(tiny_data, tmp_path):
    proc = degrade(tiny_data, tmp_path / "x", "--occlude", "2")
    assert proc.returncode == 2 and "--occlude" in proc.stderr
    proc = degrade(tiny_data, tmp_path / "x", "--snr", "loud")
    assert proc.returncode == 2 and "dB" in proc.stderr
    proc = degrade(tiny_data, tiny_data)
    assert proc.returncode == 2 and "source folder" in proc.stderr
    proc = degrade(tmp_path / "nowhere", tmp_path / "x")
    assert proc.returncode == 2 and "missing" in proc.stderr


def test_holdout_copy_has_labelled_test_rows_from_unseen_recordings(tiny_data, tmp_path):
    aud = np.load(tiny_data / "x_train_sp.npy")
    aud[120:] = aud[:120]  # every recording twice
    np.save(tiny_data / "x_train_sp.npy", aud)
    proc = degrade(tiny_data, tmp_path / "h", "--holdout", "0.25", "--snr", "inf", "--test-snr", "0")
    assert proc.returncode == 0, proc.stderr
    h = tmp_path / "h"
    comp = load_competition(h)
    labels = pd.read_csv(h / "holdout_labels.csv")
    src = pd.read_csv(tiny_data / "y_train.csv").set_index("row_id")
    assert comp.n_train + comp.n_test == 240 and 50 <= comp.n_test <= 80
    assert list(labels["row_id"]) == list(comp.sample_submission["row_id"])
    assert (labels.set_index("row_id")["label"] == src.loc[labels["row_id"], "label"]).all()
    assert not set(labels["row_id"]) & set(comp.row_ids)
    # no held-out recording is a training row, and the training rows kept their audio (inf dB)
    train_aud = np.load(h / "x_train_sp.npy")
    np.testing.assert_array_equal(train_aud, aud[comp.row_ids])
    held_src = {r.tobytes() for r in aud[labels["row_id"].to_numpy()]}
    assert not held_src & {r.tobytes() for r in train_aud}
    assert not np.array_equal(np.load(h / "x_test_sp.npy"), aud[labels["row_id"].to_numpy()])  # 0 dB


def test_mix_audio_adds_another_row_of_the_batch_at_a_bounded_gain():
    x = torch.randn(32, 507)
    out = augment.mix_audio(x, 1.0, gen())
    added = out - x  # gain * another row, with gain <= 1 relative to the row's own level
    ratio = added.pow(2).mean(1).sqrt() / x.pow(2).mean(1).sqrt()
    assert (ratio <= 1 + 1e-5).all() and (ratio > 0).all()
    for a in added:
        k = torch.nn.functional.cosine_similarity(a[None], x).argmax()
        torch.testing.assert_close(a / a.norm(), x[k] / x[k].norm())  # a scaled copy of one batch row


def test_figures_script_scores_runs_out_of_fold_and_on_the_holdout(tiny_data, tmp_path, root):
    h = tmp_path / "h"
    assert degrade(tiny_data, h, "--holdout", "0.3").returncode == 0
    wd = tmp_path / "wd"
    for name, extra in [("ref", {}), ("rob", ALL_ON | {"modality_dropout": 0.3})]:
        cfg = load_config(None, extra | {"epochs": 1, "folds": 2, "workers": 1, "models": "gated,image,audio"})
        cv.run_cv(cfg, h, wd, name, quiet=True)
    cmd = [sys.executable, "bench/robust_figures.py", "--data", str(h), "--workdir", str(wd), "--run", "ref"]
    proc = subprocess.run([*cmd, "--run", "rob"], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ref: `submit` writes the ") and lines[1].startswith("rob: `submit` writes the ")
    assert "| model / blend | ref OOF | rob OOF | ref held-out | rob held-out |" in lines
    table = [line for line in lines if line.startswith("| gated |") or line.startswith("| fitted blend (logits) |")]
    assert len(table) == 4 and all(len(line.split("|")) == 7 for line in table[:2])  # scores, then paired
    assert any(line.startswith("| rob | gated |") for line in lines)  # accuracy by SNR
    paired = [line for line in lines if line.startswith("| image |") and "p = " in line]
    assert len(paired) == 1 and paired[0].count("p = ") == 2  # McNemar, out of fold and held out
    vs_single = [line for line in lines if line.startswith("| rob | gated |") and "vs " in line]
    assert len(vs_single) == 1 and vs_single[0].count(" vs ") == 2  # against the best single modality, both ways


def test_utterance_normalisation_centres_each_coefficient_and_forgets_a_constant_offset():
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(5, 507)).astype(np.float32)
    assert normalise_audio(audio, "none") is audio  # off: the very array, so runs without it are unchanged
    out = normalise_audio(audio, "utterance")
    assert out.shape == audio.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.reshape(5, 39, 13).mean(axis=1), 0.0, atol=1e-5)
    offset = np.tile(rng.normal(scale=5.0, size=(5, 1, 13)), (1, 39, 1)).reshape(5, 507)  # a voice's / channel's
    np.testing.assert_allclose(normalise_audio(audio + offset, "utterance"), out, atol=1e-4)


@pytest.mark.parametrize("norm", ["none", "utterance"])
def test_utterance_normalised_models_ignore_a_new_speakers_constant_mfcc_offset(tiny_src, norm):
    """A constant per-coefficient offset on the test recordings (another voice or microphone): the test logits
    of a unit trained with ``audio_norm=utterance`` do not move; without it they do."""
    import dataclasses

    comp = load_competition(tiny_src)
    cfg = load_config("default", {"epochs": 1, "batch_size": 32, "audio_norm": norm})
    shift = np.tile(np.linspace(-3, 3, 13, dtype=np.float32), 39)  # (507,): the same offset in every frame
    moved = dataclasses.replace(comp, test_audio=comp.test_audio + shift)
    rows = np.arange(comp.n_train)
    _, before, ckpt = fit_unit(comp, cfg, "audio", rows, 0, "cpu", 1)
    _, after, _ = fit_unit(moved, cfg, "audio", rows, 0, "cpu", 1)
    assert ckpt["config"]["audio_norm"] == norm  # the checkpoint says how its audio was prepared
    assert np.allclose(before, after, atol=1e-3) == (norm == "utterance")
