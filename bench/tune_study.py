"""Benchmark of ``run.py tune``: the same seeded study run with pruning and without, then the tuned config's
K-fold out-of-fold macro-F1 against the default config's, on the same saved folds, in the same run.

Prints, per study, the wall time, the trials complete and pruned and the best mean fold macro-F1; then the
OOF macro-F1 of ``run_cv`` with the tuned config (the pruned study's best) and with the default config, both at
the study's epochs. Writes the figures to ``bench/results/tune_study-<full|quick>.json``.

    python bench/tune_study.py            # the full figures: shipped data, 5 folds, 20 trials (hours on 2 cores)
    python bench/tune_study.py --quick    # minutes: 2400 training rows, 3 folds, 2 epochs, 20 trials
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from competition.config import load_config
from competition.data.load import load_competition, write_subset
from competition.splits.folds import load_or_make_folds
from competition.store.atomic import write_json
from competition.train.cv import run_cv
from competition.tuning.results import write_best_config
from competition.tuning.search_space import SPACE_PATH, load_space
from competition.tuning.study import Tuning
from competition.tuning.trials import run_tune
from competition.utils.paths import RECIPES_DIR, default_data

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(default_data()))
    p.add_argument("--quick", action="store_true", help="2400 rows (500 test), 3 folds, 2 epochs")
    p.add_argument("--model", default="fusion")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--folds", type=int, default=None, help="K (default 5, quick 3)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per fold (default: the config's, quick 2)")
    p.add_argument("--rows", type=int, default=None, help="first N training rows (default all, quick 2400)")
    p.add_argument("--workers", type=int, default=1, help="tune worker processes (1: a reproducible study)")
    p.add_argument("--workdir", default=None, help="keep the studies and runs here (default: a temporary folder)")
    args = p.parse_args()

    mode = "quick" if args.quick else "full"
    folds = args.folds or (3 if args.quick else 5)
    rows = args.rows or (2400 if args.quick else None)
    overrides = {"folds": folds, "models": [args.model]}
    if args.epochs or args.quick:
        overrides["epochs"] = args.epochs or 2
    base = load_config(RECIPES_DIR / "default.toml", overrides)
    space = load_space(SPACE_PATH, args.model, base)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        data = Path(args.data)
        if rows:
            data = write_subset(workdir / "data", rows, 500, data)
        figures = {"mode": mode, "model": args.model, "trials": args.trials, "folds": folds, "epochs": base.epochs}
        figures |= {"train_rows": rows or "all", "workers": args.workers, "studies": {}}
        comp = load_competition(data)  # make the saved split first, so neither study's time includes it
        load_or_make_folds(comp, workdir, base.folds, base.seed, base.group_duplicates, base.split)
        tuned = None
        for prune in (True, False):
            name = f"{args.model}-{'pruned' if prune else 'unpruned'}"
            t = Tuning(
                data_dir=data, workdir=workdir, cfg=base, model=args.model, study=name, storage=None,
                search_space=space, trial_folds=folds, trials=args.trials, prune=prune, processes=args.workers,
            )  # fmt: skip
            start = time.perf_counter()
            study = run_tune(t)
            wall = time.perf_counter() - start
            states = [tr.state.name for tr in study.trials]
            figures["studies"][name] = {
                "wall_s": round(wall, 1),
                "complete": states.count("COMPLETE"),
                "pruned": states.count("PRUNED"),
                "folds_trained": sum(len(tr.user_attrs.get("fold_macro_f1", [])) for tr in study.trials),
                "best_mean_fold_macro_f1": round(study.best_value, 5),
                "best_trial": study.best_trial.number,
                "best_params": study.best_params,
            }
            if prune:
                tuned = write_best_config(study, t, workdir / "tuned.toml")

        # The tuned and the default recipe over every fold of the same split, one after the other.
        oof = {}
        for run, cfg in (("tuned", tuned), ("default", base)):
            result = run_cv(cfg, data, workdir, run, quiet=True)
            oof[run] = round(float(result.oof.loc[args.model, "macro_f1"]), 5)
        figures["oof_macro_f1"] = oof

    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"tune_study-{mode}.json", figures)
    pruned, unpruned = figures["studies"].values()
    size = f"{args.trials} trials x {folds} folds, {base.epochs} epochs, {rows or 'all'} training rows"
    print(f"\n{mode} benchmark of {args.model}: {size}")
    print(f"{'study':<12} {'wall min':>9} {'complete':>9} {'pruned':>7} {'folds trained':>14} {'best F1':>8}")
    for label, s in (("pruning", pruned), ("no pruning", unpruned)):
        counts = f"{s['complete']:9d} {s['pruned']:7d} {s['folds_trained']:14d}"
        print(f"{label:<12} {s['wall_s'] / 60:9.1f} {counts} {s['best_mean_fold_macro_f1']:8.4f}")
    print(f"time saved by pruning: {1 - pruned['wall_s'] / unpruned['wall_s']:.0%}")
    print(f"{folds}-fold OOF macro-F1: tuned {oof['tuned']:.4f}  default {oof['default']:.4f}")
    print(f"written: {RESULTS / f'tune_study-{mode}.json'}")


if __name__ == "__main__":
    main()
