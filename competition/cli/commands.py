"""Commands: one thin adapter per command: flags -> the Python API (``api.py``) -> what it returns, printed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from competition import api
from competition.config import FLAG_KEYS, Config, parse_overrides, resolve_config
from competition.data.load import N_CLASSES
from competition.reporting.analysis import DEFAULT_MAX_ROWS
from competition.store.atomic import check_writable
from competition.submission.submit import submit_tables
from competition.tracking.leaderboard import leaderboard as _leaderboard
from competition.tracking.leaderboard import tables
from competition.tracking.leaderboard import warnings as board_warnings
from competition.tracking.mlflow import log_cv_run, log_or_warn, log_study, log_submission, open_store
from competition.tuning.results import best_trials_table, importance_table
from competition.tuning.trials import WorkersFailed
from competition.utils.console import console
from competition.utils.errors import EXIT_INTERRUPTED, UserError
from competition.utils.paths import default_submissions, default_workdir
from competition.utils.validation import check_name


def recipe_overrides(args) -> dict[str, Any]:
    """The config keys a command line sets: ``--set KEY=VALUE`` and the flags of the most used keys."""
    overrides: dict[str, Any] = parse_overrides(args.set)
    return overrides | {k: getattr(args, k) for k in FLAG_KEYS if getattr(args, k, None) is not None}


def track(log, *args, said) -> None:
    """Log to MLflow after the work: ``said(result)`` on the console, or one ``warning:`` line (work is kept)."""
    result, warning = log_or_warn(log, *args)
    if warning is None:
        console.print(f"mlflow: {said(result)}")
    else:
        print(f"warning: {warning}", file=sys.stderr)


def config_from_args(args, models: str | None = None) -> tuple[Config, str]:
    """The recipe of a command line (``--config``, ``--set`` and the flags of the most used keys) and its
    default run name (``config.resolve_config``)."""
    return resolve_config(args.config, recipe_overrides(args), models)


def cv_command(args) -> int:
    """``python run.py cv``: resolve the config from the command line and run the CV."""
    cfg, name = config_from_args(args)
    workdir = Path(args.workdir) if args.workdir else default_workdir()
    if args.track:
        open_store(workdir)  # a missing package or an unusable store is an error before training, not after
    run = api.cv(
        args.data, config=cfg, workdir=workdir, run=check_name(name if args.run is None else args.run, "--run", "run"),
        scheduler=args.scheduler, artifacts=args.artifacts, verbose=True,
    )  # fmt: skip
    if args.track:
        track(
            log_cv_run,
            run.dir,
            workdir,
            said=lambda rid: f"logged as run {rid}" if rid else "already logged, unchanged",
        )
    return 0


def tune_command(args) -> int:
    """``python run.py tune``: the study the flags ask for (``api.tune``), then its best trials and recipe."""
    overrides = recipe_overrides(args)
    if args.track:
        open_store(Path(args.workdir) if args.workdir else default_workdir())
    try:
        res = api.tune(
            args.model, args.data, args.config, overrides, args.space, args.study, args.storage, args.trials,
            args.timeout, not args.no_prune, args.trial_processes, args.threads, args.trial_folds, args.workdir,
            args.out, verbose=True,
        )  # fmt: skip
    except WorkersFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        console.print(
            "[red]interrupted[/]: the running trial(s) are marked FAIL, finished trials are kept; "
            "rerun the same command to resume the study"
        )
        return EXIT_INTERRUPTED
    study, t = res.study, res.tuning
    console.print(best_trials_table(study))
    imp = importance_table(study)
    if imp is not None:
        console.print(imp)
    if res.best_config is not None:
        console.print(f"best config: {res.best_config}  (train it: python run.py cv --config {res.best_config})")
    if args.track:
        track(
            log_study,
            study,
            t.workdir,
            t.study_dir,
            said=lambda r: f"study run {r[0]}, {r[1]} trial(s) logged as nested runs",
        )
    if t.storage is None:
        console.print(f"dashboard: optuna-dashboard {t.journal}")
    return 0


def _models_flag(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [s.strip() for s in value.split(",") if s.strip()]
    if not items:
        raise UserError("--models: empty list; fix: name models, e.g. --models fusion,image or default/fusion")
    return items


def submit_command(args) -> int:
    """``python run.py submit``: blend the runs' models and write a validated submission."""
    name = None if args.name is None else check_name(args.name, "--name", "submission", plus=True)
    workdir = Path(args.workdir) if args.workdir else default_workdir()
    out = Path(args.out) if args.out else default_submissions()
    check_writable(out)
    if args.track:
        open_store(workdir)
    sub = api.submit(
        args.run or None, args.data, _models_flag(args.models), args.average, args.blend, args.consensus, args.full,
        args.seeds, args.keep_shifted, args.rounds, args.label_shift, args.offsets, workdir, verbose=True,
    )  # fmt: skip
    path = sub.write(out, name, overwrite=args.overwrite)
    console.print(*submit_tables(sub.blend, sub.consensus))
    c = sub.blend.chosen
    score = f"OOF macro-F1 {sub.oof_macro_f1:.4f}" + (" (nested)" if c.nested_f1 is not None else "")
    d = sub.decisions
    if d.reweighted_f1 is not None:
        score += f", {d.reweighted_f1:.4f} re-weighted to the estimated test proportions"
    if d.fold_gain is not None:
        score += f", estimated test macro-F1 {d.estimated_test_f1:.4f} with the fold models' expected gain"
    what = f"{c.name} blend, {c.space} averaged"
    what += ", label shift corrected" if sub.decisions.shift is not None and sub.decisions.shift.shifted else ""
    what += ", macro-F1 offsets" if sub.decisions.offsets is not None and sub.decisions.offsets.applied else ""
    what += ", consensus" if sub.consensus.applied else ""
    what += ", test rows from full-data refits" if args.full else ""
    console.print(
        f"wrote {path} ({what}, {score}); validated against "
        f"{sub.comp.root / 'sample_submission.csv'}; probabilities and manifest beside it"
    )
    if args.track:
        track(log_submission, path.with_suffix(".json"), workdir, said=lambda rid: f"logged as run {rid}")
    return 0


def auto_command(args) -> int:
    """``python run.py auto``: measure, plan and run the pipeline within ``--time-limit``; print what it wrote."""
    overrides = recipe_overrides(args)
    out = Path(args.out) if args.out else default_submissions()
    check_writable(out)
    result = api.auto(
        args.data, args.time_limit, args.preset, args.workdir, out, args.config, overrides, _models_flag(args.models),
        args.scheduler, args.artifacts, verbose=True,
    )  # fmt: skip
    return 0 if result.path is not None else 1


def score_command(args) -> int:
    """``python run.py score SUBMISSION LABELS_CSV``: print the submission's scores on a labelled holdout."""
    res = api.score(args.submission, args.labels)
    console.print(f"{args.submission} against {args.labels} ({int(res['per_class']['support'].sum())} rows):")
    console.print(f"macro-F1 [bold]{res['macro_f1']:.4f}[/]  accuracy {res['accuracy']:.4f}")
    per_class = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="right")
    for k, row in res["per_class"].iterrows():
        per_class.add_row(str(k), *(f"{row[c]:.4f}" for c in ("precision", "recall", "f1")), str(int(row["support"])))
    console.print(per_class)
    cm = Table(title="confusion matrix (rows: true label, columns: predicted)")
    cm.add_column("true", justify="right")
    for k in range(N_CLASSES):
        cm.add_column(str(k), justify="right")
    for k, row in enumerate(res["confusion"]):
        cm.add_row(str(k), *(f"[bold]{v}[/]" if i == k else (str(v) if v else ".") for i, v in enumerate(row)))
    console.print(cm)
    return 0


def report_command(args) -> int:
    """``python run.py report``: the report of one run (default: the latest)."""
    max_rows = DEFAULT_MAX_ROWS if args.max_rows is None else args.max_rows
    api.report(args.run, args.data, max_rows, args.workdir, verbose=True)
    return 0


def runs_command(args) -> int:
    """``python run.py runs``: print the leaderboard of a workdir (``--json``: as JSON for scripts)."""
    workdir = Path(args.workdir) if args.workdir else default_workdir()
    subs = Path(args.submissions) if args.submissions else default_submissions()
    board = _leaderboard(workdir, subs, args.model, Path(args.data) if args.data else None)
    for line in board_warnings(board):  # a damaged run or manifest keeps its row; its file is named here
        print(f"warning: {line}", file=sys.stderr)
    if args.json:
        try:
            print(json.dumps(board, indent=2, default=str), flush=True)
        except BrokenPipeError:  # `run.py runs --json | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    for table in tables(board, workdir):
        if table.row_count:
            console.print(table)
    if not any(board.values()):
        console.print(f"nothing in {workdir} matches (no cv run, study or submission); see `run.py runs --help`")
    return 0
