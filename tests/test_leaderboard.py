"""``run.py runs`` (the leaderboard), the oof.npy / test.npy files of a finished run, and the tune sampler's seed."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import make_competition
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from scipy.special import softmax

import competition.tuning as tune
import competition.tuning.trials as trials
from competition.cli import main
from competition.config import load_config
from competition.store.loading import load_run
from competition.tracking.leaderboard import leaderboard
from competition.train.cv import run_cv

TINY = {"epochs": 1, "folds": 2, "workers": 1, "device": "cpu", "models": "image,audio"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_src) -> Path:
    """Two finished tiny runs (the default recipe and lr=0.01) and a submission of the first."""
    wd = tmp_path_factory.mktemp("board") / "wd"
    run_cv(load_config(None, TINY), tiny_src, wd, "base", quiet=True)
    run_cv(load_config(None, TINY | {"lr": 0.01}), tiny_src, wd, "fast", quiet=True)
    subs = wd.parent / "subs"
    args = ["submit", "--workdir", str(wd), "--data", str(tiny_src), "--out", str(subs), "--run", "base"]
    assert main([*args, "--blend", "equal", "--name", "eq"]) == 0
    assert main([*args, "--run", "fast", "--blend", "fitted", "--name", "both"]) == 0
    return wd


def board_json(wd: Path, capsys, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["runs", "--workdir", str(wd), "--submissions", str(wd.parent / "subs"), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_finished_run_has_kaggle_style_probability_files(workdir, tiny_src):
    n = 240
    run = load_run(workdir / "base", n)
    for model in ("image", "audio"):
        oof = np.load(workdir / "base" / model / "oof.npy")
        test = np.load(workdir / "base" / model / "test.npy")
        assert oof.shape == (n, 10) and test.shape == (60, 10) and oof.dtype == np.float32
        np.testing.assert_allclose(oof.sum(axis=1), 1, rtol=1e-5)
        np.testing.assert_allclose(oof, softmax(run.oof[model], axis=1), rtol=1e-5)  # training row order
        np.testing.assert_allclose(test, softmax(run.test[model], axis=2).mean(axis=0), rtol=1e-5)
    # a run finished before these files existed gets them when rerun (nothing is trained again)
    copy = workdir.parent / "rerun"
    shutil.copytree(workdir, copy)
    for f in copy.glob("base/*/*.npy"):
        f.unlink()
    before = {p: p.stat().st_mtime_ns for p in copy.glob("base/*/fold*.npz")}
    run_cv(load_config(None, TINY), tiny_src, copy, "base", quiet=True)
    assert {p: p.stat().st_mtime_ns for p in copy.glob("base/*/fold*.npz")} == before
    np.testing.assert_array_equal(np.load(copy / "base/image/oof.npy"), np.load(workdir / "base/image/oof.npy"))


def test_runs_lists_every_run_and_submission_best_first(workdir, capsys):
    board = board_json(workdir, capsys)
    runs = board["runs"]
    assert sorted((r["run"], r["model"]) for r in runs) == [
        ("base", "audio"), ("base", "image"), ("fast", "audio"), ("fast", "image")
    ]  # fmt: skip
    f1 = [r["oof_macro_f1"] for r in runs]
    assert f1 == sorted(f1, reverse=True)
    summary = json.loads((workdir / "base" / "summary.json").read_text())
    base_image = next(r for r in runs if r["run"] == "base" and r["model"] == "image")
    assert base_image["oof_macro_f1"] == summary["oof"]["image"]["macro_f1"]
    assert base_image["folds"] == 2 and base_image["epochs"] == 1 and base_image["train_seconds"] > 0
    # what differs from competition/configs/default.toml (the test recipe's batch size, smoothing... and lr for "fast")
    fast = next(r for r in runs if r["run"] == "fast")
    assert fast["recipe"]["lr"] == 0.01 and "lr" not in base_image["recipe"] and "epochs" not in fast["recipe"]
    # Config's image_dropout (0.5) is not default.toml's (0.1): a difference of the image model, not of audio
    base_audio = next(r for r in runs if r["run"] == "base" and r["model"] == "audio")
    assert base_image["recipe"]["image_dropout"] == 0.5 and "image_dropout" not in base_audio["recipe"]
    subs = board["submissions"]
    assert [s["submission"] for s in subs] == sorted(
        ["eq.csv", "both.csv"], key=lambda n: -next(s["score"] for s in subs if s["submission"] == n)
    )
    both = next(s for s in subs if s["submission"] == "both.csv")
    assert both["runs"] == ["base", "fast"] and both["blend"] == "fitted" and both["oof_nested_macro_f1"] is not None
    assert both["score"] == both["oof_nested_macro_f1"]

    only = board_json(workdir, capsys, "--model", "audio")
    assert {r["model"] for r in only["runs"]} == {"audio"} and len(only["submissions"]) == 2
    capsys.readouterr()
    assert main(["runs", "--workdir", str(workdir), "--submissions", str(workdir.parent / "subs")]) == 0
    out = capsys.readouterr().out
    assert "cv runs in" in out and "lr=0.01" in out and "│ both " in out and "base (2)" in out


def test_runs_filters_by_data_folder(workdir, tiny_src, tmp_path, capsys):
    assert len(board_json(workdir, capsys, "--data", str(tiny_src))["runs"]) == 4
    other = make_competition(tmp_path / "other", n_train=200, n_test=50)
    assert board_json(workdir, capsys, "--data", str(other)) == {"runs": [], "studies": [], "submissions": []}


def test_old_unfinished_and_broken_runs_still_list(workdir, tmp_path):
    wd = tmp_path / "wd"
    shutil.copytree(workdir / "base", wd / "base")
    shutil.copytree(workdir / "base", wd / "half")
    (wd / "half" / "image" / "fold1.npz").unlink()
    (wd / "half" / "summary.json").unlink()  # interrupted before it was scored
    old = json.loads((wd / "base" / "config.json").read_text())
    old["config"] = {"folds": 2, "models": ["image"], "epochs": 3}  # a run made before most keys existed
    (wd / "old").mkdir()
    (wd / "old" / "config.json").write_text(json.dumps(old))
    (wd / "junk").mkdir()
    (wd / "junk" / "config.json").write_text("{not json")
    rows = leaderboard(wd, tmp_path / "no-subs")["runs"]
    assert [r["run"] for r in rows[:2]] == ["base", "base"]  # scored rows first
    half = next(r for r in rows if r["run"] == "half" and r["model"] == "image")
    assert half["folds_done"] == 1 and half["oof_macro_f1"] is None
    assert next(r for r in rows if r["run"] == "old")["epochs"] == 3
    (junk,) = [r for r in rows if r["run"] == "junk"]  # listed, with the file that does not read named
    assert junk["oof_macro_f1"] is None and f"{wd / 'junk' / 'config.json'}: unreadable run config" in junk["warning"]


def test_runs_lists_studies_with_trial_counts(tmp_path, capsys):
    wd = tmp_path / "wd"
    storage = tune.open_storage(None, wd / "tune" / "s" / "study.journal")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_user_attr("tune", {"model": "image", "trial_folds": 2, "config": {"epochs": 1}, "data_fingerprint": "x"})
    dist = {"lr": FloatDistribution(1e-4, 1e-2)}
    for value, state in [(0.8, TrialState.COMPLETE), (0.9, TrialState.COMPLETE), (None, TrialState.FAIL)]:
        study.add_trial(create_trial(params={"lr": 0.001}, distributions=dist, value=value, state=state))
    study.add_trial(create_trial(params={"lr": 0.002}, distributions=dist, value=0.5, state=TrialState.PRUNED))
    (tmp_path / "subs").mkdir()
    rows = board_json(wd, capsys)["studies"]
    assert len(rows) == 1
    r = rows[0]
    assert (r["study"], r["model"], r["best_mean_fold_f1"], r["best_trial"]) == ("s", "image", 0.9, 1)
    assert (r["trials_complete"], r["trials_pruned"], r["trials_fail"], r["trials_running"]) == (2, 1, 1, 0)
    assert board_json(wd, capsys, "--model", "fusion")["studies"] == []


def test_runs_bad_workdir_is_one_error_line(tmp_path, capsys):
    assert main(["runs", "--workdir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "nope" in err[0]


# --------------------------------------------------------------------------- the tune sampler's seed


def test_sampler_seed_is_reproducible_alone_and_per_process_when_shared(tiny_src, tmp_path, monkeypatch):
    t = tune.Tuning(tiny_src, tmp_path, load_config(None, {}), "image", "s", None, None, 2, 4)
    alone = trials._sampler_seed(t, 0, 0)
    assert alone == trials._sampler_seed(t, 0, 0)  # a single process: from --seed and the trial count only
    monkeypatch.setattr(trials.os, "getpid", lambda: 1)
    shared_1 = trials._sampler_seed(t, 0, 0, shared=True)
    monkeypatch.setattr(trials.os, "getpid", lambda: 2)
    shared_2 = trials._sampler_seed(t, 0, 0, shared=True)
    assert len({alone, shared_1, shared_2}) == 3  # another process on the same journal draws other trials
    assert trials._sampler_seed(t, 0, 0) == alone
    two = dataclasses.replace(t, processes=2)
    assert trials._sampler_seed(two, 0, 0) == shared_2  # several processes: always per process


def test_submission_scored_by_its_consensus_labels_when_applied(tmp_path):
    from competition.tracking.leaderboard import submission_rows

    workdir, subs = tmp_path / "folds", tmp_path / "subs"
    subs.mkdir()
    base = {"submission": "s.csv", "runs": [{"name": "r", "dir": str(workdir / "r")}], "oof_nested_macro_f1": 0.99}
    base |= {"models": ["r/image"], "blend": "equal", "average": "probs", "weights": {"r/image": 1.0}}
    base |= {"data_fingerprint": "d", "split_fingerprint": "s"}
    (subs / "plain.json").write_text(json.dumps(base | {"submission": "plain.csv"}))
    pooled = {"applied": True, "oof_macro_f1_before": 0.99, "oof_macro_f1_after": 1.0}
    (subs / "pooled.json").write_text(json.dumps(base | {"submission": "pooled.csv", "consensus": pooled}))
    off = {"applied": False, "oof_macro_f1_before": 0.99, "oof_macro_f1_after": None}
    (subs / "off.json").write_text(json.dumps(base | {"submission": "off.csv", "consensus": off}))
    scores = {r["submission"]: r["score"] for r in submission_rows(subs, workdir)}
    assert scores == {"plain.csv": 0.99, "pooled.csv": 1.0, "off.csv": 0.99}
