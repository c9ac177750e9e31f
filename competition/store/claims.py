"""Claims: which command trains which (model, fold) unit of a run folder, so that two ``cv`` commands (local, or
clients of one Dask cluster) never train the same unit.

A claim is ``<run>/<model>/fold<k>.claim`` (path: ``runs.claim_path``), created with ``O_CREAT | O_EXCL`` (atomic,
also on NFSv3+), holding its owner (host, pid, process start time) and the time it was made. The owner touches it
every ``HEARTBEAT`` seconds while it holds it and deletes it when done. A claim is dead, and is taken over, when its
owner is a process of this host that is gone (pid not alive, or reused: the start time differs), or, for an owner on
another host, when it has not been touched for ``STALE_AFTER`` seconds. Taking over happens under the run's lock
(``runs.run_lock``) and re-reads the claim first, so two commands never both take over one claim.

The claims are the command's (the process that runs ``cv``), not the Dask workers': the command hands each claimed
unit to one worker at a time, and the scheduler gives a unit to another worker only when its worker died.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from competition.store.readers import read_claim
from competition.store.runs import claim_path, run_lock

HEARTBEAT = 30.0  # seconds between touches of a held claim
STALE_AFTER = 300.0  # a claim of another host untouched this long is dead

Unit = tuple  # (model, fold) or (model, fold, seed): seed 0 when left out


def start_ticks(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (Linux), to tell a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the "(comm)" field


def owner_alive(host: str, pid: int, ticks: str | None) -> bool | None:
    """Whether a process of this host still runs (None for a process of another host)."""
    if host != socket.gethostname():
        return None
    if Path("/proc").is_dir():
        now = start_ticks(pid)
        return now is not None and now == ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_dead(info: dict | None, age: float, stale_after: float = STALE_AFTER) -> bool:
    """Whether a claim's owner is gone: a dead process of this host, or no heartbeat for ``stale_after`` seconds."""
    if info is not None:
        alive = owner_alive(info["host"], info["pid"], info.get("start_ticks"))
        if alive is not None:
            return not alive
    return age > stale_after  # another host's owner (or a claim never written): judged by its heartbeat


class UnitClaims:
    """The units this process holds in one run folder: ``take`` claims, a thread keeps the claims fresh, and
    leaving the ``with`` block releases every claim still held (finished or not: an unfinished unit is free again).
    """

    def __init__(self, run_dir: Path, heartbeat: float = HEARTBEAT, stale_after: float = STALE_AFTER):
        self.run_dir = run_dir
        self.heartbeat = heartbeat
        self.stale_after = stale_after
        self.held: set[Unit] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        pid = os.getpid()
        self.owner = {"host": socket.gethostname(), "pid": pid, "start_ticks": start_ticks(pid)}

    def __enter__(self) -> UnitClaims:
        self._thread = threading.Thread(target=self._beat, name="claims-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for unit in list(self.held):
            self.release(*unit)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            for unit in list(self.held):
                try:
                    os.utime(claim_path(self.run_dir, *unit))
                except FileNotFoundError:
                    pass  # released meanwhile

    def _create(self, path: Path) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        record = self.owner | {"claimed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
        return True

    def claim(self, model: str, fold: int, seed: int = 0) -> bool:
        """Claim one unit: True when this process now holds it, False while a live owner holds it."""
        path = claim_path(self.run_dir, model, fold, seed)
        for _ in range(3):
            if self._create(path):
                self.held.add((model, fold, seed))
                return True
            seen = read_claim(path)
            if seen is None:
                continue  # released between our create and our read: try again
            if not claim_dead(*seen, self.stale_after):
                return False
            with run_lock(self.run_dir):  # take over a dead claim: one taker at a time, re-checking under the lock
                again = read_claim(path)
                if again is not None and again[0] == seen[0] and claim_dead(*again, self.stale_after):
                    path.unlink(missing_ok=True)
        return False

    def release(self, model: str, fold: int, seed: int = 0) -> None:
        """Drop a held claim (the unit is finished, or given up so another command may train it)."""
        if (model, fold, seed) in self.held:
            claim_path(self.run_dir, model, fold, seed).unlink(missing_ok=True)
            self.held.discard((model, fold, seed))

    def take(self, todo: list[Unit], finished: Callable[..., bool]) -> tuple[list[Unit], list[Unit]]:
        """Claim what can be claimed of ``todo``: (units now held, units a live owner holds). Units found
        finished (``finished(*unit)``) are dropped; a unit is re-checked after its claim, as another command may
        just have finished it."""
        mine, others = [], []
        for unit in todo:
            if finished(*unit):
                continue
            if not self.claim(*unit):
                others.append(unit)
            elif finished(*unit):
                self.release(*unit)
            else:
                mine.append(unit)
        return mine, others

    def holders(self, units: list[Unit]) -> str:
        """Who holds these units, for a progress line (e.g. ``host:1234``)."""
        found = set()
        for unit in units:
            seen = read_claim(claim_path(self.run_dir, *unit))
            if seen is not None and seen[0] is not None:
                found.add(f"{seen[0].get('host')}:{seen[0].get('pid')}")
        return ", ".join(sorted(found)) or "another command"
