"""Cross-validation: train every (model, fold) unit of a run on the saved split (resuming finished ones, and
waiting for those another command claims), then score the run out of fold; once a model has every fold, write
its ``oof.npy`` and ``test.npy`` probabilities. The run folder's layout: ``store/runs.py``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from competition.config import Config
from competition.data.duplicates import duplicate_summary
from competition.data.load import Competition, load_competition
from competition.metrics import scores
from competition.splits import adversarial
from competition.splits.folds import load_or_make_folds
from competition.store.atomic import environment, remove_stale_temp_files, write_json, write_text
from competition.store.claims import UnitClaims
from competition.store.loading import load_run
from competition.store.predictions import write_prediction_files
from competition.store.runs import add_to_run_config, split_fingerprint, unit_finished
from competition.train import pseudo
from competition.train.batched import fallback_lines
from competition.train.executor import Executor, LocalExecutor, Units, plan_workers
from competition.train.learner import model_kwargs, resolve_device
from competition.train.unit import CVJob
from competition.utils.console import console, cv_table, duplicates_line
from competition.utils.paths import default_workdir


@dataclass
class CVResult:
    run_dir: Path
    per_fold: pd.DataFrame  # model, fold, macro_f1, accuracy, seconds, epochs
    oof: pd.DataFrame  # index model: macro_f1, accuracy (over all training rows)


def run_cv(
    cfg: Config,
    data: str | Path | Competition | None = None,
    workdir: Path | None = None,
    run_name: str = "default",
    quiet: bool = False,
    executor: Executor | None = None,
    deadline: float | None = None,
    batch_seconds: float = 0.0,
) -> CVResult:
    """Train every (model, fold) unit not yet finished in ``workdir/run_name`` and score the run; ``executor``
    trains them (default: local processes; ``dask.DaskExecutor`` for a Dask cluster). ``deadline`` (a
    ``time.time()``): claim no unit batch that would end after it (``batch_seconds``: the expected seconds of one,
    or the longest batch seen so far if longer), and raise ``DeadlineReached`` (finished units kept) if units
    remain then."""
    executor = executor or LocalExecutor()
    local = isinstance(executor, LocalExecutor)
    workdir = default_workdir() if workdir is None else Path(workdir)
    device = resolve_device(cfg.device) if local else cfg.device  # a cluster's workers resolve "auto"
    comp = data if isinstance(data, Competition) else load_competition(data)
    if cfg.pseudo:  # saved in the run's config as an absolute path
        cfg = dataclasses.replace(cfg, pseudo=str(pseudo.resolve_submission(cfg.pseudo)))
    if not quiet:
        console.print(f"data {comp.root}: {comp.n_train} train rows, {comp.n_test} test rows")
        console.print(duplicates_line(duplicate_summary(comp)))
    adv = adversarial.load_or_run(comp, workdir)  # cached per data folder: the split's auto choice reads it
    if not quiet:
        for line in adversarial.adversarial_lines(adv):
            console.print(line)
    split = load_or_make_folds(comp, workdir, cfg.folds, cfg.seed, cfg.group_duplicates, cfg.split)
    if not quiet:
        console.print(split.attrs["why"])
    fold_of = split["fold"].to_numpy()
    split_fp = split_fingerprint(fold_of)
    run_dir = workdir / run_name
    # cv --pseudo: a bad submission is refused before the run folder is made
    rnd = pseudo.compute(run_dir, comp, fold_of, split_fp, cfg) if cfg.pseudo else None
    for m in cfg.models if rnd is not None else []:  # pseudo_init=source: every unit's starting weights are there
        if cfg.for_model(m).pseudo_init == "source":
            seeds = range(cfg.for_model(m).seeds)
            starts = [pseudo.source_checkpoint(Path(cfg.pseudo), m, k, s) for k in range(cfg.folds) for s in seeds]
            for start in {path.parent.parent: path for path in starts}.values():  # one per source run (one recipe)
                pseudo.check_source_model(start, m, model_kwargs(m, cfg.for_model(m)))
    add_to_run_config(run_dir, cfg, comp, split_fp)
    remove_stale_temp_files(run_dir)  # left by a killed earlier command (SIGKILL runs no cleanup)
    adversarial.save(run_dir / "adversarial.json", comp, adv)
    pseudo_rows = {}
    if rnd is not None:
        pseudo_rows, lines = pseudo.save_or_check(run_dir, rnd, comp.n_test)
        if not quiet:
            console.print(*lines, sep="\n")
    where = {} if local else {"scheduler": executor.address}
    write_json(run_dir / "environment.json", environment(device, cfg.seed) | where)

    # Costliest models first (parameter count as the proxy), so the parallel workers end together
    # instead of one finishing a long unit alone.
    by_cost = sorted(cfg.models, key=_parameter_count, reverse=True)
    # A unit is (model, fold, seed): with seed bagging each seed of a fold trains, resumes and is claimed alone.
    units = [(m, k, s) for m in by_cost for k in range(cfg.folds) for s in range(cfg.for_model(m).seeds)]
    todo = [u for u in units if not unit_finished(run_dir, *u)]
    n_done = len(units) - len(todo)
    if not quiet:
        grouped = {"grouped": "grouped by duplicates", "stratified": "not grouped"}.get(split.attrs["split"], "")
        grouped = grouped or "each a speaker-like cluster"
        console.print(
            f"run {run_dir}: {len(cfg.models)} models x {cfg.folds} folds ({grouped}){_bagging(cfg)}, "
            f"{n_done} units already finished, {len(todo)} to train on {device if local else executor}"
        )
    if todo and not quiet:  # batch_units asked for what the batched path cannot train
        lines = fallback_lines(cfg, device) if local else []
        if not local and cfg.batch_units == "on":
            lines = [f"batch_units=on: {executor} trains unit by unit, not batched"]
        for line in lines:
            console.print(line)
    if todo:
        job = CVJob(comp, fold_of, cfg, run_dir, device, pseudo_rows)
        train_claimed(job, todo, executor, quiet, deadline, batch_seconds)
    return summarise(run_dir, comp, cfg, quiet)


CLAIM_POLL = 5.0  # seconds between looks at units another command is training


class DeadlineReached(Exception):
    """``run_cv(deadline=...)``: the deadline passed with units left; every finished unit is kept."""

    def __init__(self, left: int):
        super().__init__(f"deadline reached with {left} unit(s) left untrained")
        self.left = left


def _batch_size(executor: Executor, job: CVJob, n: int) -> int:
    """Units claimed at once under a deadline: one per parallel worker, so the deadline is checked at unit
    boundaries (an executor may say its capacity with ``slots()``)."""
    if isinstance(executor, LocalExecutor):
        return plan_workers(job.cfg, job.device, n)[0]
    slots = getattr(executor, "slots", None)
    return max(1, slots()) if callable(slots) else n


def train_claimed(
    job: CVJob, todo: Units, executor: Executor, quiet: bool, deadline: float | None = None, batch_seconds: float = 0.0
) -> None:
    """Train the units of ``todo`` this command can claim, then wait for those another command holds (training
    any it gives up or whose owner dies), so the run is complete when this returns. With a ``deadline``, units
    are claimed one batch of workers at a time, and none that would end after it (``DeadlineReached``): a batch is
    priced at ``batch_seconds`` or, when longer, at the longest batch trained so far (the costliest units go first,
    so a measured batch bounds the later ones where the estimate was too low)."""
    run_dir = job.run_dir
    with UnitClaims(run_dir) as claims:
        waiting, longest = [], batch_seconds
        while todo:
            if deadline is not None and time.time() + longest > deadline:
                raise DeadlineReached(len(todo))
            batch = len(todo) if deadline is None else _batch_size(executor, job, len(todo))
            mine, rest = claims.take(todo[:batch], lambda *unit: unit_finished(run_dir, *unit))
            todo = todo[batch:] + rest  # units another command holds go last
            if mine:
                t0 = time.time()
                executor.execute(job, mine, quiet)
                longest = max(longest, time.time() - t0)
                for unit in mine:
                    claims.release(*unit)
            if todo and not mine:  # only units another command holds are left in view: wait for them
                if not quiet and todo != waiting:
                    console.print(f"waiting for {len(todo)} unit(s) that {claims.holders(todo)} is training")
                waiting = todo
                time.sleep(CLAIM_POLL)


def _bagging(cfg: Config) -> str:
    """``, fusion x 3 seeds`` for the models that bag seeds (nothing without seed bagging)."""
    bags = {m: cfg.for_model(m).seeds for m in cfg.models}
    return "".join(f", {m} x {n} seeds" for m, n in bags.items() if n > 1)


def _parameter_count(model: str) -> int:
    from competition.models import create_model

    return sum(p.numel() for p in create_model(model).parameters())


def summarise(run_dir: Path, comp: Competition, cfg: Config, quiet: bool = False) -> CVResult:
    """Per-fold and out-of-fold scores of every model of the run (this command's first, then those of earlier
    commands, e.g. after a rerun with a subset of --models); writes scores.csv, summary.json and prints a table."""
    run = load_run(run_dir, comp.n_train, y=comp.y)  # y: seed-bagged folds scored on their averaged logits
    models = list(dict.fromkeys([*cfg.models, *run.meta["config"]["models"]]))
    rows = [dataclasses.asdict(r) for m in models if m in run.folds for r in run.folds[m]]
    per_fold = pd.DataFrame(rows).drop(columns="seed", errors="ignore")  # a loaded fold is all its seeds (seeds)
    oof_rows = {}
    for m in models:
        if m in run.folds and len(run.folds[m]) == cfg.folds:
            oof_rows[m] = scores(comp.y, run.oof[m])  # f1_score(average="macro") over all training rows
            write_prediction_files(run_dir / m, run.oof[m], run.test[m])  # oof.npy, test.npy
    oof = pd.DataFrame.from_dict(oof_rows, orient="index", columns=["macro_f1", "accuracy"])
    write_text(run_dir / "scores.csv", per_fold.to_csv(index=False))
    write_json(run_dir / "summary.json", {"oof": oof_rows, "per_fold": per_fold.to_dict(orient="records")})
    if not quiet and len(oof):
        console.print(cv_table(per_fold, oof, f"{run_dir.name}: {cfg.folds}-fold CV, macro-F1"))
    return CVResult(run_dir, per_fold, oof)
