"""The Python API: what every command does, as functions returning typed results, silent unless ``verbose``.

    import competition
    comp = competition.load("data/wsd")
    run = competition.cv(comp, models=["fusion", "image"], overrides={"epochs": 2}, workdir="/tmp/w")
    run.scores                      # per-fold macro-F1, accuracy, seconds, epochs
    run.oof("fusion")               # (N, 10) out-of-fold probabilities, training row order
    sub = competition.submit([run])
    sub.write("/tmp/subs")          # the validated CSV, its probabilities and manifest
    competition.report(run)         # <run>/report/index.html and its figures

The command line (``run.py``) is a thin layer over these functions: it parses flags and prints what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from competition.config import Config, resolve_config
from competition.data.load import Competition, load_competition
from competition.pipeline.run import AutoResult, run_auto
from competition.reporting.analysis import DEFAULT_MAX_ROWS, build_report
from competition.store.atomic import check_writable, write_text
from competition.store.loading import load_runs
from competition.store.predictions import OOF_FILE, TEST_FILE
from competition.store.readers import read_summary
from competition.store.runs import find_run, latest_run, read_run_config
from competition.submission.score import Score, score_submission
from competition.submission.submit import Submission, make_submission
from competition.tracking.leaderboard import leaderboard as _leaderboard
from competition.train.cv import run_cv
from competition.tuning.results import write_best_config
from competition.tuning.setup import make_tuning
from competition.tuning.study import Tuning
from competition.tuning.trials import run_tune
from competition.utils.console import verbosity
from competition.utils.errors import UserError
from competition.utils.paths import default_submissions, default_workdir, user_configs
from competition.utils.validation import check_name, parse_duration


def load(data: str | Path | None = None) -> Competition:
    """Load and validate a competition folder (default: the shipped ``data/wsd``)."""
    return load_competition(data)


@dataclass(frozen=True)
class CVRun:
    """A finished cv run folder: its scores, and each model's out-of-fold and test probabilities."""

    dir: Path
    scores: pd.DataFrame  # one row per (model, fold): macro_f1, accuracy, seconds, epochs
    oof_scores: pd.DataFrame  # index model: out-of-fold macro_f1, accuracy over every training row

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def workdir(self) -> Path:
        return self.dir.parent

    @property
    def config(self) -> dict[str, Any]:
        """The resolved recipe the run trained with."""
        return read_run_config(self.dir)["config"]

    @property
    def models(self) -> list[str]:
        return list(self.oof_scores.index)

    def _probs(self, model: str, file: str) -> np.ndarray:
        path = self.dir / model / file
        if not path.is_file():
            raise UserError(f"{path}: not found; fix: name a model of the run with every fold ({self.models})")
        return np.load(path)

    def oof(self, model: str) -> np.ndarray:
        """(N, 10) out-of-fold probabilities of ``model``, in the training rows' order."""
        return self._probs(model, OOF_FILE)

    def test(self, model: str) -> np.ndarray:
        """(M, 10) test probabilities of ``model``, its fold models averaged, in the sample submission's order."""
        return self._probs(model, TEST_FILE)

    @classmethod
    def open(cls, run: str | Path, workdir: str | Path | None = None) -> CVRun:
        """A finished run: a run folder's path, or a run name under ``workdir``."""
        path = _run_dir(run, workdir)
        summary = pd.read_csv(path / "scores.csv") if (path / "scores.csv").is_file() else pd.DataFrame()
        oof = read_summary(path)["oof"]
        return cls(path, summary, pd.DataFrame.from_dict(oof, orient="index", columns=["macro_f1", "accuracy"]))


def cv(
    data: str | Path | Competition | None = None,
    models: list[str] | str | None = None,
    config: str | Path | Config | None = None,
    overrides: dict[str, Any] | None = None,
    workdir: str | Path | None = None,
    run: str | None = None,
    scheduler: str | None = None,
    artifacts: str = "client",
    verbose: bool = False,
) -> CVRun:
    """K-fold CV of ``models`` on the saved split of ``workdir`` (made on first use); resumes a run's finished
    units. ``config``: a recipe (TOML path, shipped recipe name, or ``Config``); ``overrides``: its keys to change
    (e.g. ``{"epochs": 2, "pseudo": "default-fitted"}``); ``run``: the run's folder name (default: the recipe's
    name); ``scheduler``: a Dask scheduler address to train on."""
    if isinstance(config, Config):
        cfg, name = config.validate(), "custom"
        if overrides or models:
            raise UserError("cv: pass overrides and models inside the Config, or a recipe path with overrides")
    else:
        cfg, name = resolve_config(config, overrides, models)
    workdir = default_workdir() if workdir is None else Path(workdir)
    run_name = check_name(name if run is None else run, "--run", "run")
    with verbosity(verbose):
        if scheduler is None:
            result = run_cv(cfg, data, workdir, run_name, quiet=not verbose)
        else:
            from competition.train.dask import DaskExecutor

            with DaskExecutor(scheduler, artifacts) as executor:
                result = run_cv(cfg, data, workdir, run_name, quiet=not verbose, executor=executor)
    return CVRun(result.run_dir, result.per_fold, result.oof)


def _run_dir(run: CVRun | str | Path | None, workdir: str | Path | None) -> Path:
    """A run's folder: a ``CVRun``, a run folder's path, a run name under ``workdir``, or (None) its latest run."""
    if isinstance(run, CVRun):
        return run.dir
    if run is not None and (Path(run) / "config.json").is_file():
        return Path(run)
    return find_run(default_workdir() if workdir is None else Path(workdir), None if run is None else str(run))


def _run_dirs(runs: list[CVRun | str | Path] | None, workdir: Path) -> tuple[Path, list[str]]:
    """(workdir, run names) of ``runs``: CVRun objects, run folders, or names under ``workdir``."""
    if not runs:
        return workdir, [latest_run(workdir)]
    dirs = [r.dir if isinstance(r, CVRun) else Path(r) for r in runs]
    if all((d / "config.json").is_file() for d in dirs) and len({d.resolve().parent for d in dirs}) == 1:
        return dirs[0].resolve().parent, [d.name for d in dirs]
    return workdir, [str(r) for r in runs]


def submit(
    runs: list[CVRun | str | Path] | None = None,
    data: str | Path | Competition | None = None,
    models: list[str] | None = None,
    average: str = "auto",
    blend: str = "auto",
    consensus: str = "auto",
    full: bool = False,
    seeds: int = 3,
    keep_shifted: bool = False,
    rounds: int = 25,
    label_shift: str = "off",
    offsets: str = "auto",
    workdir: str | Path | None = None,
    verbose: bool = False,
) -> Submission:
    """Blend the models of finished ``runs`` (default: the latest run of ``workdir``) into a ``Submission``
    (``.write(out)`` makes the files). ``models``: ``model`` or ``run/model`` names to keep; ``label_shift`` and
    ``offsets`` (``auto``, ``on`` or ``off``): the decision steps after the blend (``ensemble/decisions.py``)."""
    workdir, names = _run_dirs(runs, default_workdir() if workdir is None else Path(workdir))
    comp = data if isinstance(data, Competition) else load_competition(data)
    with verbosity(verbose):
        loaded = load_runs(workdir, names, comp, models)
        return make_submission(
            loaded, comp, average, blend, consensus, full, seeds, keep_shifted, rounds, label_shift, offsets
        )


def score(submission: str | Path, labels: str | Path) -> Score:
    """Score a submission CSV against a labelled ``row_id,label`` CSV the user holds out."""
    return score_submission(Path(submission), Path(labels))


def report(
    run: CVRun | str | Path | None = None,
    data: str | Path | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    workdir: str | Path | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Draw a finished run's figures into ``<run>/report/`` (index.html, PNGs, report.json); returns its numbers."""
    with verbosity(verbose):
        return build_report(_run_dir(run, workdir), Path(data) if data else None, max_rows, quiet=not verbose)


def leaderboard(
    workdir: str | Path | None = None,
    submissions: str | Path | None = None,
    model: str | None = None,
    data: str | Path | None = None,
) -> dict[str, pd.DataFrame]:
    """Every cv run, tune study and submission of ``workdir``, best first, as three tables."""
    board = _leaderboard(
        default_workdir() if workdir is None else Path(workdir),
        default_submissions() if submissions is None else Path(submissions),
        model,
        Path(data) if data else None,
    )
    return {kind: pd.DataFrame(rows) for kind, rows in board.items()}


def auto(
    data: str | Path | None = None,
    time_limit: str | float = "30m",
    preset: str = "best",
    workdir: str | Path | None = None,
    out: str | Path | None = None,
    config: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    models: list[str] | str | None = None,
    scheduler: str | None = None,
    artifacts: str = "client",
    speeds: dict[str, float] | None = None,
    verbose: bool = False,
) -> AutoResult:
    """The whole pipeline within ``time_limit`` (``"30m"``, ``"90s"``, ``"1h"`` or seconds) of this call: measure
    the data and each model's speed here, plan the stages of ``preset`` (``fast`` or ``best``), run them as
    ordinary cv runs (``workdir``) and submissions (``out``) and write ``<out>/auto.csv`` with its manifest; a
    rerun resumes. ``config``/``overrides``/``models``: the base recipe; ``speeds``: seconds per row-epoch per
    model instead of the probe's (for planning tests); ``scheduler``: train on a Dask cluster (docs/howto/auto.md)."""
    from competition.pipeline.plan import check_preset

    limit = parse_duration(time_limit, "--time-limit")
    check_preset(preset)
    base, _ = resolve_config(config, overrides, models)
    workdir = default_workdir() if workdir is None else Path(workdir)
    out = default_submissions() if out is None else Path(out)
    with verbosity(verbose):
        if scheduler is None:
            return run_auto(base, data, limit, preset, workdir, out, None, speeds, quiet=not verbose)
        from competition.train.dask import DaskExecutor

        with DaskExecutor(scheduler, artifacts) as executor:
            return run_auto(base, data, limit, preset, workdir, out, executor, speeds, quiet=not verbose)


@dataclass(frozen=True)
class TuneResult:
    """A study after its trials: the Optuna study, its settings, and the best recipe's TOML (None: no trial done)."""

    study: Any  # optuna.Study
    tuning: Tuning
    best_config: Path | None


def tune(
    model: str = "fusion", data: str | Path | None = None, config: str | Path | None = None,
    overrides: dict[str, Any] | None = None, space: str | Path | None = None, study: str | None = None,
    storage: str | None = None, trials: int = 20, timeout: float | None = None, prune: bool = True,
    processes: int = 1, threads: int | None = None, trial_folds: int | None = None,
    workdir: str | Path | None = None, out: str | Path | None = None, verbose: bool = False,
) -> TuneResult:  # fmt: skip
    """An Optuna search over ``model``'s hyperparameters on the saved folds, resumed when the study exists: runs the
    missing trials, writes ``trials.csv`` and the best recipe (default ``configs/tuned-<study>.toml``)."""
    t = make_tuning(
        model, data, config, overrides, space, study, storage, trials, timeout, prune, processes, threads,
        trial_folds, workdir,
    )  # fmt: skip
    out = user_configs() / f"tuned-{t.study}.toml" if out is None else Path(out)
    check_writable(out.parent)
    with verbosity(verbose):
        found = run_tune(t)
    write_text(t.study_dir / "trials.csv", found.trials_dataframe().to_csv(index=False))
    best = out if write_best_config(found, t, out) is not None else None
    return TuneResult(found, t, best)
