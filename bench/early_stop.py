"""Early stopping against a finished fixed-length run, on chosen units of its saved split (issue 15, part 4).

Trains the (model, fold) units asked for with the reference run's recipe and ``--set`` changes (e.g.
``early_stop=true``) through ``cv.train_unit`` (same split, same groups, one thread per process), into ``--out``
(resumable), then prints per unit the reference's and the new macro-F1, epochs and seconds. For a few folds of a
large run when a whole second cv run would take too long:

    python3 bench/early_stop.py --workdir /tmp/wsd --run default --models image --folds 0,1 \\
        --set early_stop=true --out /tmp/wsd_es
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from competition.config import load_config, parse_overrides  # noqa: E402
from competition.data.load import load_competition  # noqa: E402
from competition.store.runs import load_unit, read_run_config, unit_finished, unit_path  # noqa: E402
from competition.train.unit import train_unit  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="workdir of a finished cv run (its folds.csv is the split)")
    p.add_argument("--run", default="default")
    p.add_argument("--data", default=None, help="competition folder (default: the run's)")
    p.add_argument("--models", default="image")
    p.add_argument("--folds", default="0", help="comma-separated folds to train")
    p.add_argument("--set", action="append", default=[], help="config change, e.g. early_stop=true")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--out", required=True, help="folder for the new units (resumable)")
    args = p.parse_args()
    ref = Path(args.workdir) / args.run
    meta = read_run_config(ref)
    cfg = load_config(None, meta["config"] | parse_overrides(args.set))
    comp = load_competition(args.data or meta["data"])
    split = pd.read_csv(Path(args.workdir) / "folds.csv")
    fold_of, groups = split["fold"].to_numpy(), split["group"].to_numpy()
    out = Path(args.out)
    units = [(m, int(k)) for m in args.models.split(",") for k in args.folds.split(",")]
    todo = [(m, k) for m, k in units if not unit_finished(out, m, k)]
    t0 = time.perf_counter()
    if todo:
        from joblib import Parallel, delayed

        Parallel(n_jobs=args.workers)(
            delayed(train_unit)(comp, fold_of, cfg, m, k, out, "cpu", 1, None, groups) for m, k in todo
        )
    print(f"trained {len(todo)} units in {time.perf_counter() - t0:.0f} s ({args.workers} workers)")
    rows = []
    for m, k in units:
        a, b = load_unit(unit_path(ref, m, k)).result, load_unit(unit_path(out, m, k)).result
        rows.append(
            {"model": m, "fold": k, "ref_f1": a.macro_f1, "new_f1": b.macro_f1, "ref_epochs": a.epochs,
             "new_epochs": b.epochs, "ref_s": a.seconds, "new_s": b.seconds, "s_ratio": b.seconds / a.seconds}
        )  # fmt: skip
    print(pd.DataFrame(rows).round(4).to_string(index=False))


if __name__ == "__main__":
    main()
