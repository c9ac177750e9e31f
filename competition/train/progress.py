"""Progress: the per-epoch event a training unit emits, and the rich live display of a cv run's units."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from competition.store.runs import UnitResult
from competition.utils.console import console


@dataclass(frozen=True)
class EpochEvent:
    """One finished epoch of one (model, fold) unit: ``row`` is its history row (loss, val_macro_f1, phase...)."""

    model: str
    fold: int
    planned: int  # the epochs the unit may train (with early stopping, the most)
    row: dict[str, Any]
    seed: int = 0  # which seed of the fold (seed bagging)


class EventSink(Protocol):
    """Where a unit sends its epoch events: a queue between processes, a Dask topic, or the display itself."""

    def put(self, event: EpochEvent) -> None: ...


class UnitProgress(Protocol):
    """What an executor reports to: ``CVProgress`` on the console, ``NoProgress`` when quiet."""

    def epoch(self, event: EpochEvent) -> None: ...

    def unit_trained(self, result: UnitResult) -> None: ...


class NoProgress:
    """The quiet stand-in for ``CVProgress``."""

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def epoch(self, event: EpochEvent) -> None:
        pass

    def unit_trained(self, result: UnitResult) -> None:
        pass


class DirectSink:
    """The in-process event sink: hands each epoch event straight to the display."""

    def __init__(self, progress: UnitProgress):
        self.progress = progress

    def put(self, event: EpochEvent) -> None:
        self.progress.epoch(event)


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

    def epoch(self, event: EpochEvent) -> None:
        model, fold, epochs, row = event.model, event.fold, event.planned, event.row
        key, name = (model, fold, event.seed), _name(model, fold, event.seed)
        self.progress.advance(self.overall)
        if key in self.finished:  # a late event of a finished unit (parallel workers): no line for it again
            return
        if key not in self.units:
            self.units[key] = self.progress.add_task(f"  {name}", total=epochs)
        f1 = row.get("val_macro_f1")
        desc = f"  {name}" + (f"  val F1 {f1:.4f}" if f1 is not None else "")
        desc += f"  ({row['phase']})" if "phase" in row else ""  # early stopping: warmup, stable or decay
        self.progress.update(self.units[key], advance=1, description=desc)

    def unit_trained(self, result: UnitResult) -> None:
        model, fold = result.model, result.fold
        task = self.units.pop((model, fold, result.seed), None)
        if task is not None:
            self.progress.remove_task(task)
        self.finished.add((model, fold, result.seed))
        if model in self.planned and result.epochs < self.planned[model]:  # stopped early: fewer epochs to go
            self.total -= self.planned[model] - result.epochs
            self.progress.update(self.overall, total=self.total)
        self.progress.console.print(
            f"  [green]done[/] {_name(model, fold, result.seed, 8)}  macro-F1 {result.macro_f1:.4f}  "
            f"acc {result.accuracy:.4f}  {result.epochs} epochs  {result.seconds:.0f}s"
        )


def _name(model: str, fold: int, seed: int, width: int = 0) -> str:
    """A unit's name on the display: ``fusion fold 2`` (``fusion fold 2 seed 1`` for a further seed)."""
    return f"{model:<{width}} fold {fold}" + (f" seed {seed}" if seed else "")
