"""Benchmark: the default recipe's cv units trained unit by unit against batched (one vmap program per model).

(1) Timing: per model, its ``--folds`` units (``--epochs`` each) trained one after the other as one cv worker
does (``fit_unit``: training, validation passes, test logits) against the same units as one batched group
(``UnitGroup``: the same work), single-threaded, side by side in one process and interleaved, median of
``--repeats``. ``--rows N`` trains on the first N training rows only (a cut for a slow machine).
(2) ``--oof``: whole ``run_cv`` runs, sequential and batched, on the same split, with each model's
out-of-fold macro-F1, their difference, and the fold-to-fold standard deviation of the sequential run.

    python bench/batched.py [--data DIR] [--folds 5] [--epochs 1] [--repeats 3] [--rows N] [--device cpu]
    python bench/batched.py --oof [--folds 3] [--epochs 2]        # then the timing is skipped
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from competition.config import load_config
from competition.data.duplicates import duplicate_groups
from competition.data.load import load_competition, write_subset
from competition.splits.folds import make_folds
from competition.train.batched import UnitGroup
from competition.train.cv import run_cv
from competition.train.unit import CVJob, fit_unit, unit_seed
from competition.utils.paths import default_data


def sequential_seconds(job: CVJob, model: str) -> float:
    """Every fold of ``model`` trained unit by unit, as one worker trains them."""
    t = time.perf_counter()
    for k in range(job.cfg.folds):
        tr, va = np.flatnonzero(job.fold_of != k), np.flatnonzero(job.fold_of == k)
        fit_unit(job.comp, job.cfg, model, tr, unit_seed(job.cfg.seed, model, k), job.device, 1, va)
    return time.perf_counter() - t


def batched_seconds(job: CVJob, model: str) -> float:
    """Every fold of ``model`` trained as one batched group (training, validation passes and test logits)."""
    t = time.perf_counter()
    group = UnitGroup(job, model, [(k, 0) for k in range(job.cfg.folds)], threads=1).fit()
    group.predict([group.test_rows] * job.cfg.folds)
    if job.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def timing(args: argparse.Namespace) -> None:
    data = Path(args.data)
    if args.rows:
        data = write_subset(Path(tempfile.mkdtemp()) / "data", args.rows, min(args.rows, 5000), data)
    comp = load_competition(data)
    cfg = load_config("default", {"folds": args.folds, "epochs": args.epochs, "device": args.device})
    fold_of = make_folds(comp.y, cfg.folds, cfg.seed, duplicate_groups(comp.image, comp.audio))
    job = CVJob(comp, fold_of, cfg, Path("unused"), args.device)
    torch.set_num_threads(1)  # as each cv unit trains on CPU
    times = {(mode, m): [] for mode in ("sequential", "batched") for m in cfg.models}
    for rep in range(args.repeats):
        for m in cfg.models:  # interleaved, so machine noise hits both alike
            times[("sequential", m)].append(sequential_seconds(job, m))
            times[("batched", m)].append(batched_seconds(job, m))
            print(f"repeat {rep + 1}: {m} sequential {times[('sequential', m)][-1]:.1f}s, "
                  f"batched {times[('batched', m)][-1]:.1f}s", flush=True)  # fmt: skip
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"\n{cfg.folds} folds x {cfg.epochs} epoch(s) of each model, {comp.n_train} training rows, "
        f"{comp.n_test} test rows, {args.device}, 1 thread, median of {args.repeats} (seconds):\n"
    )
    print("| model | sequential | batched | batched speed-up |")
    print("| --- | --- | --- | --- |")
    for m in cfg.models:
        s, b = med[("sequential", m)], med[("batched", m)]
        print(f"| {m} | {s:.1f} | {b:.1f} | {s / b:.2f}x |")
    s, b = (sum(med[(mode, m)] for m in cfg.models) for mode in ("sequential", "batched"))
    print(f"| all | {s:.1f} | {b:.1f} | {s / b:.2f}x |")


def oof(args: argparse.Namespace) -> None:
    comp = load_competition(args.data)
    base = {"folds": args.folds, "epochs": args.epochs, "device": args.device}
    results = {}
    with tempfile.TemporaryDirectory() as wd:
        for mode in ("off", "on"):
            t = time.perf_counter()
            cfg = load_config("default", base | {"batch_units": mode})
            results[mode] = run_cv(cfg, comp, Path(wd), f"batch-{mode}", quiet=True)
            print(f"batch_units={mode}: {time.perf_counter() - t:.0f}s wall", flush=True)
    seq, bat = results["off"], results["on"]
    print(f"\n{args.folds} folds x {args.epochs} epochs, {comp.n_train} rows: out-of-fold macro-F1\n")
    print("| model | sequential | batched | batched - sequential | fold-to-fold std (sequential) |")
    print("| --- | --- | --- | --- | --- |")
    for m in seq.oof.index:
        s, b = seq.oof.loc[m, "macro_f1"], bat.oof.loc[m, "macro_f1"]
        std = seq.per_fold[seq.per_fold["model"] == m]["macro_f1"].std()
        print(f"| {m} | {s:.4f} | {b:.4f} | {b - s:+.4f} | {std:.4f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(default_data()))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", type=int, default=0, help="train on the first N training rows only (0: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--oof", action="store_true", help="compare whole cv runs' out-of-fold scores instead")
    args = p.parse_args()
    oof(args) if args.oof else timing(args)


if __name__ == "__main__":
    main()
