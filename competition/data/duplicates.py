"""Duplicates: exact duplicate feature rows, grouped across modalities (the split keeps each group in one fold)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from competition.data.load import Competition


def duplicate_ids(x: np.ndarray) -> np.ndarray:
    """(N,) id of each row's distinct value: equal ids <=> byte-identical feature rows."""
    _, inverse = np.unique(np.ascontiguousarray(x), axis=0, return_inverse=True)
    return inverse.reshape(-1)


def duplicate_groups(*modalities: np.ndarray) -> np.ndarray:
    """(N,) group id: rows sharing an exact duplicate in any modality (transitively) share a group."""
    n = len(modalities[0])
    rows, cols = [], []
    for x in modalities:
        ids = duplicate_ids(x)
        first = np.full(ids.max() + 1, -1)
        first[ids[::-1]] = np.arange(n)[::-1]  # first row holding each distinct value
        rows.append(np.arange(n))
        cols.append(first[ids])  # edge: row -> first row with the same value
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def duplicate_summary(comp: Competition) -> dict[str, dict[str, int]]:
    """How many rows, distinct rows and duplicated rows each modality has, and the test rows seen in train."""
    out = {}
    for name, train, test in [("image", comp.image, comp.test_image), ("audio", comp.audio, comp.test_audio)]:
        ids = duplicate_ids(np.concatenate([train, test]))
        tr, te = ids[: len(train)], ids[len(train) :]
        counts = np.bincount(tr)
        out[name] = {
            "rows": len(train),
            "distinct": int((counts > 0).sum()),
            "rows_in_duplicate_sets": int(counts[tr].__gt__(1).sum()),
            "test_rows_seen_in_train": int(np.isin(te, tr).sum()),
        }
    return out
