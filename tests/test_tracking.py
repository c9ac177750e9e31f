"""``--track mlflow``: a tiny cv run, tune study and submission logged to a temporary local MLflow store and read
back with the real mlflow package (installed by the ``dev`` and ``track`` extras; CI fails if it is missing)."""

from __future__ import annotations

import json
import os
import sys

import pytest

from competition.cli import main
from competition.tracking.mlflow import flat_params, tracking_uri

QUICK = ["--folds", "2", "--epochs", "1"]


@pytest.fixture
def mlflow():
    if os.environ.get("CI"):
        import mlflow  # CI installs the dev extra: a missing mlflow is a failure there, not a skip

        return mlflow
    return pytest.importorskip("mlflow")


def runs_of(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], max_results=1000)


def test_cv_tune_and_submit_are_logged_and_read_back(mlflow, tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    wd = tmp_path / "wd"
    common = ["--data", str(tiny_data), "--workdir", str(wd)]
    cv = ["cv", *common, *QUICK, "--models", "image", "--workers", "1", "--run", "r", "--track", "mlflow"]
    assert main(cv) == 0
    assert (wd / "mlruns" / "mlflow.db").is_file()  # the local store in the workdir
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(wd))
    (run,) = runs_of(client, "cv")
    assert run.info.status == "FINISHED" and run.info.run_name == "r"
    saved = json.loads((wd / "r" / "config.json").read_text())
    assert run.data.params["lr"] == str(saved["config"]["lr"]) and run.data.params["models"] == "image"
    assert run.data.params["data_fingerprint"] == saved["data_fingerprint"]
    summary = json.loads((wd / "r" / "summary.json").read_text())
    assert run.data.metrics["image/oof_macro_f1"] == pytest.approx(summary["oof"]["image"]["macro_f1"])
    folds = client.get_metric_history(run.info.run_id, "image/fold_macro_f1")
    assert sorted((m.step, m.value) for m in folds) == pytest.approx(
        [(r["fold"], r["macro_f1"]) for r in summary["per_fold"]]
    )
    assert len(client.get_metric_history(run.info.run_id, "image/fold1/val_loss")) == 1  # one epoch
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "environment.json", "summary.json", "scores.csv"} <= artifacts
    assert main(cv) == 0  # resumed, nothing new: not logged twice
    assert len(runs_of(client, "cv")) == 1

    tune = ["tune", *common, *QUICK, "--model", "image", "--trials", "2", "--study", "s", "--track", "mlflow"]
    assert main([*tune, "--out", str(tmp_path / "best.toml")]) == 0
    logged = runs_of(client, "tune")
    (parent,) = [r for r in logged if r.data.tags.get("competition.kind") == "study"]
    trials = [r for r in logged if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in trials) == ["trial-0", "trial-1"]
    assert all("lr" in r.data.params and "mean_fold_macro_f1" in r.data.metrics for r in trials)
    assert parent.data.metrics["trials_complete"] == 2
    assert main([*tune, "--trials", "3", "--out", str(tmp_path / "best.toml")]) == 0  # resumed: one more trial
    assert len(runs_of(client, "tune")) == 4

    out = tmp_path / "subs"
    assert main(["submit", *common, "--run", "r", "--out", str(out), "--name", "x", "--track", "mlflow"]) == 0
    (sub,) = runs_of(client, "submissions")
    manifest = json.loads((out / "x.json").read_text())
    assert sub.data.metrics["oof_macro_f1"] == pytest.approx(manifest["oof_macro_f1"])
    assert {"x.json", "x.csv"} <= {a.path for a in client.list_artifacts(sub.info.run_id)}


def test_tracking_uri_respects_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert tracking_uri(tmp_path) == "sqlite:///elsewhere.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"


def test_flat_params():
    assert flat_params({"lr": 0.1, "models": ["a", "b"], "per_model": {"audio": {"audio_mix": 0}}}) == {
        "lr": "0.1", "models": "a,b", "per_model.audio.audio_mix": "0"
    }  # fmt: skip


def test_missing_mlflow_is_one_error_line_before_training(tiny_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow raises ImportError
    wd = tmp_path / "wd"
    assert main(["cv", "--data", str(tiny_data), "--workdir", str(wd), *QUICK, "--track", "mlflow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("error: --track mlflow: mlflow is not installed") and ".[track]" in err[0]
    )
    assert not (wd / "default").exists()  # nothing trained
