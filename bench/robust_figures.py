"""Side-by-side figures of finished cv runs on one data folder: every model's and every blend's out-of-fold
macro-F1 (the numbers ``run.py submit`` prints), and, on a copy made by ``bench/degrade.py --holdout``, the
macro-F1 on its labelled, noisier test rows, overall and by the test rows' audio SNR.

    python3 bench/robust_figures.py --data /tmp/wsd_degraded --workdir /tmp/robust_degraded \\
        --run reference-fast --run robust

Blends are fit as ``submit`` fits them (equal weights, and greedy weights scored nested) on the out-of-fold
rows only; the held-out rows are never used to fit anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from competition.data.load import load_competition
from competition.ensemble.blend import agreement_shift, blend_models, combine, fold_average, odd_ones_out, to_space
from competition.metrics import macro_f1
from competition.store.loading import load_runs


def run_scores(run, comp, holdout: pd.DataFrame | None, keep_shifted: bool) -> tuple[dict, dict, list[str], str]:
    """{model or blend: {"oof": F1, "holdout": F1}}, their predicted labels {"oof": ..., "holdout": ...}, and
    the models left out of the blends as ``submit`` leaves them out (unless ``keep_shifted``), and the blend
    ``submit`` writes.

    A fitted blend's out-of-fold labels are its nested ones (each fold blended with weights fit without it).
    """
    left_out = [] if keep_shifted else odd_ones_out(agreement_shift(run.oof, run.test))
    kept = [m for m in run.oof if m not in left_out]
    singles = blend_models(run.oof, run.test, comp.y, run.fold_of, blends=("equal",)).singles
    result = blend_models({m: run.oof[m] for m in kept}, {m: run.test[m] for m in kept}, comp.y, run.fold_of)
    scores, preds = {}, {"oof": {}, "holdout": {}}
    for c in singles + result.blends:
        name = c.name if c.space == "-" else f"{c.name} blend ({c.space})"
        space = "logits" if c.space == "-" else c.space
        models = [c.name] if c.space == "-" else result.models
        stacked = np.stack([to_space(run.oof[m], space) for m in models])
        if c.space == "-":
            oof = stacked[0]
        elif c.fold_weights is None:
            oof = combine(stacked, c.weights, space)
        else:
            oof = np.zeros(stacked.shape[1:])
            for k, w in zip(np.unique(run.fold_of), c.fold_weights, strict=True):
                oof[run.fold_of == k] = combine(stacked[:, run.fold_of == k], w, space)
        preds["oof"][name] = oof.argmax(1)
        scores[name] = {"oof": macro_f1(comp.y, preds["oof"][name])}
        if holdout is not None:
            test = np.stack([fold_average(run.test[m], space) for m in models])
            weights = np.ones(1) if c.space == "-" else c.weights
            preds["holdout"][name] = combine(test, weights, space).argmax(1)
            scores[name]["holdout"] = macro_f1(holdout["label"].to_numpy(), preds["holdout"][name])
    chosen = f"{result.chosen.name} blend ({result.chosen.space})"
    return scores, preds, left_out, chosen


def paired(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> str:
    """Rows only A / only B gets right, and the exact McNemar test's two-sided p-value of that split."""
    only_a, only_b = int(((a == y) & (b != y)).sum()), int(((a != y) & (b == y)).sum())
    p = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return f"{only_a} / {only_b} (p = {p:.2g})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the competition folder the runs were made on")
    p.add_argument("--workdir", required=True)
    p.add_argument("--run", action="append", required=True, help="run name (repeat: one column each)")
    p.add_argument("--keep-shifted", action="store_true", help="blend every model, as `submit --keep-shifted`")
    args = p.parse_args()
    data = Path(args.data)
    comp = load_competition(data)
    holdout = None
    if (data / "holdout_labels.csv").exists():
        holdout = pd.read_csv(data / "holdout_labels.csv")
        holdout = holdout.set_index("row_id").loc[comp.sample_submission["row_id"]].reset_index()
    table, preds = {}, {}
    for name in args.run:
        (run,) = load_runs(Path(args.workdir), [name], comp, None)
        table[name], preds[name], left_out, chosen = run_scores(run, comp, holdout, args.keep_shifted)
        print(f"{name}: `submit` writes the {chosen}")
        if left_out:
            print(f"{name}: blends leave out {', '.join(left_out)} (test predictions part from every other model's)")

    rows = list(dict.fromkeys(r for name in args.run for r in table[name]))
    cols = [(name, "oof") for name in args.run]
    if holdout is not None:
        cols += [(name, "holdout") for name in args.run]
    print("| model / blend | " + " | ".join(f"{n} {'OOF' if k == 'oof' else 'held-out'}" for n, k in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for r in rows:
        cells = [f"{table[n][r][k]:.4f}" if r in table[n] else "" for n, k in cols]
        print(f"| {r} | " + " | ".join(cells) + " |")
    print("\nOOF of a fitted blend is its nested score (weights fit without the scored fold).")
    if len(args.run) >= 2:
        a, b = args.run[:2]
        print(f"\nrows only {a} / only {b} gets right, exact McNemar p:\n")
        parts = ["oof"] + (["holdout"] if holdout is not None else [])
        truth = {"oof": comp.y, "holdout": None if holdout is None else holdout["label"].to_numpy()}
        print("| model / blend | " + " | ".join("OOF" if k == "oof" else "held-out" for k in parts) + " |")
        print("|---" * (len(parts) + 1) + "|")
        for r in rows:
            if r in table[a] and r in table[b]:
                cells = [paired(truth[k], preds[a][k][r], preds[b][k][r]) for k in parts]
                print(f"| {r} | " + " | ".join(cells) + " |")

    # The bar: no fusion model or blend below its own run's best single modality.
    parts = ["oof"] + (["holdout"] if holdout is not None else [])
    truth = {"oof": comp.y, "holdout": None if holdout is None else holdout["label"].to_numpy()}
    print("\neach fusion model and blend against its run's best single modality (delta; rows only it / only the")
    print("single modality gets right, exact McNemar p):\n")
    print("| run | model / blend | " + " | ".join("OOF" if k == "oof" else "held-out" for k in parts) + " |")
    print("|---" * (len(parts) + 2) + "|")
    for name in args.run:
        singles = [m for m in ("image", "audio") if m in table[name]]
        if not singles:
            continue
        for r in table[name]:
            if r in singles:
                continue
            cells = []
            for k in parts:
                best = max(singles, key=lambda m: table[name][m][k])
                delta = table[name][r][k] - table[name][best][k]
                cells.append(f"{delta:+.4f} vs {best}, {paired(truth[k], preds[name][k][r], preds[name][k][best])}")
            print(f"| {name} | {r} | " + " | ".join(cells) + " |")

    rows_file = data / "degrade_rows.csv"
    if holdout is not None and rows_file.exists():
        degr = pd.read_csv(rows_file)
        snr = degr[degr["part"] == "test"].set_index("row_id").loc[holdout["row_id"], "snr_db"].to_numpy()
        y = holdout["label"].to_numpy()
        levels = sorted(np.unique(snr))
        print("\nheld-out accuracy by the test rows' audio SNR (dB):\n")
        print("| run | model / blend | " + " | ".join(f"{s:g} dB ({(snr == s).sum()} rows)" for s in levels) + " |")
        print("|---" * (len(levels) + 2) + "|")
        for name in args.run:
            for r, pred in preds[name]["holdout"].items():
                cells = [f"{(pred[snr == s] == y[snr == s]).mean():.3f}" for s in levels]
                print(f"| {name} | {r} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
