"""Time a cv run through local processes and through a distributed.LocalCluster (2 workers x 1 thread), and compare
the two runs' out-of-fold and test logits bitwise (figures in bench/results/cluster.md).

    PYTHONPATH=. python3 bench/cv_cluster.py data/wsd /tmp/wd --epochs 1 --folds 2
"""

import argparse
import time
from pathlib import Path

import numpy as np

from competition.config import load_config
from competition.data.load import load_competition
from competition.store.loading import load_run
from competition.train.cv import run_cv
from competition.train.dask import DaskExecutor as DaskUnits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("workdir")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--models", default="fusion,image,audio")
    ap.add_argument("--config", default="default")
    a = ap.parse_args()
    keys = {"epochs": a.epochs, "folds": a.folds, "models": a.models, "workers": 2, "device": "cpu"}
    cfg = load_config(a.config, keys)
    wd = Path(a.workdir)
    t0 = time.perf_counter()
    local = run_cv(cfg, Path(a.data), wd, "local", quiet=True)
    t_local = time.perf_counter() - t0

    from distributed import LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc:
        t_up = time.perf_counter() - t0
        t1 = time.perf_counter()
        with DaskUnits(lc.scheduler_address) as cl:
            dask = run_cv(cfg, Path(a.data), wd, "dask", quiet=True, cluster=cl)
        t_dask = time.perf_counter() - t1
    n = load_competition(a.data).n_train
    la, lb = load_run(local.run_dir, n), load_run(dask.run_dir, n)
    for m in sorted(la.oof):
        same_oof, same_test = np.array_equal(la.oof[m], lb.oof[m]), np.array_equal(la.test[m], lb.test[m])
        print(f"{m}: OOF array_equal {same_oof}, test array_equal {same_test}")
    print(
        f"local processes (2 x 1 thread): {t_local:.1f} s; LocalCluster start {t_up:.1f} s; "
        f"cv through it {t_dask:.1f} s; ratio {t_dask / t_local:.2f}"
    )


if __name__ == "__main__":  # the LocalCluster's worker processes re-import this file
    main()
