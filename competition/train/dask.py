"""Dask: ``cv --scheduler tcp://HOST:8786`` trains the (model, fold) units as tasks on a Dask distributed cluster.

The command connects a ``distributed.Client``, submits one task per claimed unit (costliest first, each when a worker
thread is free, as local processes take them) and handles each result as it finishes (``as_completed``); per-epoch
progress travels as worker events (``log_event`` on the worker, ``subscribe_topic`` on the client). The data goes into
the graph once, as one task all units depend on, so the scheduler can recompute it if every worker holding it dies; it
is copied to every worker before the units are submitted, so that each unit goes to the free worker (a task goes to a
worker that holds its inputs). While a unit trains, its worker runs with a plain process's malloc thresholds
(``malloc.py``) and its profiler paused (``profiler.py``). A worker that dies mid-unit loses that unit only: the
scheduler gives it to another worker (up to ``distributed.scheduler.allowed-failures`` times), and every unit already
written stays. Artifacts (docs/howto/cluster-gpu.md):
- ``client`` (default): the task trains in a scratch folder on its worker and returns the unit's files as bytes; the
  command writes them into the run folder atomically, npz last. Needs no shared filesystem.
- ``shared``: the workers write the unit files into the run folder themselves; it must be at the same path on every
  worker (a shared filesystem).
"""

from __future__ import annotations

import dataclasses
import json
import socket
import tempfile
import uuid
import warnings
from pathlib import Path

from competition.store.atomic import write_bytes
from competition.store.runs import CONFIG_FILE, UnitResult, checkpoint_path, history_path, unit_path
from competition.train.learner import resolve_device
from competition.train.malloc import local_malloc
from competition.train.profiler import paused_profiler
from competition.train.progress import CVProgress, EpochEvent, NoProgress
from competition.train.unit import CVJob, planned_epochs, train_unit
from competition.utils.errors import UserError

ARTIFACTS = ("client", "shared")
CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler


class WorkerEvents:
    """The per-epoch event sink of a unit running on a Dask worker: forwards each event to the client's topic."""

    def __init__(self, topic: str):
        self.topic = topic

    def put(self, event: EpochEvent) -> None:
        from distributed import get_worker

        row = json.loads(json.dumps(event.row, default=float))  # plain JSON: it travels through the scheduler
        get_worker().log_event(self.topic, [event.model, event.fold, event.planned, row, event.seed])


def unit_task(
    job: CVJob, model: str, fold: int, shared: bool, events: WorkerEvents | None = None, seed: int = 0
) -> tuple[UnitResult, list[tuple[str, bytes]]]:
    """Train one unit on this worker, single-threaded as in local cv. With ``shared`` (a shared filesystem) write
    its files into the job's run folder and return no bytes; else train in a scratch folder and return
    ``[(path in the run, bytes)]`` in write order (the npz, which marks the unit finished, last)."""
    job = dataclasses.replace(job, device=resolve_device(job.device))
    if shared:
        if not (job.run_dir / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{job.run_dir}: run folder not visible on this worker (--artifacts shared)")
        with local_malloc(), paused_profiler():
            return train_unit(job, model, fold, 1, events, seed), []
    with tempfile.TemporaryDirectory(prefix="cv-unit-", dir=_scratch()) as tmp, local_malloc(), paused_profiler():
        result = train_unit(dataclasses.replace(job, run_dir=Path(tmp)), model, fold, 1, events, seed)
        paths = [p(Path(tmp), model, fold, seed) for p in (history_path, checkpoint_path, unit_path)]
        files = [(p.relative_to(tmp).as_posix(), p.read_bytes()) for p in paths]
    return result, files


def _scratch() -> str | None:
    """The worker's own folder (Dask cleans it up after the worker dies), else the system's temp folder."""
    try:
        from distributed import get_worker

        return get_worker().local_directory
    except ValueError:  # not inside a worker
        return None


def _identity(x):
    return x


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class DaskExecutor:
    """A connection to a Dask scheduler that trains units (the ``executor.Executor`` protocol).

    Use it as a context manager: entering connects, leaving closes the client (the cluster keeps running)."""

    def __init__(self, address: str, artifacts: str = "client", timeout: float = CONNECT_TIMEOUT):
        self.address = address
        self.artifacts = artifacts
        self.timeout = timeout
        self.client = None

    def __enter__(self) -> DaskExecutor:
        try:
            from distributed import Client
        except ImportError:
            raise UserError("--scheduler needs Dask's distributed package; fix: pip install -e '.[dask]'") from None
        if self.artifacts not in ARTIFACTS:
            raise UserError(f"--artifacts {self.artifacts}: unknown; fix: pass one of {', '.join(ARTIFACTS)}")
        try:
            self._probe()  # fails fast, before a Client that would retry until its timeout
            self.client = Client(self.address, timeout=self.timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as e:
            raise UserError(
                f"--scheduler {self.address}: cannot connect ({_one_line(e)}); "
                "fix: pass the address `dask scheduler` prints, e.g. tcp://HOST:8786, and check that it runs"
            ) from None
        return self

    def _probe(self) -> None:
        """A known address scheme, and for tcp/tls a scheduler port that accepts connections."""
        from distributed.comm import get_address_host_port, parse_address
        from distributed.comm.registry import backends

        scheme, _ = parse_address(self.address)
        if scheme not in backends:
            raise ValueError(f"unknown address scheme {scheme!r}, known: {', '.join(sorted(backends))}")
        if scheme in ("tcp", "tls"):
            socket.create_connection(get_address_host_port(self.address), timeout=self.timeout).close()

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.close()

    def slots(self) -> int:
        """Units the cluster trains at once (its worker threads): a deadline is checked between such batches."""
        return sum(self.client.nthreads().values()) if self.client else 1

    def __str__(self) -> str:
        workers = len(self.client.nthreads()) if self.client else 0
        return f"the Dask cluster at {self.address} ({workers} workers, artifacts: {self.artifacts})"

    def _check_shared(self, run_dir: Path) -> None:
        seen = self.client.run(lambda p: Path(p).is_file(), str(run_dir / CONFIG_FILE))
        blind = sorted(w for w, ok in seen.items() if not ok)
        if blind:
            raise UserError(
                f"{run_dir}: not visible on worker(s) {', '.join(blind)}; fix: with --artifacts shared every worker "
                "must see the run folder at the same path, else use --artifacts client"
            )

    def execute(self, job: CVJob, todo: list[tuple[str, int, int]], quiet: bool) -> None:
        """Train ``todo`` [(model, fold, seed)] on the cluster; write (client) or await (shared) each as it ends."""
        from distributed import KilledWorker, as_completed

        client, cfg, run_dir = self.client, job.cfg, job.run_dir
        shared = self.artifacts == "shared"
        if shared:
            self._check_shared(run_dir)
        token = uuid.uuid4().hex[:8]
        topic = f"competition-cv-{token}"
        planned = {m: planned_epochs(cfg, m) for m in cfg.models}
        with CVProgress(sum(planned[u[0]] for u in todo), planned) if not quiet else NoProgress() as progress:
            client.subscribe_topic(topic, lambda event: progress.epoch(EpochEvent(*event[1])))
            with warnings.catch_warnings():  # the data is meant to be in the graph: the scheduler can recompute it
                warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
                data = client.submit(_identity, job, key=f"cv-data-{token}")
            # Local processes take the next costliest unit as each one frees up; so does the cluster: the data is on
            # every worker (a task goes to a worker holding its inputs: with one holder every unit would queue there),
            # and a unit is submitted only when a worker thread is free (a queued unit is work stealing's to move, in
            # any order: a worker then sat idle for 8 s while another trained the two last units in turn).
            waiting, futures, finished = list(todo), {}, as_completed(loop=client.loop)

            def submit_free() -> None:
                threads = client.nthreads()
                # At the start, and where workers joined (or were restarted), or the active memory manager dropped a
                # copy of the data from a worker between its units.
                if set(threads) - set(client.who_has([data]).get(data.key, ())):
                    client.replicate([data])
                while waiting and len(futures) < max(1, sum(threads.values())):
                    model, fold, seed = waiting.pop(0)
                    future = client.submit(
                        unit_task, data, model, fold, shared, WorkerEvents(topic), seed,
                        key=f"cv-{model}-fold{fold}-seed{seed}-{token}", priority=len(waiting),
                    )  # fmt: skip
                    futures[future] = (model, fold, seed)
                    finished.add(future)

            try:
                submit_free()
                for future in finished:
                    model, fold, seed = futures.pop(future)
                    try:
                        result, files = future.result()
                    except KilledWorker as e:
                        raise UserError(
                            f"{unit_path(run_dir, model, fold, seed)}: the unit's Dask workers died ({_one_line(e)}); "
                            "finished units are kept; fix: check the workers' memory and logs, then rerun"
                        ) from None
                    for rel, blob in files:
                        write_bytes(run_dir / rel, blob)
                    future.release()  # written: the cluster forgets it, so a later worker death never recomputes it
                    progress.unit_trained(result)
                    submit_free()
            finally:
                client.cancel([*futures, data])
                client.unsubscribe_topic(topic)
