"""Loading: a run folder's fold files as one typed ``Run`` (out-of-fold and test logits per model, the fold of
each row), as far as it got (``load_run``) or finished and checked against the data (``load_finished_run``,
``load_runs``: the runs ``submit`` blends together)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.data.load import N_CLASSES, Competition
from competition.metrics import scores
from competition.store.runs import (
    Unit,
    UnitResult,
    check_same_data,
    fold_number,
    load_unit,
    missing_folds,
    model_seeds,
    read_run_config,
    split_fingerprint,
    unit_files,
    unit_path,
)
from competition.utils.errors import UserError
from competition.utils.validation import check_name


@dataclass
class Run:
    """A run's loaded fold files: per model the out-of-fold (N, 10) logits (NaN rows where a fold is not
    finished), the fold test logits (K, M, 10) and the fold results."""

    name: str
    dir: Path
    meta: dict  # config.json: config, data, data_fingerprint, split_fingerprint
    oof: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    folds: dict[str, list[UnitResult]]
    fold_of: np.ndarray  # (N,) the fold of each training row from the saved val_idx, -1 where none

    @property
    def models(self) -> list[str]:
        return list(self.oof)


def load_run(run_dir: Path, n_train: int, models: list[str] | None = None, y: np.ndarray | None = None) -> Run:
    """Every finished fold of a run (every seed of it trained), as far as it got (for cv's scores, report and
    tune); ``y``: the training labels, to score seed-bagged folds on their averaged logits."""
    meta = read_run_config(run_dir)
    units = {}
    for model_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        n = model_seeds(meta["config"], model_dir.name)
        files = [p for k, p in unit_files(model_dir) if all(_seed_path(p, s).is_file() for s in range(n))]
        if files and (models is None or model_dir.name in models):
            units[model_dir.name] = files
    return _assemble(run_dir, meta, units, n_train, y=y)


def load_finished_run(
    run_dir: Path, comp: Competition, models: list[str] | None = None, meta: dict | None = None, fix: str = ""
) -> Run:
    """A run whose every wanted model has every fold, each array the shape ``comp`` calls for (for submit);
    ``meta``: its config.json when the caller has read it already; ``fix``: the fix a missing fold's error names
    (default: finish the run, or leave the model out with --models)."""
    meta = read_run_config(run_dir) if meta is None else meta
    names = [m for m in meta["config"]["models"] if models is None or m in models]
    missing = {m: f for m, f in missing_folds(run_dir, meta).items() if m in names}
    if missing:
        m, f = next(iter(missing.items()))
        fix = fix or (
            f"fix: finish the run with `run.py cv --run {run_dir.name}` (same flags), or leave the model out "
            "with --models"
        )
        raise UserError(f"{run_dir / m}: fold(s) {','.join(map(str, f))} of {meta['config']['folds']} missing; {fix}")
    units = {m: [unit_path(run_dir, m, f) for f in range(meta["config"]["folds"])] for m in names}
    return _assemble(run_dir, meta, units, comp.n_train, comp, comp.y)


def _seed_path(path: Path, seed: int) -> Path:
    """The fold file of seed ``seed`` beside seed 0's ``path`` (``<run>/<model>/fold<k>.npz``)."""
    return unit_path(path.parent.parent, path.parent.name, fold_number(path), seed)


def load_bag(path: Path, seeds: int, y: np.ndarray | None = None) -> Unit:
    """A fold's seeds as one unit: the mean of their logits (seed 0's file alone, as read, when ``seeds`` is 1).
    Its result: seed 0's, with the seconds of all seeds and, given the training labels ``y``, the scores of
    the averaged logits (else the mean of the seeds' scores)."""
    u = load_unit(path)
    if seeds == 1:
        return u
    bag = [u] + [load_unit(_seed_path(path, s)) for s in range(1, seeds)]
    for b, s in zip(bag[1:], range(1, seeds), strict=True):
        if not np.array_equal(b.val_idx, u.val_idx):
            raise UserError(
                f"{_seed_path(path, s)}: validation rows differ from {path.name}'s; fix: delete it and rerun"
            )
    oof = np.mean([b.oof_logits for b in bag], axis=0, dtype=np.float32)
    test = np.mean([b.test_logits for b in bag], axis=0, dtype=np.float32)
    if y is not None:
        fit = scores(y[u.val_idx], oof)
    else:
        fit = {k: float(np.mean([getattr(b.result, k) for b in bag])) for k in ("macro_f1", "accuracy")}
    seconds = float(sum(b.result.seconds for b in bag))
    result = UnitResult(u.result.model, u.fold, **fit, seconds=seconds, epochs=u.result.epochs, seeds=seeds)
    return Unit(u.fold, u.val_idx, oof, test, result)


def _assemble(
    run_dir: Path,
    meta: dict,
    units: dict[str, list[Path]],
    n_train: int,
    comp: Competition | None = None,
    y: np.ndarray | None = None,
) -> Run:
    """Load each model's fold files into a Run (each fold's seeds averaged); with ``comp``, check every file
    against the data's shapes."""
    run = Run(run_dir.name, run_dir, meta, {}, {}, {}, np.full(n_train, -1, dtype=np.int64))
    for m, paths in units.items():
        fold_of = np.full(n_train, -1, dtype=np.int64)
        oof = np.full((n_train, N_CLASSES), np.nan, dtype=np.float32)
        tests = []
        run.folds[m] = []
        for path in paths:
            u = load_bag(path, model_seeds(meta["config"], m), y)
            if comp is not None:
                _check_unit(u, path, comp, run_dir.name, fold_of)
            fold_of[u.val_idx] = u.fold
            oof[u.val_idx] = u.oof_logits
            tests.append(u.test_logits)
            run.folds[m].append(u.result)
        run.oof[m], run.test[m], run.fold_of = oof, np.stack(tests), fold_of
        if comp is not None and ((fold_of == -1).any() or split_fingerprint(fold_of) != meta.get("split_fingerprint")):
            raise UserError(
                f"{run_dir / m}: its folds' validation rows are not the run's saved split; "
                f"fix: rerun `run.py cv --run {run_dir.name}` in a clean workdir"
            )
    return run


def _check_unit(u: Unit, path: Path, comp: Competition, run_name: str, fold_of: np.ndarray) -> None:
    """One fold file fits the data: test rows, validation rows, finite values, no overlap with another fold."""
    n = comp.n_train
    if u.test_logits.shape != (comp.n_test, N_CLASSES):
        raise UserError(
            f"{path}: test predictions have shape {u.test_logits.shape}, expected ({comp.n_test}, {N_CLASSES}) for "
            f"the rows of {comp.root / 'sample_submission.csv'}; fix: pass the --data the run was made on"
        )
    val_idx, o = u.val_idx, u.oof_logits
    if o.shape != (len(val_idx), N_CLASSES) or val_idx.min(initial=0) < 0 or val_idx.max(initial=0) >= n:
        raise UserError(
            f"{path}: out-of-fold predictions {o.shape} do not fit {len(val_idx)} validation rows of "
            f"{n} training rows; fix: delete it and rerun `run.py cv --run {run_name}`"
        )
    if not (np.isfinite(o).all() and np.isfinite(u.test_logits).all()):
        raise UserError(f"{path}: NaN/inf predictions (a diverged model); fix: delete it and rerun the fold")
    if (fold_of[val_idx] != -1).any():
        raise UserError(f"{path}: validation rows overlap another fold's; fix: rerun the run in a new workdir")


def load_runs(workdir: Path, names: list[str], comp: Competition, models: list[str] | None) -> list[Run]:
    """Load several finished runs, refusing runs made on different data folders or different fold assignments.

    ``models`` items are ``model`` (in every run) or ``run/model``; a run all of whose models they leave out
    takes no part.
    """
    if len(set(names)) != len(names):
        raise UserError(f"--run: a run is named twice ({', '.join(names)}); fix: name each run once")
    dirs = [workdir / check_name(n, "--run", "run") for n in names]
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"{d}: run not found; fix: pass --run with a folder under --workdir {workdir}")
    metas = [read_run_config(d) for d in dirs]
    for key, what in [("data_fingerprint", "data folders"), ("split_fingerprint", "fold assignments")]:
        values = {n: m.get(key) for n, m in zip(names, metas, strict=True)}
        if len(set(values.values())) > 1:
            detail = ", ".join(f"{n}: {v}" for n, v in values.items())
            raise UserError(
                f"--run: runs were made on different {what} ({key} {detail}); "
                "fix: blend only runs of one data folder and one workdir split"
            )
    check_same_data(dirs[0], metas[0], comp)
    split = [m.rpartition("/")[::2] for m in models or []]
    runs = []
    for d, meta in zip(dirs, metas, strict=True):
        wanted = None if models is None else [model for run, model in split if run in ("", d.name)]
        runs.append(load_finished_run(d, comp, wanted, meta))
    for item, (run, model) in zip(models or [], split, strict=True):
        if not any(model in r.oof and run in ("", r.name) for r in runs):
            raise UserError(f"--models: {item!r} is not a model of run(s) {', '.join(names)}; fix the name")
    return [r for r in runs if r.oof]
