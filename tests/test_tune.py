"""Tests of ``run.py tune``: the search space, a study's reproducibility, resume, concurrent local workers and
bad input. Tiny data, 2 folds, 1 epoch, one torch thread: a trial takes about a second."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import make_competition
from optuna.trial import TrialState

import competition.tuning as tune
import competition.tuning.trials as trials
from competition.cli import main
from competition.config import Config, load_config
from competition.store.claims import start_ticks
from competition.utils.errors import UserError

QUICK = ["--folds", "2", "--epochs", "1", "--threads", "1"]
STUDY = "t"


def tune_argv(data: Path, workdir: Path, *extra: str) -> list[str]:
    study = [] if "--study" in extra else ["--study", STUDY]
    out = ["--out", str(workdir / "best.toml")]
    return ["tune", "--data", str(data), "--workdir", str(workdir), *QUICK, *study, *out, *extra]


def load_study(workdir: Path, name: str = STUDY) -> optuna.Study:
    journal = workdir / "tune" / name / "study.journal"
    return optuna.load_study(study_name=name, storage=tune.open_storage(None, journal))


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --------------------------------------------------------------------------- search space


def test_search_space_samples_the_models_own_keys():
    space = tune.load_space(tune.SPACE_PATH, "image", Config())
    assert {"lr", "batch_size", "weight_decay", "image_dropout", "image_kernel"} == set(space.params)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    params = tune.sample_params(trial, space.params)
    assert set(params) == set(space.params)
    assert 3e-4 <= params["lr"] <= 1e-2 and params["image_kernel"] in (3, 5, 7)
    cfg = load_config(None, Config().to_dict() | params)  # every sample is a valid recipe
    assert cfg.image_kernel == params["image_kernel"]
    fusion = tune.load_space(tune.SPACE_PATH, "fusion", Config())
    assert {"image_dropout", "audio_dropout", "image_kernel", "audio_kernel"} <= set(fusion.params)


@pytest.mark.parametrize(
    "body, problem",
    [
        ("", "no parameter"),
        ("[params]\naudio_kernel = { choices = [3, 5] }\n", "no parameter for model 'image'"),
        ("[params]\nlr = { low = 1e-2, high = 1e-3 }\n", "not below high"),
        ("[params]\nimage_kernel = { choices = [3, 4] }\n", "value 4 is not allowed"),
        ("[params]\nimage_dropout = { low = 0.0, high = 1.0 }\n", "value 1.0 is not allowed"),
        ("[params]\nlr = { low = 0.0, high = 1e-2, log = true }\n", "log-scale range needs low > 0"),
        ("[params]\nbatch_size = { low = 8, high = 64.5 }\n", "is an integer"),
        ("[params]\nlr = { low = 1e-4, high = 1e-2, choices = [1e-3] }\n", "cannot be combined"),
        ("[params]\nfolds = { choices = [3, 5] }\n", "not a tunable config key"),
        ("[params]\nlearning_rate = { low = 1e-4, high = 1e-2 }\n", "not a tunable config key"),
        ("[params]\nlr = { low = 1e-4, high = 1e-2 }\n[pruner]\npatience = 3\n", "unknown key"),
    ],
)
def test_bad_search_space_is_one_error_line(tiny_data, tmp_path, capsys, body, problem):
    space = tmp_path / "space.toml"
    space.write_text(body)
    rc = main(tune_argv(tiny_data, tmp_path / "w", "--model", "image", "--space", str(space)))
    assert rc == 2
    line = one_error_line(capsys)
    assert str(space) in line and problem in line
    assert not (tmp_path / "w" / "tune").exists()  # rejected before any study is opened


def test_bad_flags_are_one_error_line(tiny_data, tmp_path, capsys):
    for extra, problem in [
        (["--model", "resnet"], "unknown model"),
        (["--set", "lr=1e-3"], "also searches"),  # fixed and searched at once
        (["--set", "per_model.fusion.lr=1e-3"], "also searches"),  # fixed for the tuned model and searched
        (["--trials", "0"], "--trials"),
        (["--trial-folds", "3"], "--trial-folds"),
        (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the study storage"),
        (["--storage", "sqlite:////no/such/dir/study.db"], "cannot open the study storage"),
        (["--storage", "just-a-name"], "not a database URL"),
        (["--set", "pseudo=some-submission"], "does not train pseudo-label rounds"),
    ]:
        assert main(tune_argv(tiny_data, tmp_path / "w", *extra)) == 2, extra
        assert problem in one_error_line(capsys)
    assert not (tmp_path / "w" / "tune").exists()


# --------------------------------------------------------------------------- a study


def test_sequential_study_is_reproducible_and_its_best_config_trains(tiny_data, tmp_path):
    runs = []
    for name in ("a", "b"):
        assert main(tune_argv(tiny_data, tmp_path / name, "--trials", "3")) == 0
        study = load_study(tmp_path / name)
        assert states(study) == ["COMPLETE"] * 3
        runs.append([(t.params, t.value) for t in study.trials])
        trial_dir = tmp_path / name / "tune" / STUDY / "trial-0"
        assert (trial_dir / "fusion" / "fold1.npz").exists() and (trial_dir / "config.json").exists()
    assert runs[0] == runs[1]  # seeded TPE + seeded training: the same trials, the same scores

    study = load_study(tmp_path / "a")
    best = load_config(tmp_path / "a" / "best.toml")
    assert best.models == ["fusion"] and best.epochs == 1 and best.folds == 2
    assert {k: getattr(best, k) for k in study.best_params} == pytest.approx(study.best_params)
    # The written config trains as-is with `run.py cv --config`, on the same saved folds.
    cv = [
        "cv",
        "--data",
        str(tiny_data),
        "--workdir",
        str(tmp_path / "a"),
        "--config",
        str(tmp_path / "a" / "best.toml"),
    ]
    assert main([*cv, "--workers", "1"]) == 0
    folds = pd.read_csv(tmp_path / "a" / "best" / "scores.csv")["macro_f1"].tolist()
    assert folds == pytest.approx(study.best_trial.user_attrs["fold_macro_f1"])  # the trial's own fold scores

    # A rerun of a finished study trains nothing and keeps the trials.
    assert main(tune_argv(tiny_data, tmp_path / "a", "--trials", "3")) == 0
    assert [(t.params, t.value) for t in load_study(tmp_path / "a").trials] == runs[0]


def test_interrupted_study_resumes(tiny_data, tmp_path, monkeypatch, capsys):
    calls = []
    real = trials.train_unit

    def ctrl_c_in_trial_1(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # trial 1, fold 0
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trials, "train_unit", ctrl_c_in_trial_1)
    assert main(tune_argv(tiny_data, tmp_path, "--trials", "3")) == 130
    assert "interrupted" in capsys.readouterr().out
    first = load_study(tmp_path)
    assert states(first) == ["COMPLETE", "FAIL"]

    monkeypatch.setattr(trials, "train_unit", real)
    assert main(tune_argv(tiny_data, tmp_path, "--trials", "3")) == 0
    study = load_study(tmp_path)
    assert states(study) == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[0].value == first.trials[0].value and study.trials[0].params == first.trials[0].params


@pytest.mark.parametrize("prune", [True, False])
def test_median_pruner_stops_a_trial_behind_after_a_fold(tiny_data, tmp_path, monkeypatch, prune):
    """Scripted fold scores: trial 1 trails the finished trial after fold 0 and is pruned there; trial 2 leads after
    fold 0 and is never pruned on its last fold (nothing left to save)."""
    space = tmp_path / "space.toml"
    space.write_text(
        "[params]\nlr = { low = 1e-3, high = 1e-2, log = true }\n[pruner]\nn_startup_trials = 1\nn_warmup_steps = 0\n"
    )
    script = {0: [0.9, 0.9], 1: [0.1, 0.9], 2: [0.95, 0.2]}
    real = trials.train_unit

    def scripted(job, model, fold, *args):
        result = real(job, model, fold, *args)
        return dataclasses.replace(result, macro_f1=script[int(job.run_dir.name.split("-")[1])][fold])

    monkeypatch.setattr(trials, "train_unit", scripted)
    argv = tune_argv(tiny_data, tmp_path, "--space", str(space), "--trials", "3", *([] if prune else ["--no-prune"]))
    assert main(argv) == 0
    study = load_study(tmp_path)
    assert states(study) == (["COMPLETE", "PRUNED", "COMPLETE"] if prune else ["COMPLETE"] * 3)
    assert study.trials[1].intermediate_values == ({0: 0.1} if prune else {0: 0.1, 1: 0.5})
    trial_1 = tmp_path / "tune" / STUDY / "trial-1" / "fusion"
    assert (trial_1 / "fold0.npz").exists() and (trial_1 / "fold1.npz").exists() != prune
    assert study.trials[2].value == pytest.approx(0.575)


def test_dead_workers_running_trial_is_failed_on_restart(tiny_data, tmp_path, capsys):
    assert main(tune_argv(tiny_data, tmp_path, "--trials", "1")) == 0
    study = load_study(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = study.ask()  # a worker that was killed (kill -9, lost power) mid-trial leaves it RUNNING
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{dead.stdout.strip()}:12345")
    alive = study.ask()  # a trial of a live worker (here: pytest's parent process) must be left alone
    alive.set_user_attr("worker", f"{socket.gethostname()}:{os.getppid()}:{start_ticks(os.getppid())}")
    capsys.readouterr()
    assert main(tune_argv(tiny_data, tmp_path, "--trials", "3")) == 0  # the live worker's trial counts toward 3
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"marked FAIL ([{orphan.number}])" in out and "1 running elsewhere" in out and "; 1 to run" in out
    assert states(load_study(tmp_path)) == ["COMPLETE", "FAIL", "RUNNING", "COMPLETE"]


def alive_worker_asks(study: optuna.Study) -> optuna.Trial:
    """Another command's trial, started and still running (its worker: pytest's parent process, alive)."""
    trial = study.ask()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getppid()}:{start_ticks(os.getppid())}")
    return trial


def test_a_trial_asked_for_once_the_target_is_claimed_trains_nothing(tiny_data, tmp_path, monkeypatch):
    """The race of two commands: another command starts the last trial between this one's count and its ask.
    This command's trial is then a surplus one: FAIL (user attribute surplus), nothing trained, exit 0."""
    assert main(tune_argv(tiny_data, tmp_path, "--trials", "1")) == 0
    real = trials.optimize

    def other_command_starts_a_trial_first(t, *args, **kwargs):
        alive_worker_asks(load_study(tmp_path))
        return real(t, *args, **kwargs)

    monkeypatch.setattr(trials, "optimize", other_command_starts_a_trial_first)
    assert main(tune_argv(tiny_data, tmp_path, "--trials", "2")) == 0
    study = load_study(tmp_path)
    assert states(study) == ["COMPLETE", "RUNNING", "FAIL"]
    assert study.trials[2].user_attrs["surplus"] is True and study.trials[2].params == {}
    assert not (tmp_path / "tune" / STUDY / "trial-2").exists()


def test_study_made_for_other_data_or_model_is_refused_untouched(tiny_src, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    assert main(tune_argv(tiny_src, tmp_path / "a", "--storage", storage, "--study", "s", "--trials", "1")) == 0
    before = [(t.number, t.state, t.value) for t in optuna.load_study(study_name="s", storage=storage).trials]
    other = make_competition(tmp_path / "other", n_train=200, n_test=50)
    capsys.readouterr()
    for i, (data, extra, problem) in enumerate([
        (other, [], "data_fingerprint"),
        (tiny_src, ["--model", "image"], "model: 'fusion' -> 'image'"),
        (tiny_src, ["--set", "shift=0"], "config differs in shift"),
    ]):  # fmt: skip
        argv = tune_argv(data, tmp_path / f"b{i}", "--storage", storage, "--study", "s", "--trials", "2", *extra)
        assert main(argv) == 2
        line = one_error_line(capsys)
        assert "made for other settings" in line and problem in line and "--study NEW_NAME" in line
    after = [(t.number, t.state, t.value) for t in optuna.load_study(study_name="s", storage=storage).trials]
    assert after == before


def test_two_local_workers_share_the_journal(tiny_data, tmp_path, root):
    """``--workers 2`` on the default journal file: no lock errors, every trial stored once and finished."""
    extra = ["--trials", "4", "--workers", "2", "--model", "image"]  # the cheapest model: the point is the journal
    argv = [sys.executable, "run.py", *tune_argv(tiny_data, tmp_path, *extra)]
    proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "locked" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "(worker 0)" in proc.stdout and "(worker 1)" in proc.stdout
    trials = load_study(tmp_path).trials
    assert [t.number for t in trials] == list(range(len(trials)))
    # Exactly 4 finished trials; a worker that asked for a trial in a race is told it is surplus (FAIL, untrained).
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4 and all(t.user_attrs.get("surplus") for t in trials if t not in finished)
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 4  # workers sample distinct points


def test_error_names_the_flag(tmp_path):
    with pytest.raises(UserError, match="--storage"):
        tune.open_storage("postgresql://user:secret@127.0.0.1:1/db", tmp_path / "j")
    try:
        tune.open_storage("postgresql://user:secret@127.0.0.1:1/db", tmp_path / "j")
    except UserError as e:
        assert "secret" not in str(e)  # the password is never printed


def test_study_made_before_a_config_key_existed_is_still_claimed():
    mine = {"model": "fusion", "config": json.loads(json.dumps(Config().result_dict())), "trial_folds": 2}
    older = {**mine, "config": {k: v for k, v in mine["config"].items() if k != "per_model"}}
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("tune", older)
    tune.claim_study(study, mine, "here")  # the missing key is at its default: the same settings
    changed = {**mine, "config": {**mine["config"], "lr": 1.0}}
    with pytest.raises(UserError, match="config differs in lr"):
        tune.claim_study(study, changed, "here")
