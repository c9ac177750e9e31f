"""Folds: the one K-fold split per workspace, saved as ``folds.csv`` (its kind, ``competition/splits.py``, in
``folds.json``) and reused by every model, run and tuning trial so that out-of-fold predictions are comparable
and blendable.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from competition.data.load import Competition
from competition.splits.adversarial import load_or_run
from competition.splits.kinds import choose_split, cluster_folds, split_groups
from competition.store.atomic import write_json, write_text
from competition.store.readers import read_folds
from competition.utils.console import console
from competition.utils.errors import UserError


def make_folds(y: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """(N,) fold index 0..k-1 of each row; rows of one group always land in the same fold."""
    fold = np.full(len(y), -1, dtype=np.int64)
    n_min = np.bincount(y).min() if groups is None else None
    if groups is None:
        if n_min < k:
            raise UserError(f"y_train.csv: a class has only {n_min} rows, fewer than --folds {k}; fix: use fewer folds")
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y)
    else:
        if len(np.unique(groups)) < k:
            raise UserError(
                f"data: only {len(np.unique(groups))} distinct groups of duplicate rows, fewer than --folds {k}; "
                f"fix: pass --folds {max(2, len(np.unique(groups)))} or fewer, or --set split=stratified when "
                "duplicate rows need not share a fold"
            )
        counts = np.bincount(y)[np.unique(y)]  # rows per present class
        if counts.max() < k:
            raise UserError(
                f"y_train.csv: no class has --folds {k} rows (the largest has {counts.max()}); "
                "fix: use fewer folds or more rows"
            )
        if counts.min() < k:  # said once here, in place of scikit-learn's "least populated class" warning
            console.print(
                f"[yellow]warning:[/] y_train.csv: a class has only {counts.min()} rows, fewer than --folds {k}: "
                "some validation folds hold none of it"
            )
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(y)), y, groups)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for i, (_, val_idx) in enumerate(splits):
            fold[val_idx] = i
    return fold


def check_every_class_trains(y: np.ndarray, fold: np.ndarray, path: Path) -> None:
    """Every class of the data has training rows in every fold: a fold model that never saw a class would score
    its validation rows as if the class did not exist, silently."""
    classes = np.unique(y)
    for k in np.unique(fold):
        missing = np.setdiff1d(classes, np.unique(y[fold != k]))
        if len(missing):
            raise UserError(
                f"{path}: fold {k}'s training rows hold no row of class(es) {missing.tolist()} (all of them are in "
                f"fold {k}); fix: use fewer --folds, or --set split=grouped (a class held by one speaker-like "
                "cluster cannot be validated by holding the cluster out)"
            )


def load_or_make_folds(
    comp: Competition, workdir: Path, k: int, seed: int, grouped: bool, split: str = "auto"
) -> pd.DataFrame:
    """Return the workspace's saved split, making it on first use; a mismatch is a UserError, never a resplit.

    ``split`` is a kind of ``competition/splits.py`` (``auto`` asks adversarial validation, cached in the
    workdir); ``grouped`` is the old ``group_duplicates`` key. The frame's ``attrs`` hold the kind and why.
    """
    path, meta_path = workdir / "folds.csv", workdir / "folds.json"
    adversarial = load_or_run(comp, workdir) if split == "auto" and grouped else None
    kind, why = choose_split(split, grouped, adversarial)
    meta = {"data": str(comp.root), "data_fingerprint": comp.fingerprint, "folds": k, "seed": seed}
    meta |= {"grouped": kind != "stratified", "split": kind}
    if path.exists():
        df, saved = read_folds(workdir)
        saved.setdefault("split", "grouped" if saved.get("grouped") else "stratified")  # saved before split kinds
        for key in ("data_fingerprint", "folds", "split"):  # the seed only matters when making it
            if saved.get(key) != meta[key]:
                raise UserError(
                    f"{path}: saved split has {key}={saved.get(key)!r} but this run asks for {meta[key]!r}; "
                    f"fix: pass --workdir DIR for a separate workspace, or delete {path} to resplit"
                )
        if len(df) != comp.n_train or not (df["row_id"].to_numpy() == comp.row_ids).all():
            raise UserError(f"{path}: rows do not match the data's y_train.csv; fix: delete {path} to resplit")
        if saved.get("seed") != seed:  # kept: every run of a workdir shares one split (runs are blended on it)
            console.print(
                f"[yellow]warning:[/] {path}: the saved split was made with seed {saved.get('seed')}, not --seed "
                f"{seed}; it is kept (--seed {seed} seeds the models only); fix: pass --workdir DIR for a split "
                f"of seed {seed}"
            )
        check_every_class_trains(comp.y, df["fold"].to_numpy(), path)
        df.attrs |= {"split": kind, "why": why}
        return df
    groups = split_groups(comp, kind, k)
    fold = cluster_folds(groups, k, seed) if kind == "cluster" else make_folds(comp.y, k, seed, groups)
    check_every_class_trains(comp.y, fold, path)
    groups = np.arange(comp.n_train) if groups is None else groups
    df = pd.DataFrame({"row_id": comp.row_ids, "label": comp.y, "group": groups, "fold": fold})
    write_text(path, df.to_csv(index=False))
    write_json(meta_path, meta)
    df.attrs |= {"split": kind, "why": why}
    return df
