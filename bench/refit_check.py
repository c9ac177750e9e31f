"""Do full-data refits beat the fold models' average on unseen rows? Measured on one held-out fold of a cv run.

``submit`` predicts the test rows with the average of the K fold models, each trained on (K-1)/K of the
training rows; ``submit --full`` with S refits trained on all of them. The same choice, one level down,
can be scored: hold out fold F of the run's saved split; its training rows are the other K-1 folds.

- ``fold model``: the run's own fold-F model (all K-1 folds, one seed), already trained;
- ``fold average``: K-1 inner models, each trained on K-2 of those folds (seeds as cv gives folds), their
  predictions on fold F averaged as log-probabilities (what submit does for the test rows);
- ``refits``: S models trained on all K-1 folds with other seeds, averaged (what ``--full`` does);
- ``refits + fold model``: the S refits and the run's fold model together (S+1 seeds).

Every unit trains through the cv runner's ``train_unit`` (the run's recipe and epochs, one thread per process)
and is kept under ``--out``, so a rerun resumes. Prints macro-F1, accuracy and log-loss on fold F per model and
for the equal (log-probability) blend of the models.

    python3 bench/refit_check.py --workdir /tmp/i12_clean --run default --models fusion --out /tmp/refit_check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import log_softmax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from competition.config import load_config  # noqa: E402
from competition.data.load import load_competition  # noqa: E402
from competition.metrics import accuracy, macro_f1  # noqa: E402
from competition.store.runs import read_run_config, unit_finished, unit_path  # noqa: E402
from competition.train.unit import train_unit  # noqa: E402

INNER, REFIT = 100, 200  # pseudo-fold ids of the units: distinct seeds from the run's own folds


def units(fold_of: np.ndarray, held: int, seeds: int) -> list[tuple[str, int, np.ndarray]]:
    """(kind, pseudo fold, split) per unit: train on split != pseudo fold, predict split == pseudo fold."""
    out = []
    for j in np.unique(fold_of):
        if j == held:
            continue
        split = fold_of.copy()
        split[(fold_of == j) | (fold_of == held)] = INNER + j  # train on K-2 folds, predict fold j and F
        out.append(("fold average", INNER + int(j), split))
    for s in range(seeds):
        split = fold_of.copy()
        split[fold_of == held] = REFIT + s  # train on all K-1 folds
        out.append(("refits", REFIT + s, split))
    return out


def held_logits(path: Path, rows: np.ndarray) -> np.ndarray:
    """A unit's out-of-fold logits on ``rows`` (in that order)."""
    with np.load(path) as z:
        pos = pd.Series(np.arange(len(z["val_idx"])), index=z["val_idx"])
        return z["oof_logits"][pos.loc[rows].to_numpy()]


def scores(y: np.ndarray, logp: np.ndarray) -> dict[str, float]:
    logp = log_softmax(logp, axis=1)
    return {
        "macro_f1": macro_f1(y, logp.argmax(1)),
        "accuracy": accuracy(y, logp.argmax(1)),
        "log_loss": float(-logp[np.arange(len(y)), y].mean()),
        "errors": int((logp.argmax(1) != y).sum()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="workdir of a finished cv run")
    p.add_argument("--run", default="default")
    p.add_argument("--data", default=None, help="competition folder (default: the run's)")
    p.add_argument("--models", default="fusion,image,audio")
    p.add_argument("--fold", type=int, default=0, help="the held-out fold F")
    p.add_argument("--seeds", type=int, default=3, help="refits S")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", required=True, help="folder for the units (resumable)")
    args = p.parse_args()
    run_dir = Path(args.workdir) / args.run
    meta = read_run_config(run_dir)
    cfg = load_config(None, meta["config"])
    comp = load_competition(args.data or meta["data"])
    fold_of = pd.read_csv(Path(args.workdir) / "folds.csv")["fold"].to_numpy()
    rows = np.flatnonzero(fold_of == args.fold)
    y = comp.y[rows]
    models = args.models.split(",")
    out = Path(args.out)
    todo = [
        (m, pseudo, split)
        for m in models
        for _, pseudo, split in units(fold_of, args.fold, args.seeds)
        if not unit_finished(out, m, pseudo)
    ]
    t0 = time.perf_counter()
    if todo:
        from joblib import Parallel, delayed

        Parallel(n_jobs=args.workers)(
            delayed(train_unit)(comp, split, cfg, m, pseudo, out, "cpu", 1) for m, pseudo, split in todo
        )
    print(f"trained {len(todo)} units in {time.perf_counter() - t0:.0f} s ({args.workers} workers)")
    table, blend = [], {}
    for m in models:
        own = held_logits(unit_path(run_dir, m, args.fold), rows)
        kinds: dict[str, list[np.ndarray]] = {"fold model": [own]}
        for kind, pseudo, _ in units(fold_of, args.fold, args.seeds):
            kinds.setdefault(kind, []).append(held_logits(unit_path(out, m, pseudo), rows))
        if "refits" in kinds:
            kinds["refits + fold model"] = kinds["refits"] + [own]
        for kind, logits in kinds.items():
            avg = log_softmax(np.stack(logits), axis=2).mean(0)
            blend.setdefault(kind, []).append(avg)
            table.append({"model": m, "predictor": kind, "n_models": len(logits), **scores(y, avg)})
    for kind, per_model in blend.items():
        avg = log_softmax(np.stack(per_model), axis=2).mean(0)
        table.append({"model": "equal blend", "predictor": kind, "n_models": len(per_model), **scores(y, avg)})
    pd.set_option("display.width", 160)
    print(f"held-out fold {args.fold}: {len(rows)} rows of {comp.n_train}; units trained on the other folds")
    print(pd.DataFrame(table).to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
