"""End-to-end cross-validation on tiny data: artifacts, resume after an interruption, determinism, guards."""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from competition.config import load_config
from competition.data.load import load_competition
from competition.store.loading import load_run
from competition.train import cv, executor
from competition.utils.errors import UserError

TINY = {"epochs": 1, "folds": 2, "batch_size": 32, "workers": 1}


def tiny_cfg(**kw):
    return load_config(None, TINY | kw)


def oof_of(run_dir: Path, n: int) -> dict[str, np.ndarray]:
    return load_run(run_dir, n).oof


def test_cli_cv_end_to_end(tiny_data, tmp_path, root):
    wd = tmp_path / "wd"
    args = ["--data", str(tiny_data), "--workdir", str(wd), "--folds", "2", "--epochs", "1", "--run", "e2e"]
    args += ["--models", "image", "--set", "split=grouped"]  # the layout is per model: one model shows it
    proc = subprocess.run([sys.executable, "run.py", "cv", *args], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "OOF F1" in proc.stdout and "audio: 240 rows" in proc.stdout
    run = wd / "e2e"
    for model in ("image",):
        for k in range(2):
            with np.load(run / model / f"fold{k}.npz") as z:
                assert z["oof_logits"].shape == (len(z["val_idx"]), 10)
                assert z["test_logits"].shape == (60, 10)
            hist = pd.read_csv(run / model / f"fold{k}_history.csv")
            assert list(hist.columns) == [
                "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1"
            ]  # fmt: skip
            assert (run / model / f"fold{k}.pt").exists()
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["epochs"] == 1 and saved["config"]["folds"] == 2
    env = json.loads((run / "environment.json").read_text())
    assert env["device"] == "cpu" and "torch" in env["versions"] and env["git_commit"]
    scores = pd.read_csv(run / "scores.csv")
    assert len(scores) == 2 and list(scores["fold"]) == [0, 1]
    assert (wd / "folds.csv").exists()
    assert not list(run.rglob("*.tmp"))
    # every training row has exactly one out-of-fold prediction
    loaded = load_run(run, 240)
    assert loaded.models == ["image"] and not np.isnan(loaded.oof["image"]).any()
    assert loaded.test["image"].shape == (2, 60, 10)
    # the scores written are those of the fold files: per fold, and out of fold over every training row
    y = load_competition(tiny_data).y
    for _, row in scores.iterrows():
        with np.load(run / "image" / f"fold{row['fold']}.npz") as z:
            assert row["macro_f1"] == pytest.approx(
                f1_score(y[z["val_idx"]], z["oof_logits"].argmax(1), average="macro")
            )
    summary = json.loads((run / "summary.json").read_text())["oof"]["image"]
    assert summary["macro_f1"] == pytest.approx(f1_score(y, loaded.oof["image"].argmax(1), average="macro"))


def test_unknown_override_is_exit_2(tiny_data, tmp_path, root):
    args = ["--data", str(tiny_data), "--workdir", str(tmp_path), "--set", "learning_rate=1"]
    proc = subprocess.run([sys.executable, "run.py", "cv", *args], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown config key 'learning_rate'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_scaler_is_fitted_on_each_folds_training_rows(tiny_data, tmp_path):
    cv.run_cv(tiny_cfg(models=["audio"]), tiny_data, tmp_path, "r", quiet=True)
    comp = load_competition(tiny_data)
    fold_of = pd.read_csv(tmp_path / "folds.csv")["fold"].to_numpy()
    for k in range(2):
        saved = torch.load(tmp_path / "r" / "audio" / f"fold{k}.pt", weights_only=False)
        np.testing.assert_allclose(saved["audio_mean"], comp.audio[fold_of != k].mean(axis=0), rtol=1e-4, atol=1e-5)
        assert not np.allclose(saved["audio_mean"], comp.audio.mean(axis=0), rtol=1e-6, atol=1e-7)


def test_same_seed_same_config_same_oof(tiny_data, tmp_path):
    a = cv.run_cv(tiny_cfg(models=["fusion"]), tiny_data, tmp_path / "a", "r", quiet=True)  # both encoders
    b = cv.run_cv(tiny_cfg(models=["fusion"]), tiny_data, tmp_path / "b", "r", quiet=True)
    oa, ob = oof_of(a.run_dir, 240), oof_of(b.run_dir, 240)
    for m in oa:
        np.testing.assert_array_equal(oa[m], ob[m])
    c = cv.run_cv(tiny_cfg(models=["fusion"], seed=1), tiny_data, tmp_path / "a", "other-seed", quiet=True)
    assert not np.array_equal(oof_of(c.run_dir, 240)["fusion"], oa["fusion"])


def test_parallel_workers_give_the_same_oof(tiny_data, tmp_path):
    a = cv.run_cv(tiny_cfg(models=["image", "audio"]), tiny_data, tmp_path, "seq", quiet=True)
    b = cv.run_cv(tiny_cfg(models=["image", "audio"], workers=2), tiny_data, tmp_path, "par", quiet=True)
    oa, ob = oof_of(a.run_dir, 240), oof_of(b.run_dir, 240)
    for m in oa:
        np.testing.assert_array_equal(oa[m], ob[m])


def test_interrupted_run_keeps_finished_units_and_resumes(tiny_data, tmp_path, monkeypatch):
    two = tiny_cfg(models=["image", "audio"])  # trained audio first: the costliest model first
    real = executor.train_unit
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args[1:3])
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third unit
        return real(*args, **kwargs)

    monkeypatch.setattr(executor, "train_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        cv.run_cv(two, tiny_data, tmp_path, "r", quiet=True)
    done = sorted(p.relative_to(tmp_path / "r").as_posix() for p in (tmp_path / "r").rglob("fold*.npz"))
    assert done == ["audio/fold0.npz", "audio/fold1.npz"]
    assert not list(tmp_path.rglob("*.tmp"))

    calls.clear()
    monkeypatch.setattr(executor, "train_unit", lambda *a, **k: calls.append(a[1:3]) or real(*a, **k))
    resumed = cv.run_cv(two, tiny_data, tmp_path, "r", quiet=True)
    assert calls == [("image", 0), ("image", 1)]  # only the unfinished units
    assert len(resumed.oof) == 2
    monkeypatch.setattr(executor, "train_unit", real)
    clean = cv.run_cv(two, tiny_data, tmp_path / "clean", "r", quiet=True)
    for m, logits in oof_of(clean.run_dir, 240).items():
        np.testing.assert_array_equal(logits, oof_of(resumed.run_dir, 240)[m])


def test_rerun_with_other_settings_is_refused(tiny_data, tmp_path):
    cv.run_cv(tiny_cfg(models=["image"]), tiny_data, tmp_path, "r", quiet=True)
    with pytest.raises(UserError, match=r"epochs: 1 -> 2"):
        cv.run_cv(tiny_cfg(models=["image"], epochs=2), tiny_data, tmp_path, "r", quiet=True)
    # adding a model to a run is fine: the finished one is kept
    result = cv.run_cv(tiny_cfg(models=["image", "audio"]), tiny_data, tmp_path, "r", quiet=True)
    assert set(result.oof.index) == {"image", "audio"}


def test_ctrl_c_on_a_two_worker_cv_exits_130_with_one_line_and_keeps_finished_units(tiny_data, tmp_path, root):
    """Ctrl-C while two worker processes train: exit 130, the one `interrupted:` line (no traceback), quickly,
    the finished units kept whole and no temp file left. The audio units (trained first: costliest first) take
    1 epoch, the image units 300, so the interrupt lands while the image units train, whatever the machine."""
    wd = tmp_path / "wd"
    args = ["--data", str(tiny_data), "--workdir", str(wd), "--folds", "2", "--run", "r", "--workers", "2"]
    args += ["--models", "audio,image", "--set", "per_model.audio.epochs=1", "--set", "per_model.image.epochs=300"]
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "run.py", "cv", *args],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    audio = [wd / "r" / "audio" / f"fold{k}.npz" for k in range(2)]
    deadline = time.time() + 180
    while not all(p.exists() for p in audio) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, err_path.read_text()  # still training the image units
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    t0 = time.time()
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    seconds = time.time() - t0
    err = err_path.read_text()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted: every finished unit is kept; rerun the same command to resume"]
    assert seconds < 20  # a few seconds on an idle machine; bounded on a busy one
    assert sorted(p.relative_to(wd / "r").as_posix() for p in (wd / "r").rglob("fold*.npz")) == [
        "audio/fold0.npz", "audio/fold1.npz"
    ]  # fmt: skip
    for path in audio:
        with np.load(path) as z:
            assert z["test_logits"].shape == (60, 10) and np.isfinite(z["oof_logits"]).all()
    assert not list(wd.rglob("*.tmp"))


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_parallel_results_left_early_cancel_the_rest_without_a_warning():
    """Left on an interrupt while other tasks still run, the results generator is closed then and quietly:
    joblib would otherwise warn about the cancelled tasks later, after the run's one `interrupted:` line."""
    from joblib import delayed

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with (
            pytest.raises(KeyboardInterrupt),
            executor.unordered((delayed(_nap)(s) for s in [0, 30, 30]), 2) as results,
        ):
            for _ in results:
                raise KeyboardInterrupt
        del results
        gc.collect()  # where joblib would warn if the generator were still open
    assert [str(w.message) for w in record] == []


def test_per_model_keys_change_only_that_model(tiny_data, tmp_path):
    base = cv.run_cv(tiny_cfg(models=["image", "audio"]), tiny_data, tmp_path, "base", quiet=True)
    cfg = tiny_cfg(models=["image", "audio"], **{"per_model.audio.epochs": 2, "per_model.audio.audio_noise": 0.5})
    assert cfg.for_model("audio").epochs == 2 and cfg.for_model("image").epochs == 1
    run = cv.run_cv(cfg, tiny_data, tmp_path, "per-model", quiet=True)
    assert len(pd.read_csv(run.run_dir / "audio" / "fold0_history.csv")) == 2
    assert len(pd.read_csv(run.run_dir / "image" / "fold0_history.csv")) == 1
    ob, op = oof_of(base.run_dir, 240), oof_of(run.run_dir, 240)
    np.testing.assert_array_equal(ob["image"], op["image"])  # untouched model: bitwise the same
    assert not np.array_equal(ob["audio"], op["audio"])
    saved = json.loads((run.run_dir / "config.json").read_text())["config"]
    assert saved["per_model"] == {"audio": {"epochs": 2, "audio_noise": 0.5}}


def test_per_model_tables_in_toml_and_their_errors(tmp_path):
    import tomllib

    from competition.config import to_toml

    path = tmp_path / "r.toml"
    path.write_text('audio_mix = 3.0\n[per_model.audio]\naudio_mix = 0\nlr = "1e-3"\n')
    cfg = load_config(path, {"per_model.audio.epochs": "3"})
    assert cfg.per_model == {"audio": {"audio_mix": 0.0, "lr": 1e-3, "epochs": 3}}
    assert (cfg.for_model("audio").audio_mix, cfg.for_model("fusion").audio_mix) == (0.0, 3.0)
    assert load_config(None, tomllib.loads(to_toml(cfg.result_dict()))) == load_config(None, cfg.result_dict())
    for bad, message in [
        ("[per_model.audio]\nseed = 1\n", "apply to the whole run"),
        ("[per_model.audoi]\nlr = 1e-3\n", "unknown model(s) ['audoi']"),
        ("[per_model.audio]\nlr = -1\n", "per_model.audio: lr must be > 0"),
        ("[per_model.audio]\nlearning_rate = 1\n", "unknown config key 'learning_rate'"),
        ("per_model = 3\n", "per_model must be tables"),
    ]:
        path.write_text(bad)
        with pytest.raises(UserError, match=re.escape(message)):
            load_config(path)
    with pytest.raises(UserError, match="expected per_model.<model>.<key>=value"):
        load_config(None, {"per_model.audio": "1"})
