"""Console: the rich live progress of a cv run and its result tables (presentation only, no computation)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from .runs import UnitResult

# Logs and pipes get 120 columns rather than rich's 80, so the per-fold tables are never truncated.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


class CVProgress:
    """One overall bar over every epoch of every (model, fold) unit, plus a line per running unit.

    ``planned`` ({model: epochs a unit may train}): a unit that ends sooner (early stopping counts its most
    epochs) takes its unused epochs off the overall bar's total when it finishes."""

    def __init__(self, total_epochs: int, planned: dict[str, int] | None = None):
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.overall = self.progress.add_task("[bold]all folds (epochs)", total=total_epochs)
        self.units: dict[tuple[str, int], int] = {}
        self.total, self.planned, self.finished = total_epochs, planned or {}, set()

    def __enter__(self) -> CVProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def epoch(self, model: str, fold: int, epochs: int, row: dict) -> None:
        key = (model, fold)
        self.progress.advance(self.overall)
        if key in self.finished:  # a late event of a finished unit (parallel workers): no line for it again
            return
        if key not in self.units:
            self.units[key] = self.progress.add_task(f"  {model} fold {fold}", total=epochs)
        f1 = row.get("val_macro_f1")
        desc = f"  {model} fold {fold}" + (f"  val F1 {f1:.4f}" if f1 is not None else "")
        desc += f"  ({row['phase']})" if "phase" in row else ""  # early stopping: warmup, stable or decay
        self.progress.update(self.units[key], advance=1, description=desc)

    def unit_trained(self, model: str, fold: int, result: UnitResult) -> None:
        task = self.units.pop((model, fold), None)
        if task is not None:
            self.progress.remove_task(task)
        self.finished.add((model, fold))
        if model in self.planned and result.epochs < self.planned[model]:  # stopped early: fewer epochs to go
            self.total -= self.planned[model] - result.epochs
            self.progress.update(self.overall, total=self.total)
        self.progress.console.print(
            f"  [green]done[/] {model:<8} fold {fold}  macro-F1 {result.macro_f1:.4f}  "
            f"acc {result.accuracy:.4f}  {result.epochs} epochs  {result.seconds:.0f}s"
        )


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
