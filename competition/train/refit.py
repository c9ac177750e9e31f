"""Refits: retrain a cv run's models on every training row with S seeds, for the run's epochs and recipe, and
predict the test rows with them (``submit --full``). Blend weights still come from the out-of-fold rows.
With ``early_stop`` a refit stops as the fold units do, on an inner split of all the training rows (duplicates
on one side), whose rows join the others for the decay phase.

Each (model, seed) unit trains through the cv runner's own code (``training.Learner``, the audio scaler fit
on the rows it trains on, one process per core) and is written under the run as ``<model>/refit<s>.pt``
and ``<model>/refit<s>.npz`` (test_logits, seed, epochs), the npz atomically and last, so it marks the
unit done: a rerun trains only the missing seeds, and Ctrl-C keeps the finished ones. Seed ``s`` of a
model is ``unit_seed(run seed, "<model>/refit", s)``, distinct from its fold models' seeds; the same run
config and seed give the same test predictions.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from competition.config import Config, load_config
from competition.data.load import N_CLASSES, Competition
from competition.store.atomic import write_npz, write_torch
from competition.train.executor import plan_workers, unordered
from competition.train.learner import resolve_device
from competition.train.unit import fit_unit, unit_seed
from competition.utils.console import console
from competition.utils.errors import UserError


def refit_path(run_dir: Path, model: str, index: int) -> Path:
    return run_dir / model / f"refit{index}.npz"


def refit_seed(seed: int, model: str, index: int) -> int:
    return unit_seed(seed, f"{model}/refit", index)


def refit_done(path: Path, n_test: int) -> bool:
    try:
        with np.load(path) as z:
            return z["test_logits"].shape == (n_test, N_CLASSES)
    except (OSError, ValueError, KeyError):
        return False  # missing or unreadable: train the unit again


def refit_unit(
    comp: Competition, cfg: Config, model: str, index: int, run_dir: Path, device: str, threads: int
) -> dict:
    """Train ``model`` on every training row with refit seed ``index`` and write its test logits."""
    cfg = cfg.for_model(model)
    t0 = time.perf_counter()
    seed = refit_seed(cfg.seed, model, index)
    learner, test, checkpoint = fit_unit(comp, cfg, model, np.arange(comp.n_train), seed, device, threads)
    write_torch(run_dir / model / f"refit{index}.pt", checkpoint)
    seconds = time.perf_counter() - t0
    result = {"model": model, "refit": index, "seed": seed, "epochs": learner.epochs_, "seconds": seconds}
    write_npz(refit_path(run_dir, model, index), test_logits=test, result=json.dumps(result))  # last: marks it done
    return result


def refit_run(
    run_dir: Path, meta: dict, comp: Competition, models: list[str], seeds: int, quiet: bool = False
) -> dict[str, np.ndarray]:
    """Train the missing refits of ``models`` (seeds 0..seeds-1) and return {model: (seeds, M, 10) test logits}."""
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: must be >= 1; fix the value")
    cfg = load_config(None, meta["config"])
    device = resolve_device(cfg.device)
    todo = [(m, s) for m in models for s in range(seeds) if not refit_done(refit_path(run_dir, m, s), comp.n_test)]
    if not quiet:
        console.print(
            f"refits of run {run_dir.name}: {len(models)} models x {seeds} seeds on all {comp.n_train} training rows "
            f"({len(models) * seeds - len(todo)} finished, {len(todo)} to train on {device})"
        )
    if todo:
        workers, threads = plan_workers(cfg, device, len(todo))

        def report(r: dict) -> None:
            if not quiet:
                console.print(f"  refit {r['model']} seed {r['refit']}: {r['epochs']} epochs, {r['seconds']:.0f} s")

        if workers == 1:
            for m, s in todo:
                report(refit_unit(comp, cfg, m, s, run_dir, device, threads))
        else:
            from joblib import delayed

            calls = (delayed(refit_unit)(comp, cfg, m, s, run_dir, device, threads) for m, s in todo)
            with unordered(calls, workers) as jobs:
                for r in jobs:
                    report(r)
    out = {}
    for m in models:
        logits = []
        for s in range(seeds):
            path = refit_path(run_dir, m, s)
            with np.load(path) as z:
                logits.append(z["test_logits"])
            if not np.isfinite(logits[-1]).all():
                raise UserError(f"{path}: NaN/inf test predictions (a diverged refit); fix: delete it and rerun")
        out[m] = np.stack(logits)
    return out
