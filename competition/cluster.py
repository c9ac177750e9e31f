"""Cluster: ``cv --scheduler tcp://HOST:8786`` trains the (model, fold) units as tasks on a Dask distributed cluster.

The command connects a ``distributed.Client``, submits one task per claimed unit (costliest first) and handles each
result as it finishes (``as_completed``); per-epoch progress travels as worker events (``log_event`` on the worker,
``subscribe_topic`` on the client). The data goes into the graph once, as one task all units depend on, so the
scheduler can recompute it if every worker holding it dies. A worker that dies mid-unit loses that unit only: the
scheduler gives it to another worker (up to ``distributed.scheduler.allowed-failures`` times), and every unit already
written stays. Artifacts (docs/cluster.md):
- ``client`` (default): the task trains in a scratch folder on its worker and returns the unit's files as bytes; the
  command writes them into the run folder atomically, npz last. Needs no shared filesystem.
- ``shared``: the workers write the unit files into the run folder themselves; it must be at the same path on every
  worker (a shared filesystem).
"""

from __future__ import annotations

import json
import socket
import tempfile
import uuid
import warnings
from pathlib import Path

import numpy as np

from . import cv
from .artifacts import write_bytes
from .config import Config
from .console import CVProgress
from .data import Competition
from .errors import UserError
from .runs import CONFIG_FILE, UnitResult, checkpoint_path, history_path, unit_path
from .training import resolve_device

ARTIFACTS = ("client", "shared")
CONNECT_TIMEOUT = 10.0  # seconds to reach the scheduler


class WorkerEvents:
    """The per-epoch event sink of a unit running on a Dask worker: forwards each event to the client's topic."""

    def __init__(self, topic: str):
        self.topic = topic

    def put(self, event: tuple) -> None:
        from distributed import get_worker

        _, model, fold, epochs, row = event
        get_worker().log_event(self.topic, [model, fold, epochs, json.loads(json.dumps(row, default=float))])


def unit_task(
    comp: Competition, fold_of: np.ndarray, cfg: Config, model: str, fold: int, device: str,
    run_dir: str | None, events: WorkerEvents | None = None,
) -> tuple[UnitResult, list[tuple[str, bytes]]]:  # fmt: skip
    """Train one unit on this worker, single-threaded as in local cv. With ``run_dir`` (a shared filesystem) write
    its files there and return no bytes; else train in a scratch folder and return ``[(path in the run, bytes)]``
    in write order (the npz, which marks the unit finished, last)."""
    device = resolve_device(device)
    if run_dir is not None:
        if not (Path(run_dir) / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{run_dir}: run folder not visible on this worker (--artifacts shared)")
        return cv.train_unit(comp, fold_of, cfg, model, fold, Path(run_dir), device, 1, events), []
    with tempfile.TemporaryDirectory(prefix="cv-unit-", dir=_scratch()) as tmp:
        result = cv.train_unit(comp, fold_of, cfg, model, fold, Path(tmp), device, 1, events)
        paths = [history_path(Path(tmp), model, fold), checkpoint_path(Path(tmp), model, fold)]
        files = [(p.relative_to(tmp).as_posix(), p.read_bytes()) for p in [*paths, unit_path(Path(tmp), model, fold)]]
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


class DaskUnits:
    """A connection to a Dask scheduler that trains units (``execute`` has the signature of ``cv._execute``).

    Use it as a context manager: entering connects, leaving closes the client (the cluster keeps running)."""

    def __init__(self, address: str, artifacts: str = "client", timeout: float = CONNECT_TIMEOUT):
        self.address = address
        self.artifacts = artifacts
        self.timeout = timeout
        self.client = None

    def __enter__(self) -> DaskUnits:
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

    def execute(self, todo, comp, fold_of, cfg, run_dir, device, quiet) -> None:
        """Train ``todo`` [(model, fold)] on the cluster; write (client) or await (shared) each unit as it ends."""
        from distributed import KilledWorker, as_completed

        client = self.client
        shared = self.artifacts == "shared"
        if shared:
            self._check_shared(run_dir)
        token = uuid.uuid4().hex[:8]
        topic = f"competition-cv-{token}"
        planned = {m: cv.planned_epochs(cfg, m) for m in cfg.models}
        with CVProgress(sum(planned[m] for m, _ in todo), planned) if not quiet else cv._Null() as progress:
            client.subscribe_topic(topic, lambda event: progress.epoch(*event[1]))
            with warnings.catch_warnings():  # the data is meant to be in the graph: the scheduler can recompute it
                warnings.filterwarnings("ignore", message=".*[Ll]arge graph.*")
                data = client.submit(_identity, comp, key=f"cv-data-{token}")
            futures = {}
            for i, (model, fold) in enumerate(todo):  # todo is costliest first: so are the priorities
                future = client.submit(
                    unit_task, data, fold_of, cfg, model, fold, device, str(run_dir) if shared else None,
                    WorkerEvents(topic), key=f"cv-{model}-fold{fold}-{token}", priority=len(todo) - i,
                )  # fmt: skip
                futures[future] = (model, fold)
            try:
                for future in as_completed(list(futures), loop=client.loop):
                    model, fold = futures.pop(future)
                    try:
                        result, files = future.result()
                    except KilledWorker as e:
                        raise UserError(
                            f"{unit_path(run_dir, model, fold)}: the unit's Dask workers died ({_one_line(e)}); "
                            "finished units are kept; fix: check the workers' memory and logs, then rerun"
                        ) from None
                    for rel, blob in files:
                        write_bytes(run_dir / rel, blob)
                    future.release()  # written: the cluster forgets it, so a later worker death never recomputes it
                    progress.unit_trained(model, fold, result)
            finally:
                client.cancel([*futures, data])
                client.unsubscribe_topic(topic)
