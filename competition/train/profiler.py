"""Profiler: a Dask worker's statistical profiler is paused while units train in it, so that a unit's training
thread gets the machine a local process gets.

While any task runs, a worker samples its stack every 10 ms (``distributed.worker.profile.interval``) on the event loop
in its main thread: for the whole of every unit. A training stack is deep and each sample walks and records all of it.
On the 2-core bench machine a worker's main thread used 0.6-0.7 s of CPU during a 7.5 s image unit (0.12-0.16 s with
the profiler paused), and with both cores training, that CPU, the cache it evicts and the preemptions came out of the
units: image units took ~1.2x as long as in local processes, and their training thread itself ~10 % more CPU time
(bench/results/cluster_speed.md). A unit's profile would show torch's Python frames and little else, so the dashboard
loses little; the worker's other periodic work (heartbeats, memory monitor) runs on."""

from __future__ import annotations

import contextlib
import threading

_lock = threading.Lock()
_units = 0  # units training in this process now
_restart = False  # the profiler ran when the first of them started


@contextlib.contextmanager
def paused_profiler():
    """Stop this worker's profiler while the block runs; the last of concurrent units restarts it if it ran before.
    Outside a Dask worker, or on a worker started with its profiler off, do nothing."""
    global _units, _restart
    found = _profile_callback()
    if found is None:
        yield
        return
    worker, pc = found
    with _lock:
        _units += 1
        if _units == 1:
            _restart = pc.is_running()
            if _restart:
                worker.loop.add_callback(pc.stop)  # a PeriodicCallback belongs to its event loop: stop it there
    try:
        yield
    finally:
        with _lock:
            _units -= 1
            if _units == 0 and _restart:
                worker.loop.add_callback(pc.start)


def _profile_callback():
    """(this worker, its profiler's PeriodicCallback), or None outside a worker or where the profiler is off."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # no Dask, or not inside a worker
        return None
    pc = getattr(worker, "periodic_callbacks", {}).get("profile")
    return None if pc is None else (worker, pc)
