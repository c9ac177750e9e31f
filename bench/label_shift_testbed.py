"""Label-shift testbeds: a labelled copy of a competition whose training and test rows have different class
proportions, to measure ``submit``'s label-shift correction and macro-F1 offsets on held-out labels.

The source's training rows are split into a new training set and a held-out test set (its labels written to
``holdout_labels.csv``); the source's own test rows are dropped. Use a copy without duplicate rows
(``bench/unique_subset.py``) so that no held-out row repeats a training row.

- ``--profile train``: imbalanced training rows (per class from ``--few`` to ``--many`` rows, a seeded order of
  the digits), a balanced test (``--test-per-class`` rows of each digit).
- ``--profile test``: balanced training rows (``--train-per-class``), an imbalanced test (``--few-test`` to
  ``--many-test`` rows per digit, another seeded order).

    python3 bench/unique_subset.py --out /tmp/wsd_unique
    python3 bench/label_shift_testbed.py --data /tmp/wsd_unique --profile train --seed 0 --out /tmp/ls_train0
    python3 run.py cv --data /tmp/ls_train0 --workdir /tmp/ls_train0_w
    python3 run.py submit --data /tmp/ls_train0 --workdir /tmp/ls_train0_w --out /tmp/ls_train0_s
    python3 run.py score /tmp/ls_train0_s/<name>.csv /tmp/ls_train0/holdout_labels.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

N_CLASSES = 10


def counts(low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """(10,) rows per digit, evenly from ``low`` to ``high``, in a seeded order of the digits."""
    return np.round(np.linspace(low, high, N_CLASSES)).astype(int)[rng.permutation(N_CLASSES)]


def split(y: np.ndarray, train_n: np.ndarray, test_n: np.ndarray, rng: np.random.Generator):
    """Row indices of the new training and test sets: per digit, test rows first, then training rows."""
    train, test = [], []
    for k in range(N_CLASSES):
        rows = rng.permutation(np.flatnonzero(y == k))
        if len(rows) < train_n[k] + test_n[k]:
            raise SystemExit(f"digit {k}: {len(rows)} rows, {train_n[k] + test_n[k]} asked; lower the counts")
        test.append(rows[: test_n[k]])
        train.append(rows[test_n[k] : test_n[k] + train_n[k]])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="source competition folder (no duplicate rows)")
    p.add_argument("--out", required=True)
    p.add_argument("--profile", choices=["train", "test"], required=True, help="which side is imbalanced")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--few", type=int, default=18)
    p.add_argument("--many", type=int, default=180)
    p.add_argument("--test-per-class", type=int, default=60)
    p.add_argument("--train-per-class", type=int, default=160)
    p.add_argument("--few-test", type=int, default=10)
    p.add_argument("--many-test", type=int, default=100)
    a = p.parse_args()
    src, out = Path(a.data), Path(a.out)
    rng = np.random.default_rng(a.seed)
    labels = pd.read_csv(src / "y_train.csv")
    y = labels["label"].to_numpy()
    if a.profile == "train":
        train_n, test_n = counts(a.few, a.many, rng), np.full(N_CLASSES, a.test_per_class)
    else:
        train_n, test_n = np.full(N_CLASSES, a.train_per_class), counts(a.few_test, a.many_test, rng)
    train, test = split(y, train_n, test_n, rng)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("wr", "sp"):
        x = np.load(src / f"x_train_{name}.npy")
        np.save(out / f"x_train_{name}.npy", x[train])
        np.save(out / f"x_test_{name}.npy", x[test])
    pd.DataFrame({"row_id": np.arange(len(train)), "label": y[train]}).to_csv(out / "y_train.csv", index=False)
    ids = np.arange(len(test))
    pd.DataFrame({"row_id": ids, "label": 0}).to_csv(out / "sample_submission.csv", index=False)
    pd.DataFrame({"row_id": ids, "label": y[test]}).to_csv(out / "holdout_labels.csv", index=False)
    print(f"{out}: {len(train)} training rows {train_n.tolist()}, {len(test)} held-out rows {test_n.tolist()}")


if __name__ == "__main__":
    main()
