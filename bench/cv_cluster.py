"""Time cv units through local processes and through a distributed.LocalCluster (2 workers x 1 thread), side by side
``--repeats`` times, and compare each pair of runs' out-of-fold and test logits bitwise (figures in
bench/results/cluster_speed.md and bench/results/cluster.md).

    PYTHONPATH=. python3 bench/cv_cluster.py data/wsd /tmp/wd --epochs 1 --folds 2 --repeats 3

Per-unit seconds are each unit's own clock (``scores.csv``): a model's figure is the mean over its folds, and the
table shows the median over the repeats. Each repeat trains every unit afresh (run folders ``local-<i>`` and
``dask-<i>``).
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
from joblib.externals.loky import get_reusable_executor

from competition.config import load_config
from competition.data.load import load_competition
from competition.store.loading import load_run
from competition.train.cv import run_cv
from competition.train.dask import DaskExecutor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("workdir")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="fusion,image,audio")
    ap.add_argument("--config", default="default")
    a = ap.parse_args()
    keys = {"epochs": a.epochs, "folds": a.folds, "models": a.models, "workers": 2, "device": "cpu"}
    cfg = load_config(a.config, keys)
    wd = Path(a.workdir)
    n = load_competition(a.data).n_train

    from distributed import LocalCluster

    unit = {"local": {m: [] for m in cfg.models}, "cluster": {m: [] for m in cfg.models}}
    wall = {"local": [], "cluster": []}
    for i in range(a.repeats):
        # Fresh local worker processes each repeat, as the cluster's are: else the local units after the first repeat
        # find torch's lazy imports and other first-use costs already paid in joblib's reused loky processes.
        get_reusable_executor().shutdown(wait=True)
        t0 = time.perf_counter()
        local = run_cv(cfg, Path(a.data), wd, f"local-{i}", quiet=True)
        wall["local"].append(time.perf_counter() - t0)
        environ = dict(os.environ)
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc:
            t0 = time.perf_counter()
            with DaskExecutor(lc.scheduler_address) as cl:
                dask = run_cv(cfg, Path(a.data), wd, f"dask-{i}", quiet=True, executor=cl)
            wall["cluster"].append(time.perf_counter() - t0)
        # The nanny writes its pre-spawn variables (MALLOC_TRIM_THRESHOLD_, ...) into this process's environment:
        # undo it, else the next repeat's local worker processes would inherit them.
        os.environ.clear()
        os.environ.update(environ)
        for kind, result in (("local", local), ("cluster", dask)):
            for m, rows in result.per_fold.groupby("model"):
                unit[kind][m].append(float(rows["seconds"].mean()))
        la, lb = load_run(local.run_dir, n), load_run(dask.run_dir, n)
        for m in sorted(la.oof):
            same_oof, same_test = np.array_equal(la.oof[m], lb.oof[m]), np.array_equal(la.test[m], lb.test[m])
            print(f"repeat {i}: {m}: OOF array_equal {same_oof}, test array_equal {same_test}", flush=True)
        print(f"repeat {i}: local {wall['local'][-1]:.1f} s, cluster {wall['cluster'][-1]:.1f} s", flush=True)

    print(f"\nper-unit seconds, median of {a.repeats} (each the mean over {a.folds} folds):\n")
    print("| model | local processes | LocalCluster | ratio | runs (local / cluster) |")
    print("| --- | --- | --- | --- | --- |")
    for m in cfg.models:
        lo, cl = statistics.median(unit["local"][m]), statistics.median(unit["cluster"][m])
        runs = " ".join(f"{x:.1f}/{y:.1f}" for x, y in zip(unit["local"][m], unit["cluster"][m], strict=True))
        print(f"| {m} | {lo:.1f} | {cl:.1f} | {cl / lo:.2f} | {runs} |")
    lo, cl = statistics.median(wall["local"]), statistics.median(wall["cluster"])
    print(f"| whole cv (wall) | {lo:.1f} | {cl:.1f} | {cl / lo:.2f} | |")


if __name__ == "__main__":  # the LocalCluster's worker processes re-import this file
    main()
