"""Console: the one rich console every command prints through (silenced by the Python API unless asked) and the
result tables and one-line formats the commands share (presentation only, no computation)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

# Logs and pipes get 120 columns rather than rich's 80, so the per-fold tables are never truncated.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


@contextlib.contextmanager
def verbosity(verbose: bool) -> Iterator[None]:
    """Print through ``console`` only when ``verbose`` (the Python API is silent unless asked)."""
    before = console.quiet
    console.quiet = not verbose
    try:
        yield
    finally:
        console.quiet = before


def fmt_value(v: Any) -> str:
    """A recipe value for a one-line listing: floats to 3 significant digits, lists comma-joined."""
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, list):
        return ",".join(map(str, v))
    return str(v)


def cv_table(per_fold: pd.DataFrame, oof: pd.DataFrame, title: str) -> Table:
    """Per-fold macro-F1 columns, then the out-of-fold macro-F1 / accuracy and the training time per model."""
    folds = sorted(per_fold["fold"].unique())
    table = Table(title=title)
    table.add_column("model")
    for k in folds:
        table.add_column(f"fold {k}", justify="right")
    for col in ("OOF F1", "OOF acc", "time s"):
        table.add_column(col, justify="right", style="bold" if col == "OOF F1" else None)
    for model, row in oof.iterrows():
        f = per_fold[per_fold["model"] == model].set_index("fold")
        cells = [f"{f.loc[k, 'macro_f1']:.4f}" if k in f.index else "-" for k in folds]
        table.add_row(
            str(model), *cells, f"{row['macro_f1']:.4f}", f"{row['accuracy']:.4f}", f"{f['seconds'].sum():.0f}"
        )
    return table


def duplicates_line(summary: dict[str, dict[str, int]]) -> str:
    parts = []
    for name, s in summary.items():
        parts.append(
            f"{name}: {s['rows']} rows, {s['distinct']} distinct, {s['rows_in_duplicate_sets']} in duplicate sets, "
            f"{s['test_rows_seen_in_train']} test rows seen in train"
        )
    return "duplicates - " + "; ".join(parts)
