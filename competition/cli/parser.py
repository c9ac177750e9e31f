"""Parser: the command line's flags, one sub-parser per command (the reference docs are generated from it)."""

from __future__ import annotations

import argparse

from competition.utils.paths import default_data

DESCRIPTION = "K-fold CV, tuning, blending and reports for the written + spoken digits competition."


def add_recipe_flags(p: argparse.ArgumentParser, what: str) -> None:
    """The flags cv and tune share: the data, the workdir, the recipe and its most used keys."""
    p.add_argument("--data", default=str(default_data()), help="competition folder (default: the shipped data/wsd)")
    p.add_argument(
        "--workdir", default=None, help=f"artifact folder holding folds.csv and the {what} (default: folds/)"
    )
    p.add_argument(
        "--config",
        default=None,
        help="recipe: a TOML file or a shipped recipe's name (default, robust, seed, reference-fast; default: default)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--folds", type=int, help="K of the K-fold split")
    p.add_argument("--seed", type=int, help="random seed (the split, the models and, in tune, the sampler)")
    p.add_argument("--epochs", type=int, help="training epochs (per fold)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where to train")


def add_track_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--track", choices=["mlflow"], default=None, help="log to MLflow (MLFLOW_TRACKING_URI, else <workdir>/mlruns)"
    )


def add_cv_flags(p: argparse.ArgumentParser) -> None:
    add_recipe_flags(p, "runs")
    p.add_argument("--models", help="comma-separated models, e.g. fusion,image,audio")
    p.add_argument("--workers", type=int, help="parallel training processes (0 = auto)")
    p.add_argument("--run", default=None, help="run name under the workdir (default: the config's name)")
    p.add_argument(
        "--pseudo",
        default=None,
        metavar="SUBMISSION",
        help="add each fold's confident test rows, labelled by this submission's fold models, to its training rows "
        "(a name in submissions/ or its .csv/.json; docs/howto/shift.md)",
    )
    add_cluster_flags(p, "units")


def add_cluster_flags(p: argparse.ArgumentParser, what: str) -> None:
    """--scheduler and --artifacts: train ``what`` (units, stages) on a Dask cluster."""
    p.add_argument(
        "--scheduler",
        default=None,
        help=f"train the {what} on this Dask cluster, e.g. tcp://HOST:8786 (docs/howto/cluster-gpu.md)",
    )
    p.add_argument(
        "--artifacts",
        choices=["client", "shared"],
        default="client",
        help="with --scheduler: workers return unit files to this command (client), or write them (shared filesystem)",
    )


def add_tune_flags(p: argparse.ArgumentParser) -> None:
    add_recipe_flags(p, "studies")
    p.add_argument("--model", default="fusion", help="the model to tune (default: fusion)")
    p.add_argument("--space", default=None, help="search space TOML (default: competition/configs/search.toml)")
    p.add_argument("--study", default=None, help="study name (default: <model>-<config name>)")
    p.add_argument(
        "--storage", default=None, help="sqlite:///FILE or postgresql://USER@HOST/DB (default: a journal file)"
    )
    p.add_argument("--trials", type=int, default=20, help="finished trials the study should have (default: 20)")
    p.add_argument("--timeout", type=float, default=None, help="start no new trial after this many seconds")
    p.add_argument(
        "--workers", dest="trial_processes", metavar="N", type=int, default=1, help="parallel trial processes"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads per trial process (default: 1, as in cv)")
    p.add_argument("--trial-folds", type=int, default=None, help="evaluate only the first N folds per trial")
    p.add_argument("--no-prune", action="store_true", help="train every fold of every trial")
    p.add_argument("--out", default=None, help="best config file (default: configs/tuned-<study>.toml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    cv = sub.add_parser("cv", help="stratified K-fold CV of the fusion model and the unimodal baselines")
    add_cv_flags(cv)
    add_track_flag(cv)
    tune = sub.add_parser("tune", help="Optuna search over a model's hyperparameters on the saved folds")
    add_tune_flags(tune)
    add_track_flag(tune)
    submit = sub.add_parser("submit", help="blend cv runs' fold predictions into a validated submission CSV")
    submit.add_argument("--run", action="append", default=[], help="cv run to blend (repeatable; default: the latest)")
    submit.add_argument("--workdir", default=None, help="artifact folder holding the runs (default: folds/)")
    submit.add_argument("--data", default=str(default_data()), help="competition folder the runs were made on")
    submit.add_argument("--models", default=None, help="models to blend, e.g. fusion,image or run/model")
    submit.add_argument(
        "--average",
        choices=["auto", "logits", "probs"],
        default="auto",
        help="average folds and models as log-probabilities or probabilities (auto: the better out-of-fold)",
    )
    submit.add_argument(
        "--blend",
        choices=["auto", "equal", "fitted", "stack"],
        default="auto",
        help="equal weights, greedy-fitted weights or a logistic-regression stack (auto: the best nested "
        "out-of-fold macro-F1)",
    )
    submit.add_argument(
        "--consensus",
        choices=["auto", "on", "off"],
        default="auto",
        help="give every row of a duplicate group (train and test) its group's pooled label (auto: when the "
        "training groups are label-pure and it does not lower the out-of-fold macro-F1)",
    )
    submit.add_argument(
        "--label-shift",
        choices=["auto", "off"],
        default="off",
        help="auto: estimate the test rows' class proportions (EM per fold model, each calibrated on its own "
        "out-of-fold rows, with a bootstrap interval) and correct the test probabilities when they differ from the "
        "training proportions (default off: it pays for imbalanced training classes with a balanced test, and "
        "costs a little macro-F1 when only the test's classes are imbalanced; see docs/howto/submit.md)",
    )
    submit.add_argument(
        "--offsets",
        choices=["auto", "on", "off"],
        default="auto",
        help="per-class macro-F1 offsets on the blended log-probabilities, applied when their nested out-of-fold "
        "gain is at least 0.0005 (auto: not where the test rows are unlike the training rows; on: there too)",
    )
    submit.add_argument(
        "--full",
        action="store_true",
        help="predict the test rows with refits of each model on all training rows (resumable) instead of its "
        "fold models; blend weights still come from the out-of-fold rows",
    )
    submit.add_argument("--seeds", type=int, default=3, help="refits per model with --full (default 3)")
    submit.add_argument(
        "--keep-shifted",
        action="store_true",
        help="blend a model even when its test predictions part from every other model's (see docs/howto/submit.md)",
    )
    submit.add_argument("--rounds", type=int, default=25, help="greedy ensemble selection steps (default 25)")
    submit.add_argument("--name", default=None, help="submission file name (default: <runs>-<blend>)")
    submit.add_argument("--out", default=None, help="folder for the submission (default: submissions/)")
    submit.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a submission of the same --name made from other runs (default: refuse)",
    )
    add_track_flag(submit)
    score = sub.add_parser("score", help="score a submission CSV against a labelled holdout CSV")
    score.add_argument("submission", help="submission CSV (row_id,label)")
    score.add_argument("labels", help="true labels CSV (row_id,label)")
    rep = sub.add_parser("report", help="learning curves, confusion matrices and the embedding analysis of a run")
    rep.add_argument("--workdir", default=None, help="artifact folder holding the runs (default: folds/)")
    rep.add_argument("--run", default=None, help="run name under the workdir (default: the latest cv run)")
    rep.add_argument("--data", default=None, help="competition folder (default: the one the run was trained on)")
    rep.add_argument("--max-rows", type=int, default=None, help="out-of-fold rows in the embedding analysis (5000)")
    auto = sub.add_parser("auto", help="the whole pipeline in one command within a time limit (docs/howto/auto.md)")
    add_recipe_flags(auto, "runs")
    auto.add_argument("--models", help="comma-separated models of the base recipe (default: the recipe's)")
    auto.add_argument("--time-limit", default="30m", help="wall time of this command: 90s, 30m, 1h or seconds (30m)")
    auto.add_argument(
        "--preset",
        choices=["fast", "best"],
        default="best",
        help="fast: the base recipe and its submission; best: every stage the time allows (default; "
        "docs/howto/auto.md)",
    )
    auto.add_argument("--out", default=None, help="folder for the submissions and auto.csv (default: submissions/)")
    add_cluster_flags(auto, "stages")
    runs = sub.add_parser("runs", help="leaderboard of the workdir's cv runs, tune studies and submissions")
    runs.add_argument("--workdir", default=None, help="artifact folder holding the runs (default: folds/)")
    runs.add_argument("--submissions", default=None, help="folder of the submissions (default: submissions/)")
    runs.add_argument("--model", default=None, help="only rows of this model (e.g. fusion)")
    runs.add_argument("--data", default=None, help="only rows made on this competition folder (by fingerprint)")
    runs.add_argument("--json", action="store_true", help="print the tables as JSON")
    return parser
