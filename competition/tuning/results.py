"""Tune's results: the best trials and the parameter importances as tables, and the best trial as a config file."""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState
from rich.table import Table

from competition.config import Config, to_toml
from competition.store.atomic import write_text
from competition.tuning.study import Tuning
from competition.utils.console import fmt_value


def best_trials_table(study: optuna.Study, n: int = 10) -> Table:
    """The ``n`` best complete trials: mean and per-fold macro-F1, parameters and time."""
    trials = study.get_trials(deepcopy=False)
    done = sorted((tr for tr in trials if tr.state == TrialState.COMPLETE), key=lambda tr: -tr.value)[:n]
    counts = {s: sum(tr.state == s for tr in trials) for s in TrialState}
    title = (
        f"study {study.study_name}: best {len(done)} of {counts[TrialState.COMPLETE]} complete trials "
        f"({counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed)"
    )
    table = Table(title=title)
    for col in ("trial", "mean F1", "fold F1s", "time s"):
        table.add_column(
            col, justify="left" if col == "fold F1s" else "right", style="bold" if col == "mean F1" else None
        )
    table.add_column("parameters", overflow="fold")
    for tr in done:
        folds = " ".join(f"{f:.4f}" for f in tr.user_attrs.get("fold_macro_f1", []))
        seconds = tr.duration.total_seconds() if tr.duration else float("nan")
        params = " ".join(f"{k}={fmt_value(v)}" for k, v in tr.params.items())
        table.add_row(str(tr.number), f"{tr.value:.4f}", folds, f"{seconds:.0f}", params)
    return table


def importance_table(study: optuna.Study) -> Table | None:
    """Optuna's fANOVA parameter importances over the complete trials; None while there are too few."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):
        return None
    if not importances:
        return None
    table = Table(title="parameter importances (fANOVA, complete trials)")
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    table.add_column("")
    for k, v in importances.items():
        table.add_row(k, f"{v:.3f}", "#" * round(30 * v))
    return table


def write_best_config(study: optuna.Study, t: Tuning, path: Path) -> Config | None:
    """The best complete trial's full recipe as a flat TOML config for ``run.py cv --config``."""
    try:
        best = study.best_trial
    except ValueError:
        return None  # no complete trial yet
    cfg = t.trial_config(best.params)
    values = cfg.result_dict() | {"models": cfg.models}
    header = (
        f"# Written by `python run.py tune`: study {study.study_name!r}, best of its complete trials = trial "
        f"{best.number},\n# mean macro-F1 {best.value:.4f} over folds 0-{t.trial_folds - 1} of the saved "
        f"{t.cfg.folds}-fold split, {t.cfg.epochs} epochs per fold.\n"
        f"# Train it: python run.py cv --config {path}\n"
    )
    write_text(path, header + to_toml(values))
    return cfg
