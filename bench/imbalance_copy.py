"""Imbalanced copy of a labelled testbed: its training rows and its held-out test rows subsampled to uneven class
counts, each side in its own random order of the digits, so the training and test class proportions differ.

Made on a new-speaker testbed (``bench/speaker_testbed.py``), the copy has all three shifts at once: new speakers,
noisier test rows, and label shift. The digit ranked r of 9 in a side's order keeps
``floor + (1 - floor) * r / 9`` of that side's rows of the digit (``--floor 0.2``: from a fifth to all of them).

    python3 bench/imbalance_copy.py --data /tmp/tb0 --out /tmp/tb0ls --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd


def keep_rows(labels: np.ndarray, floor: float, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of the rows kept: of the digit ranked r in ``order``, floor + (1 - floor) * r / 9 of its
    rows, drawn without replacement."""
    keep = []
    for rank, digit in enumerate(order):
        rows = np.flatnonzero(labels == digit)
        n = max(1, round(len(rows) * (floor + (1 - floor) * rank / 9)))
        keep.append(rng.choice(rows, size=min(n, len(rows)), replace=False))
    return np.sort(np.concatenate(keep))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="a labelled testbed (with holdout_labels.csv)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--floor", type=float, default=0.2, help="share kept of each side's rarest digit")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    y = pd.read_csv(args.data / "y_train.csv")
    held = pd.read_csv(args.data / "holdout_labels.csv")
    sample = pd.read_csv(args.data / "sample_submission.csv")
    train = keep_rows(y["label"].to_numpy(), args.floor, rng.permutation(10), rng)
    test = keep_rows(held.iloc[:, 1].to_numpy(), args.floor, rng.permutation(10), rng)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("x_train_wr.npy", train), ("x_train_sp.npy", train), ("x_test_wr.npy", test),
                       ("x_test_sp.npy", test)):  # fmt: skip
        np.save(args.out / name, np.load(args.data / name)[rows])
    y.iloc[train].reset_index(drop=True).assign(row_id=np.arange(len(train))).to_csv(
        args.out / "y_train.csv", index=False
    )
    sample.iloc[test].to_csv(args.out / "sample_submission.csv", index=False)
    held.iloc[test].to_csv(args.out / "holdout_labels.csv", index=False)
    counts = (np.bincount(y["label"].to_numpy()[train], minlength=10), np.bincount(held.iloc[test, 1], minlength=10))
    print(f"{args.out}: {len(train)} training rows {counts[0].tolist()}, {len(test)} test rows {counts[1].tolist()}")


if __name__ == "__main__":
    main()
