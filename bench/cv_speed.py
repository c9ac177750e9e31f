"""Benchmark: the seed recipe (the write-up's) against the default fast recipe, side by side in one run.

Prints (1) the median time of one training epoch per model and recipe on fold 0's training rows,
single-threaded as every CV unit trains, interleaving the recipes so machine noise hits both alike;
(2) the whole 5-fold CV wall time of each recipe: measured for the default recipe (a real
``run_cv`` in a temporary workdir, with its out-of-fold scores), estimated for the seed recipe from its
measured epoch times (epochs x folds / parallel workers), since it takes ~1.5 h here.

    python bench/cv_speed.py [--repeats 3] [--skip-cv] [--data DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from competition.config import load_config
from competition.data.duplicates import duplicate_groups
from competition.data.load import fit_audio_scaler, load_competition
from competition.splits.folds import make_folds
from competition.train.cv import run_cv
from competition.train.learner import Learner
from competition.utils.paths import RECIPES_DIR, default_data


def epoch_seconds(cfg, model, image, audio, y) -> float:
    one = load_config(None, cfg.to_dict() | {"epochs": 1})
    t = time.perf_counter()
    Learner(model, one, seed=0).fit(image, audio, y)
    return time.perf_counter() - t


def _one_thread_epoch(cfg, model, image, audio, y) -> float:
    torch.set_num_threads(1)
    return epoch_seconds(cfg, model, image, audio, y)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(default_data()))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-cv", action="store_true", help="only the per-epoch timings")
    args = p.parse_args()

    torch.set_num_threads(1)  # as each CV unit trains
    recipes = {name: load_config(RECIPES_DIR / f"{name}.toml") for name in ("seed", "default")}
    comp = load_competition(args.data)
    fold = make_folds(comp.y, 5, 0, duplicate_groups(comp.image, comp.audio))
    tr = np.flatnonzero(fold != 0)
    audio = fit_audio_scaler(comp.audio, tr).transform(comp.audio).astype(np.float32)
    image, audio, y = comp.image[tr], audio[tr], comp.y[tr]
    models = recipes["default"].models

    times = {(r, m): [] for r in recipes for m in models}
    for rep in range(args.repeats):
        for m in models:
            for r, cfg in recipes.items():  # interleaved: seed, default, seed, default, ...
                times[(r, m)].append(epoch_seconds(cfg, m, image, audio, y))
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)

    print(f"\nOne training epoch on {len(tr)} rows, 1 thread, median of {args.repeats} (seconds):")
    print(f"{'model':<8} {'seed':>8} {'default':>8} {'ratio':>7}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for m in models:
        print(
            f"{m:<8} {med[('seed', m)]:8.2f} {med[('default', m)]:8.2f} {med[('seed', m)] / med[('default', m)]:6.1f}x"
        )

    # Parallel processes vs threads: two single-threaded epochs side by side in two processes, against the
    # same two epochs one after the other in one process using every core.
    from joblib import Parallel, delayed

    cores = os.cpu_count() or 1
    cfg, m = recipes["default"], "fusion"
    threaded, parallel = [], []
    for _ in range(args.repeats):
        torch.set_num_threads(cores)
        t = time.perf_counter()
        for _ in range(cores):
            epoch_seconds(cfg, m, image, audio, y)
        threaded.append(time.perf_counter() - t)
        torch.set_num_threads(1)
        t = time.perf_counter()
        Parallel(n_jobs=cores)(delayed(_one_thread_epoch)(cfg, m, image, audio, y) for _ in range(cores))
        parallel.append(time.perf_counter() - t)
    pt, pp = statistics.median(threaded), statistics.median(parallel)
    print(f"\n{cores} fusion epochs: one process x {cores} threads {pt:.1f}s, {cores} processes x 1 thread {pp:.1f}s")
    print(f"  processes are {pt / pp:.2f}x faster (median of {args.repeats}, process start-up included)")

    workers = cores
    est = {r: sum(med[(r, m)] for m in models) * cfg.epochs * cfg.folds / workers for r, cfg in recipes.items()}
    print(f"\nWhole {recipes['seed'].folds}-fold CV of {len(models)} models, {workers} workers (training epochs only):")
    for r, cfg in recipes.items():
        print(f"  {r:<8} {cfg.epochs:>3} epochs x batch {cfg.batch_size:<3}: estimated {est[r] / 60:6.1f} min")
    if args.skip_cv:
        return
    with tempfile.TemporaryDirectory() as wd:
        t = time.perf_counter()
        result = run_cv(recipes["default"], Path(args.data), Path(wd), "bench", quiet=True)
        wall = time.perf_counter() - t
    print(f"\nDefault recipe, measured whole CV: {wall / 60:.2f} min wall")
    for m, row in result.oof.iterrows():
        print(f"  {m:<8} OOF macro-F1 {row['macro_f1']:.4f}  accuracy {row['accuracy']:.4f}")
    print(f"Speed-up of the whole CV, seed (estimated) / default (measured): {est['seed'] / wall:.1f}x")


if __name__ == "__main__":
    main()
