"""Write a copy of a competition folder with no duplicate rows: the first row of each duplicate group (training
rows and test rows grouped together, as ``submit --consensus`` groups them), so consensus has nothing to pool.
Same six files, layout and dtypes; pass the result to ``bench/degrade.py --data`` for a degraded copy.

    python3 bench/unique_subset.py --out /tmp/wsd_unique
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from competition.utils.paths import default_data  # noqa: E402


def first_of_groups(groups: np.ndarray) -> np.ndarray:
    """Sorted row indices of the first row of every group."""
    return np.sort(np.unique(groups, return_index=True)[1])


def main() -> None:
    from competition.ensemble.consensus import joint_groups

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(default_data()))
    p.add_argument("--out", required=True)
    args = p.parse_args()
    src, dest = Path(args.data), Path(args.out)
    arrays = {n: np.load(src / f"{n}.npy") for n in ("x_train_wr", "x_train_sp", "x_test_wr", "x_test_sp")}
    flat = {n: a.reshape(len(a), -1) for n, a in arrays.items()}
    g = joint_groups([flat["x_train_wr"], flat["x_train_sp"]], [flat["x_test_wr"], flat["x_test_sp"]])
    keep_train = first_of_groups(g.train)
    test_new = ~np.isin(g.test, g.train)  # a test row repeating a training row would still be a duplicate
    keep_test = np.flatnonzero(test_new)[first_of_groups(g.test[test_new])]
    dest.mkdir(parents=True, exist_ok=True)
    for n, a in arrays.items():
        np.save(dest / f"{n}.npy", a[keep_train if "train" in n else keep_test])
    pd.read_csv(src / "y_train.csv").iloc[keep_train].to_csv(dest / "y_train.csv", index=False)
    pd.read_csv(src / "sample_submission.csv").iloc[keep_test].to_csv(dest / "sample_submission.csv", index=False)
    print(f"{dest}: {len(keep_train)} of {len(g.train)} training rows, {len(keep_test)} of {len(g.test)} test rows")


if __name__ == "__main__":
    main()
