"""Leaderboard: every cv run, tune study and submission of a workdir in one table each, best score first.

It only reads what the commands already write: a cv run's ``config.json``, ``summary.json`` and
``environment.json``; a study's journal file (or, for a study kept in a database, its ``trials.csv`` and trial
folders); a submission's manifest ``<name>.json``. A run, study or file it cannot read is listed with what is
missing, never an error: the leaderboard of a half-finished workdir is still a leaderboard. A run or submission
whose file is damaged keeps its row, with a ``warning`` naming the file and the fix.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from competition.config import FIELDS, Config, load_config
from competition.store.readers import read_manifest, read_run_config, read_summary
from competition.store.runs import missing_folds, model_seeds
from competition.utils.console import fmt_value
from competition.utils.errors import UserError
from competition.utils.paths import DEFAULT_RECIPE

# Keys a run's row shows in their own columns or that never change its numbers: left out of "recipe".
NOT_RECIPE = ("models", "device", "workers", "per_model", "folds", "epochs")
TUNE_DIR = "tune"


def _read_json(path: Path) -> dict | None:
    try:
        out = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return out if isinstance(out, dict) else None


def _mtime(path: Path) -> str | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")
    except OSError:
        return None


def recipe_diff(config: dict[str, Any], model: str, default: Config) -> dict[str, Any]:
    """The keys of ``model``'s recipe in a saved run config that differ from the default recipe (its per_model
    keys applied; other models' hyperparameters, e.g. image_dropout for audio, and keys the current Config no
    longer knows are left out)."""
    from competition.models import list_models, model_hparams

    others = {h for m in list_models() for h in model_hparams(m)}
    others -= set(model_hparams(model)) if model in list_models() else others
    own = {k: v for k, v in config.items() if k in FIELDS} | config.get("per_model", {}).get(model, {})
    base = default.for_model(model).to_dict()
    return {k: v for k, v in own.items() if k not in NOT_RECIPE and k not in others and k in base and base[k] != v}


# --------------------------------------------------------------------------- cv runs


def cv_rows(workdir: Path, default: Config) -> list[dict[str, Any]]:
    """One row per model of every cv run under ``workdir``: OOF scores once the model has every fold. A run whose
    config.json or summary.json does not read is still listed, its row's ``warning`` naming the file and the fix."""
    rows = []
    for run_dir in sorted(p for p in workdir.iterdir() if (p / "config.json").is_file()):
        try:
            meta = read_run_config(run_dir)
        except UserError as e:
            rows.append(_broken_run_row(run_dir, str(e)))
            continue
        cfg, warning = meta["config"], None
        try:
            summary = read_summary(run_dir)
        except UserError as e:
            summary, warning = {"oof": {}, "per_fold": []}, str(e)
        env = _read_json(run_dir / "environment.json") or {}
        per_fold = pd.DataFrame(summary["per_fold"], columns=["model", "fold", "seconds"])
        for model in cfg["models"]:
            mine = per_fold[per_fold["model"] == model]
            oof = summary["oof"].get(model)
            n_done = cfg.get("folds", 0) - len(missing_folds(run_dir, meta).get(model, [])) if "folds" in cfg else 0
            rows.append(
                {
                    "kind": "cv",
                    "run": run_dir.name,
                    "model": model,
                    "folds": cfg.get("folds"),
                    "folds_done": n_done,  # a fold is done once every seed of it is
                    "seeds": model_seeds(cfg, model),  # seed bagging: the seeds each fold's logits average
                    "epochs": cfg.get("per_model", {}).get(model, {}).get("epochs", cfg.get("epochs")),
                    "oof_macro_f1": None if oof is None else oof["macro_f1"],
                    "oof_accuracy": None if oof is None else oof["accuracy"],
                    "train_seconds": float(pd.to_numeric(mine["seconds"]).sum()) if len(mine) else None,
                    "recipe": recipe_diff(cfg, model, default),
                    "date": _mtime(run_dir / "summary.json") or env.get("time_utc"),
                    "data": meta.get("data"),
                    "data_fingerprint": meta.get("data_fingerprint"),
                    "path": str(run_dir),
                    "warning": warning,
                }
            )
    return rows


def _broken_run_row(run_dir: Path, warning: str) -> dict[str, Any]:
    """The row of a run whose config.json does not read: its name, path and the warning, nothing else known."""
    return {
        "kind": "cv", "run": run_dir.name, "model": "?", "folds": None, "folds_done": 0, "epochs": None,
        "oof_macro_f1": None, "oof_accuracy": None, "train_seconds": None, "recipe": {},
        "date": _mtime(run_dir / "config.json"), "data": None, "data_fingerprint": None, "path": str(run_dir),
        "warning": warning,
    }  # fmt: skip


# --------------------------------------------------------------------------- tune studies


def _journal_studies(journal: Path) -> list[dict[str, Any]]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    out = []
    for name in optuna.get_all_study_names(storage):
        s = optuna.load_study(study_name=name, storage=storage)
        trials = s.get_trials(deepcopy=False)
        ident = s.user_attrs.get("tune", {})
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: t.value, default=None)
        ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
        out.append(
            {
                "study": s.study_name,
                "model": ident.get("model"),
                "best_mean_fold_f1": None if best is None else best.value,
                "best_trial": None if best is None else best.number,
                "best_params": {} if best is None else best.params,
                "trial_folds": ident.get("trial_folds"),
                "epochs": ident.get("config", {}).get("epochs"),
                **{f"trials_{st.name.lower()}": sum(t.state == st for t in trials) for st in TrialState},
                "date": max(ends).astimezone(timezone.utc).isoformat(timespec="seconds") if ends else None,
                "data": ident.get("data"),
                "data_fingerprint": ident.get("data_fingerprint"),
            }
        )
    return out


def _csv_study(study_dir: Path) -> dict[str, Any] | None:
    """A study kept in a database (--storage): its trials.csv and first trial folder, as `tune` wrote them."""
    try:
        df = pd.read_csv(study_dir / "trials.csv")
    except (OSError, ValueError):
        return None
    trial = next((_read_json(p / "config.json") for p in sorted(study_dir.glob("trial-*"))), None) or {}
    complete = df[df["state"] == "COMPLETE"]
    best = complete.loc[complete["value"].idxmax()] if len(complete) else None
    params = {} if best is None else {c[7:]: best[c] for c in df.columns if c.startswith("params_")}
    return {
        "study": study_dir.name,
        "model": (trial.get("config", {}).get("models") or [None])[0],
        "best_mean_fold_f1": None if best is None else float(best["value"]),
        "best_trial": None if best is None else int(best["number"]),
        "best_params": {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()},
        "trial_folds": None,
        "epochs": trial.get("config", {}).get("epochs"),
        **{f"trials_{s.lower()}": int((df["state"] == s).sum()) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
        "date": _mtime(study_dir / "trials.csv"),
        "data": trial.get("data"),
        "data_fingerprint": trial.get("data_fingerprint"),
    }


def study_rows(workdir: Path) -> list[dict[str, Any]]:
    """One row per tune study under ``workdir/tune/``: the best trial's mean fold macro-F1 and trial counts."""
    rows = []
    tune_dir = workdir / TUNE_DIR
    for study_dir in sorted(p for p in tune_dir.iterdir() if p.is_dir()) if tune_dir.is_dir() else []:
        journal = study_dir / "study.journal"
        found = _journal_studies(journal) if journal.is_file() else []
        if not found:
            found = [r for r in [_csv_study(study_dir)] if r is not None]
        rows += [{"kind": "study", **r, "path": str(study_dir)} for r in found]
    return rows


# --------------------------------------------------------------------------- submissions


def submission_rows(submissions: Path, workdir: Path) -> list[dict[str, Any]]:
    """One row per submission manifest in ``submissions`` whose runs are runs of ``workdir``."""
    rows = []
    for path in sorted(submissions.glob("*.json")) if submissions.is_dir() else []:
        raw = _read_json(path)
        if raw is not None and "submission" not in raw:
            continue  # another JSON file beside the submissions
        try:
            m = read_manifest(path)
        except UserError as e:
            rows.append(_broken_submission_row(path, str(e)))
            continue
        run_dirs = {Path(r["dir"]).resolve().parent for r in m["runs"]}
        if run_dirs != {workdir.resolve()}:
            continue
        nested = m.get("oof_nested_macro_f1")
        consensus = m.get("consensus") or {}
        if consensus.get("applied") and consensus.get("oof_macro_f1_after") is not None:
            # the written labels are the consensus ones: score the submission by them
            nested = consensus["oof_macro_f1_after"]
        rows.append(
            {
                "kind": "submission",
                "submission": m["submission"],
                "blend": m.get("blend"),
                "average": m.get("average"),
                "oof_macro_f1": m.get("oof_macro_f1"),
                "oof_nested_macro_f1": nested,
                "oof_accuracy": m.get("oof_accuracy"),
                "score": nested if nested is not None else m.get("oof_macro_f1"),
                "runs": [r["name"] for r in m["runs"]],
                "models": m.get("models", []),
                "weights": m.get("weights", {}),
                "date": (m.get("environment") or {}).get("time_utc") or _mtime(path),
                "data": m.get("data"),
                "data_fingerprint": m.get("data_fingerprint"),
                "path": str(path),
                "warning": None,
            }
        )
    return rows


def _broken_submission_row(path: Path, warning: str) -> dict[str, Any]:
    """The row of a manifest that does not read: its name, path and the warning."""
    return {
        "kind": "submission", "submission": path.with_suffix(".csv").name, "blend": "?", "average": "?",
        "oof_macro_f1": None, "oof_nested_macro_f1": None, "oof_accuracy": None, "score": None, "runs": [],
        "models": [], "weights": {}, "date": _mtime(path), "data": None, "data_fingerprint": None, "path": str(path),
        "warning": warning,
    }  # fmt: skip


# --------------------------------------------------------------------------- the leaderboard


def _best_first(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Highest score first; rows without one (unfinished) last, by name."""
    return sorted(rows, key=lambda r: (r[key] is None, -(r[key] or 0.0), str(r.get("date") or "")))


def leaderboard(
    workdir: Path, submissions: Path, model: str | None = None, data: Path | None = None
) -> dict[str, list[dict[str, Any]]]:
    """``{"runs": [...], "studies": [...], "submissions": [...]}``, each best first, filtered by model and data."""
    if not workdir.is_dir():
        raise UserError(f"{workdir}: workdir not found; fix: pass --workdir DIR (a folder made by `run.py cv`)")
    default = load_config(DEFAULT_RECIPE)
    out = {
        "runs": _best_first(cv_rows(workdir, default), "oof_macro_f1"),
        "studies": _best_first(study_rows(workdir), "best_mean_fold_f1"),
        "submissions": _best_first(submission_rows(submissions, workdir), "score"),
    }
    if data is not None:
        from competition.data.load import fingerprint_files

        try:
            fp = fingerprint_files(data)
        except OSError as e:
            raise UserError(
                f"--data {data}: cannot read the competition files ({e}); fix: pass a data folder"
            ) from None
        # a damaged run's or manifest's row stays, whatever it was made of: its warning is the point
        out = {k: [r for r in rows if r.get("data_fingerprint") == fp or r.get("warning")] for k, rows in out.items()}
    if model is not None:
        out["runs"] = [r for r in out["runs"] if r["model"] in (model, "?")]
        out["studies"] = [r for r in out["studies"] if r["model"] == model]
        out["submissions"] = [
            r for r in out["submissions"] if any(m.rpartition("/")[2] == model for m in r["models"]) or r.get("warning")
        ]
    return out


def warnings(board: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The distinct warnings of the board's rows (a damaged run or manifest), one line each."""
    return list(dict.fromkeys(r["warning"] for rows in board.values() for r in rows if r.get("warning")))


def _score(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _day(iso: str | None) -> str:
    return "-" if not iso else iso[5:16].replace("T", " ")  # MM-DD HH:MM (UTC)


def _runs_used(models: list[str]) -> str:
    """``run/model`` names as ``run (n models)``, one run a line."""
    counts: dict[str, int] = {}
    for m in models:
        run = m.rpartition("/")[0]
        counts[run] = counts.get(run, 0) + 1
    return "\n".join(f"{run} ({n})" for run, n in counts.items())


def tables(board: dict[str, list[dict[str, Any]]], workdir: Path) -> list[Table]:
    runs = Table(title=f"cv runs in {workdir} (best out-of-fold macro-F1 first)")
    for col in ("run", "model", "folds", "epochs", "OOF F1", "OOF acc", "train s", "recipe (vs default.toml)", "date"):
        justify = "right" if col in ("folds", "epochs", "OOF F1", "OOF acc", "train s") else "left"
        wide = {"min_width": 26} if col.startswith("recipe") else {"no_wrap": col != "run"}
        runs.add_column(col, justify=justify, style="bold" if col == "OOF F1" else None, overflow="fold", **wide)
    for r in board["runs"]:
        epochs = "-" if r["epochs"] is None else str(r["epochs"])
        folds = "-" if r["folds"] is None else str(r["folds"])
        folds = folds if r["folds_done"] >= (r["folds"] or 0) else f"{r['folds_done']}/{r['folds']}"
        folds += f" x {r['seeds']} seeds" if r.get("seeds", 1) > 1 else ""  # seed bagging
        seconds = "-" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        recipe = " ".join(f"{k}={fmt_value(v)}" for k, v in r["recipe"].items()) or "default"
        runs.add_row(
            r["run"], r["model"], folds, epochs, _score(r["oof_macro_f1"]), _score(r["oof_accuracy"]),
            seconds, recipe, _day(r["date"]),
        )  # fmt: skip
    studies = Table(title="tune studies (best trial's mean fold macro-F1 first)")
    for col in ("study", "model", "best F1", "best trial", "done", "pruned", "failed", "running", "date"):
        studies.add_column(col, justify="left" if col in ("study", "model", "date") else "right")
    for r in board["studies"]:
        best = "-" if r["best_trial"] is None else str(r["best_trial"])
        studies.add_row(
            r["study"], str(r["model"]), _score(r["best_mean_fold_f1"]), best, str(r["trials_complete"]),
            str(r["trials_pruned"]), str(r["trials_fail"]), str(r["trials_running"]), _day(r["date"]),
        )  # fmt: skip
    subs = Table(title="submissions (best nested out-of-fold macro-F1 first; OOF F1 where the blend fits nothing)")
    for col in ("submission", "blend", "OOF F1", "nested F1", "OOF acc", "runs (models)", "date"):
        subs.add_column(col, justify="right" if "F1" in col or "acc" in col else "left", overflow="fold")
    for r in board["submissions"]:
        subs.add_row(
            r["submission"].removesuffix(".csv"), f"{r['blend']} {r['average']}", _score(r["oof_macro_f1"]),
            _score(r["oof_nested_macro_f1"]), _score(r["oof_accuracy"]), _runs_used(r["models"]), _day(r["date"]),
        )  # fmt: skip
    return [runs, studies, subs]
