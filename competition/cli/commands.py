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
from competition.models import list_models
from competition.reporting.analysis import DEFAULT_MAX_ROWS
from competition.store.atomic import check_writable, write_text
from competition.submission.submit import submit_tables
from competition.tracking.leaderboard import leaderboard as _leaderboard
from competition.tracking.leaderboard import tables
from competition.tracking.leaderboard import warnings as board_warnings
from competition.tracking.mlflow import log_cv_run, log_or_warn, log_study, log_submission, open_store
from competition.tuning.results import best_trials_table, importance_table, write_best_config
from competition.tuning.search_space import SPACE_PATH, load_space
from competition.tuning.study import Tuning
from competition.tuning.trials import WorkersFailed, run_tune
from competition.utils.console import console
from competition.utils.errors import EXIT_INTERRUPTED, UserError
from competition.utils.paths import default_submissions, default_workdir, user_configs
from competition.utils.validation import check_known, check_name


def config_from_args(args, models: str | None = None) -> tuple[Config, str]:
    """The recipe of a command line (``--config``, ``--set`` and the flags of the most used keys) and its
    default run name (``config.resolve_config``)."""
    overrides: dict[str, Any] = parse_overrides(args.set)
    overrides |= {k: getattr(args, k) for k in FLAG_KEYS if getattr(args, k, None) is not None}
    return resolve_config(args.config, overrides, models)


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
        rid, warning = log_or_warn(log_cv_run, run.dir, workdir)
        if warning is None:
            console.print(f"mlflow: {'logged as run ' + rid if rid else 'already logged, unchanged'}")
        else:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def tune_command(args) -> int:
    """``python run.py tune``: resolve the base recipe and the space, run the study, print and save the best."""
    check_known([args.model], list_models(), "model", f"--model {args.model}")
    for flag, value in (("--trials", args.trials), ("--workers", args.trial_processes), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be >= 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout {args.timeout}: must be > 0 seconds")
    cfg, run_name = config_from_args(args, models=args.model)
    if cfg.pseudo:  # trials train on the plain folds: a search would silently ignore the pseudo-labels
        raise UserError(
            f"pseudo={cfg.pseudo}: tune does not train pseudo-label rounds; fix: tune without it, then run "
            "`run.py cv --pseudo SUBMISSION` with the tuned config"
        )
    fixed = set(parse_overrides(args.set)) | {k for k in FLAG_KEYS if getattr(args, k, None) is not None}
    fixed |= set(cfg.per_model.get(args.model, {}))
    cfg = cfg.for_model(args.model)  # the tuned model's own recipe; each trial overrides the sampled keys
    space_path = Path(args.space) if args.space else SPACE_PATH
    space = load_space(space_path, args.model, cfg)
    both = sorted(fixed & set(space.params))
    if both:
        raise UserError(f"--set/flags fix {both}, which {space_path} also searches; fix: drop them from one of the two")
    trial_folds = cfg.folds if args.trial_folds is None else args.trial_folds
    name = args.study or (
        f"{args.model}-{run_name}"
        + (f"-{trial_folds}folds" if trial_folds != cfg.folds else "")
        + ("" if space_path.resolve() == SPACE_PATH.resolve() else f"-{space_path.stem}")
    )
    check_name(name, "--study", "study")
    t = Tuning(
        data_dir=Path(args.data),
        workdir=Path(args.workdir) if args.workdir else default_workdir(),
        cfg=cfg,
        model=args.model,
        study=name,
        storage=args.storage,
        search_space=space,
        trial_folds=trial_folds,
        trials=args.trials,
        timeout=args.timeout,
        prune=not args.no_prune,
        processes=args.trial_processes,
        threads=args.threads or 1,
    )
    if args.track:
        open_store(t.workdir)
    out = Path(args.out) if args.out else user_configs() / f"tuned-{name}.toml"
    check_writable(out.parent)
    try:
        study = run_tune(t)
    except WorkersFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        console.print(
            "[red]interrupted[/]: the running trial(s) are marked FAIL, finished trials are kept; "
            "rerun the same command to resume the study"
        )
        return EXIT_INTERRUPTED
    console.print(best_trials_table(study))
    imp = importance_table(study)
    if imp is not None:
        console.print(imp)
    write_text(t.study_dir / "trials.csv", study.trials_dataframe().to_csv(index=False))
    if write_best_config(study, t, out) is not None:
        console.print(f"best config: {out}  (train it: python run.py cv --config {out})")
    if args.track:
        logged, warning = log_or_warn(log_study, study, t.workdir, t.study_dir)
        if warning is None:
            console.print(f"mlflow: study run {logged[0]}, {logged[1]} trial(s) logged as nested runs")
        else:
            print(f"warning: {warning}", file=sys.stderr)
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
    if sub.decisions.estimated_test_f1 is not None:
        score += f", {sub.decisions.estimated_test_f1:.4f} re-weighted to the estimated test proportions"
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
        rid, warning = log_or_warn(log_submission, path.with_suffix(".json"), workdir)
        if warning is None:
            console.print(f"mlflow: logged as run {rid}")
        else:
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def auto_command(args) -> int:
    """``python run.py auto``: measure, plan and run the pipeline within ``--time-limit``; print what it wrote."""
    overrides: dict[str, Any] = parse_overrides(args.set)
    overrides |= {k: getattr(args, k) for k in FLAG_KEYS if getattr(args, k, None) is not None}
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
