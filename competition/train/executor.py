"""Executor: how a cv run trains its claimed units: one by one in this process, or in parallel local processes
(joblib's loky), each single-threaded on CPU, the units of a model batched into one task where ``batch_units``
says so; the Dask executor (``dask.py``) follows the same protocol (unit by unit)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from competition.config import Config
from competition.store.runs import UnitResult
from competition.train.batched import batches, train_group
from competition.train.progress import CVProgress, DirectSink, EpochEvent, EventSink, NoProgress
from competition.train.unit import CVJob, planned_epochs, train_unit

Units = list[tuple[str, int, int]]  # [(model, fold, seed)]: seed > 0 only with seed bagging


class Executor(Protocol):
    """Trains ``todo`` units of ``job`` and returns when each has been written (or raises)."""

    def execute(self, job: CVJob, todo: Units, quiet: bool) -> None: ...


def plan_workers(cfg: Config, device: str, n_units: int) -> tuple[int, int]:
    """(processes, torch threads each). On CPU every unit trains single-threaded, so its numbers do not
    depend on --workers (a different thread count changes float summation order), and one process per
    core trains ~1.45x faster than one process using every core (bench/cv_speed.py). On a GPU, --workers N
    unit processes share the one device (default 1: not yet measured on a GPU)."""
    if device == "cuda":
        return max(1, min(cfg.workers or 1, n_units)), 1
    workers = cfg.workers or os.cpu_count() or 1
    return max(1, min(workers, n_units)), 1


def plan_tasks(cfg: Config, device: str, todo: Units) -> list[tuple[bool, Units]]:
    """The tasks that train ``todo``: (True, the units of one model) for a model whose units train batched, else
    (False, [one unit]); in the order of ``todo`` (a batch where its model's first unit was)."""
    tasks: list[tuple[bool, Units]] = []
    groups: dict[str, Units] = {}
    batched = {m: batches(cfg, m, device) for m in dict.fromkeys(u[0] for u in todo)}  # once per model
    for unit in todo:
        if not batched[unit[0]]:
            tasks.append((False, [unit]))
        elif unit[0] in groups:
            groups[unit[0]].append(unit)
        else:
            groups[unit[0]] = [unit]
            tasks.append((True, groups[unit[0]]))
    return tasks


def train_task(
    job: CVJob, batched: bool, units: Units, threads: int, events: EventSink | None = None
) -> list[UnitResult]:
    """Train one task of ``plan_tasks`` and write its units' files; returns their results."""
    if batched:
        return train_group(job, units[0][0], [(k, s) for _, k, s in units], threads, events)
    return [train_unit(job, m, k, threads, events, s) for m, k, s in units]


class LocalExecutor:
    """Trains units on this machine: in this process when one worker is planned, else in loky processes."""

    def __str__(self) -> str:
        return "this machine"

    def execute(self, job: CVJob, todo: Units, quiet: bool) -> None:
        cfg = job.cfg
        tasks = plan_tasks(cfg, job.device, todo)
        workers, threads = plan_workers(cfg, job.device, len(tasks))
        planned = {m: planned_epochs(cfg, m) for m in cfg.models}
        with CVProgress(sum(planned[u[0]] for u in todo), planned) if not quiet else NoProgress() as progress:
            if workers == 1:
                for batched, units in tasks:
                    for result in train_task(job, batched, units, threads, DirectSink(progress)):
                        progress.unit_trained(result)
                return
            _parallel(job, tasks, workers, threads, progress)


def _parallel(job: CVJob, tasks: list[tuple[bool, Units]], workers: int, threads: int, progress) -> None:
    from multiprocessing.managers import SyncManager

    from joblib import delayed, parallel_config

    # Ctrl-C reaches the whole process group: only this process acts on it. The helper processes ignore
    # it, and joblib stops the workers (loky kills their process trees with psutil).
    manager = SyncManager()
    manager.start(signal.signal, (signal.SIGINT, signal.SIG_IGN))
    loky = parallel_config("loky", initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
    with manager, loky, _stop_helpers_on_sigint():
        events = manager.Queue()
        stop = threading.Event()

        def drain() -> None:  # forward the workers' per-epoch events to the live display
            while not stop.is_set() or not events.empty():
                try:
                    event: EpochEvent = events.get(timeout=0.1)
                except queue.Empty:
                    continue
                except (EOFError, OSError, BrokenPipeError):
                    return
                progress.epoch(event)

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        try:
            calls = (delayed(train_task)(job, batched, units, threads, events) for batched, units in tasks)
            with unordered(calls, workers) as results:
                for task_results in results:
                    for result in task_results:
                        progress.unit_trained(result)
        finally:
            stop.set()
            drainer.join(timeout=2)


@contextlib.contextmanager
def unordered(calls: Iterable[Any], workers: int) -> Iterator[Iterator[Any]]:
    """joblib's results in the order they finish, on ``workers`` processes. Left early (an error, Ctrl-C), the
    generator is closed here and quietly: the tasks still running are cancelled on purpose, and joblib would
    otherwise warn so when the generator is collected, after the run's one ``interrupted:`` line."""
    from joblib import Parallel

    results = Parallel(n_jobs=workers, return_as="generator_unordered")(calls)
    try:
        yield results
    finally:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*still being processed by the workers", category=UserWarning)
            results.close()


@contextlib.contextmanager
def _stop_helpers_on_sigint():
    """Ctrl-C during a parallel run kills the worker and manager processes at once and raises KeyboardInterrupt.
    The interrupt alone could land inside joblib's wait loop and be lost there, leaving the run waiting on
    workers for minutes; with the workers gone, joblib fails fast and the failure is reported as the interrupt."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    import psutil

    interrupted = threading.Event()

    def on_sigint(signum, frame) -> None:
        interrupted.set()
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "resource_tracker" not in " ".join(child.cmdline()):  # it cleans up after the others
                    child.kill()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except Exception:
        if interrupted.is_set():
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
