"""Experiment tracking (optional, ``--track mlflow``): log a finished cv run, a tune study and a submission to
MLflow from the files the commands write, so a tracked record is exactly what the run folder holds.

- cv: one MLflow run per cv run (experiment ``cv``): params = the resolved config (+ data and split
  fingerprints), metrics = every fold's per-epoch history (``<model>/fold<k>/<column>``, step = epoch), each
  fold's scores (``<model>/fold_macro_f1``, step = fold) and the out-of-fold scores, artifacts = config.json,
  environment.json, summary.json, scores.csv and the report folder when there is one.
- tune: one parent run per study (experiment ``tune``) and a nested run per finished trial (params = the
  sampled keys, metrics = the mean and each fold's macro-F1, tag = its state), the way Optuna's
  MLflowCallback logs them; trials already logged are not logged again when a study is resumed.
- submit: one run per submission (experiment ``submissions``) with its manifest, scores and blend weights.

The store is ``MLFLOW_TRACKING_URI`` when set, else ``<workdir>/mlruns/``: a SQLite file ``mlflow.db`` and the
artifacts beside it (MLflow 3 refuses its old plain-file store unless told otherwise). A cv run logged again
unchanged is skipped. mlflow is imported only when tracking is asked for.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pandas as pd

from competition.store.readers import read_manifest, read_run_config, read_summary
from competition.utils.errors import UserError

TRACKERS = ("mlflow",)
STORE_DIR = "mlruns"


def import_mlflow():
    """The mlflow module, or a UserError saying how to install it."""
    try:
        import mlflow
    except ImportError:
        raise UserError(
            "--track mlflow: mlflow is not installed; fix: python3 -m pip install -e '.[track]' (mlflow-skinny)"
        ) from None
    return mlflow


SUPPORTED = (
    "sqlite:///PATH/mlflow.db, postgresql://..., mysql://..., http(s)://HOST:PORT (an MLflow server), or unset "
    "(<workdir>/mlruns/mlflow.db)"
)
# An unreachable server answers within about 10 s (MLflow's defaults retry for minutes); the user's own settings win.
HTTP_LIMITS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}  # fmt: skip


def tracking_uri(workdir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the SQLite store ``<workdir>/mlruns/mlflow.db`` (its folder made)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    store = (workdir / STORE_DIR).resolve()
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file named mlruns, an unwritable workdir
        raise UserError(
            f"{store}: cannot hold the MLflow store ({e.strerror}); fix: move that file away, or set "
            f"MLFLOW_TRACKING_URI to one of {SUPPORTED}"
        ) from None
    return f"sqlite:///{store / 'mlflow.db'}"


def open_store(workdir: Path) -> None:
    """Open and check the tracking store before any work: an unusable one (a filesystem URI, a SQLite file in
    a folder that is not one, an unreachable server) is one UserError, and nothing is trained or written."""
    import_mlflow()
    env = os.environ.get("MLFLOW_TRACKING_URI")
    where = f"MLFLOW_TRACKING_URI={env}" if env else "--track mlflow"
    uri = tracking_uri(workdir)
    scheme = uri.partition("://")[0].lower() if "://" in uri else ""
    allow_files = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true")  # MLflow's own opt-in
    if scheme in ("", "file") and not allow_files:
        raise UserError(
            f"{where}: a filesystem store (file:// or a plain path), which the installed MLflow client refuses; "
            f"fix: use one of {SUPPORTED}"
        )
    if scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir():
            raise UserError(
                f"{where}: {folder} is not a folder, so it cannot hold the SQLite store; fix: create the folder, or "
                f"point MLFLOW_TRACKING_URI at a SQLite file in one"
            )
    try:
        _client(workdir).search_experiments(max_results=1)
    except Exception as e:  # mlflow raises MlflowException, sqlalchemy and requests errors alike
        raise UserError(
            f"{where}: the tracking store does not answer ({_short(e)}); fix: {_store_fix(scheme)}"
        ) from None


def _store_fix(scheme: str) -> str:
    if scheme.startswith("http"):
        return "start the MLflow server, or unset MLFLOW_TRACKING_URI for the local store"
    return f"check the store's address and permissions, or use one of {SUPPORTED}"


def _short(e: BaseException) -> str:
    """An exception as one short line for a message."""
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:200]}"


def log_or_warn(log, *args):
    """``log(*args)`` after the work is done: a tracking failure costs the record only, never the run or the
    submission. Returns (what ``log`` returns, None) or (None, the one-line warning)."""
    try:
        return log(*args), None
    except Exception as e:
        return None, f"--track mlflow: not logged ({_short(e)}); the results are kept; fix the store, then rerun"


def _client(workdir: Path):
    mlflow = import_mlflow()
    import logging

    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow.MlflowClient(tracking_uri=tracking_uri(workdir))


def _experiment(client, workdir: Path, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not os.environ.get("MLFLOW_TRACKING_URI"):  # artifacts beside the local store, not in the current folder
        location = (workdir / STORE_DIR / "artifacts" / name).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config values as MLflow params: ``per_model.audio.audio_mix``; lists as ``a,b``."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out |= flat_params(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = ",".join(map(str, v)) if isinstance(v, list) else str(v)
    return out


def _log_metrics(client, run_id: str, values: list[tuple[str, float, int]]) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v, step in values if v is not None and v == v]
    for i in range(0, len(metrics), 1000):  # MLflow's limit per log_batch call
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


def _log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow's limit of params per log_batch call
        client.log_batch(run_id, params=items[i : i + 100])


def _find_run(client, experiment_id: str, tags: dict[str, str]) -> str | None:
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    return found[0].info.run_id if found else None


# --------------------------------------------------------------------------- cv


def log_cv_run(run_dir: Path, workdir: Path) -> str | None:
    """Log a cv run folder as one MLflow run; returns its run id (None when it is logged already, unchanged)."""
    client = _client(workdir)
    exp = _experiment(client, workdir, "cv")
    meta, summary = read_run_config(run_dir), read_summary(run_dir)
    summary_bytes = (run_dir / "summary.json").read_bytes()
    tags = {
        "competition.path": str(run_dir.resolve()),
        "competition.summary": hashlib.sha256(summary_bytes).hexdigest()[:16],
    }
    if _find_run(client, exp, tags) is not None:
        return None
    run = client.create_run(exp, run_name=run_dir.name, tags=tags | {"competition.kind": "cv"})
    rid = run.info.run_id
    try:
        params = flat_params(meta["config"]) | {
            k: str(meta.get(k)) for k in ("data", "data_fingerprint", "split_fingerprint")
        }
        _log_params(client, rid, params)
        values: list[tuple[str, float, int]] = []
        for model in meta["config"]["models"]:
            for path in sorted((run_dir / model).glob("fold*_history.csv")):
                fold = path.stem[4:].split("_")[0]
                for row in pd.read_csv(path).to_dict(orient="records"):
                    values += [
                        (f"{model}/fold{fold}/{c}", v, int(row["epoch"]))
                        for c, v in row.items()
                        if c != "epoch" and isinstance(v, (int, float)) and v == v  # not early stopping's phase, NaN
                    ]
        for r in summary.get("per_fold", []):
            values += [(f"{r['model']}/fold_{k}", r[k], int(r["fold"])) for k in ("macro_f1", "accuracy", "seconds")]
        for model, s in summary.get("oof", {}).items():
            values += [(f"{model}/oof_{k}", v, 0) for k, v in s.items()]
        _log_metrics(client, rid, values)
        for name in ("config.json", "environment.json", "summary.json", "scores.csv"):
            if (run_dir / name).is_file():
                client.log_artifact(rid, str(run_dir / name))
        if (run_dir / "report").is_dir():
            client.log_artifacts(rid, str(run_dir / "report"), artifact_path="report")
    except BaseException:
        client.set_terminated(rid, status="FAILED")
        raise
    client.set_terminated(rid)
    return rid


# --------------------------------------------------------------------------- tune


def log_study(study, workdir: Path, study_dir: Path | None = None) -> tuple[str, int]:
    """Log a study as a parent run and each finished trial not yet logged as a nested run; returns the parent's
    run id and how many trials were logged now."""
    from optuna.trial import TrialState

    client = _client(workdir)
    exp = _experiment(client, workdir, "tune")
    ident = study.user_attrs.get("tune", {})
    key = {"competition.study": study.study_name, "competition.kind": "study"}
    parent = _find_run(client, exp, key)
    if parent is None:
        parent = client.create_run(exp, run_name=study.study_name, tags=key).info.run_id
        params = flat_params({k: v for k, v in ident.items() if k not in ("config", "space")})
        params |= flat_params(ident.get("config", {}), "base.")
        _log_params(client, parent, params)
        if study_dir is not None:
            client.set_tag(parent, "competition.path", str(study_dir.resolve()))
    logged = {
        r.data.tags.get("competition.trial")
        for r in client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=50000)
    }
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        if str(t.number) in logged:
            continue
        tags = {"mlflow.parentRunId": parent, "competition.trial": str(t.number), "state": t.state.name}
        child = client.create_run(exp, run_name=f"trial-{t.number}", tags=tags)
        cid = child.info.run_id
        for k, v in t.params.items():
            client.log_param(cid, k, v)
        folds = t.user_attrs.get("fold_macro_f1", [])
        values = [("fold_macro_f1", f, k) for k, f in enumerate(folds)]
        values += [("mean_fold_macro_f1", t.value, 0), ("oof_macro_f1", t.user_attrs.get("oof_macro_f1"), 0)]
        if t.duration is not None:
            values.append(("seconds", t.duration.total_seconds(), 0))
        _log_metrics(client, cid, [(k, v, s) for k, v, s in values if v is not None])
        client.set_terminated(cid, status="FINISHED" if t.state != TrialState.FAIL else "FAILED")
        n += 1
    trials = study.get_trials(deepcopy=False)
    summary = [(f"trials_{s.name.lower()}", sum(t.state == s for t in trials), 0) for s in TrialState]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    if done:
        summary.append(("best_mean_fold_macro_f1", max(t.value for t in done), len(trials)))
    _log_metrics(client, parent, summary)
    return parent, n


# --------------------------------------------------------------------------- submissions


def log_submission(manifest: Path, workdir: Path) -> str:
    """Log a submission's manifest, scores and weights as one MLflow run; returns its run id."""
    client = _client(workdir)
    exp = _experiment(client, workdir, "submissions")
    m = read_manifest(manifest)
    run = client.create_run(exp, run_name=manifest.stem, tags={"competition.kind": "submission"})
    rid = run.info.run_id
    params = {
        "blend": m.get("blend"), "average": m.get("average"), "rounds": m.get("rounds"),
        "runs": ",".join(r["name"] for r in m.get("runs", [])), "models": ",".join(m.get("models", [])),
        "left_out": ",".join(m.get("left_out", [])), "data_fingerprint": m.get("data_fingerprint"),
    }  # fmt: skip
    for k, v in params.items():
        client.log_param(rid, k, str(v))
    values = [(k, m.get(k), 0) for k in ("oof_macro_f1", "oof_nested_macro_f1", "oof_accuracy")]
    values += [(f"weight/{k}", v, 0) for k, v in (m.get("weights") or {}).items()]
    _log_metrics(client, rid, [(k, v, s) for k, v, s in values if v is not None])
    client.log_artifact(rid, str(manifest))
    csv = manifest.with_name(m.get("submission", ""))
    if csv.is_file():
        client.log_artifact(rid, str(csv))
    client.set_terminated(rid)
    return rid
