"""Malloc: a Dask worker trains with the malloc settings of a plain process (glibc's sliding mmap threshold),
else every large tensor buffer is mapped, faulted in and unmapped afresh at each step."""

from __future__ import annotations

import contextlib
import ctypes
import sys
import threading
from pathlib import Path

# glibc's malloc: the nanny of a Dask worker starts it with MALLOC_TRIM_THRESHOLD_=65536 (Dask's default
# ``distributed.nanny.pre-spawn-environ``, so that freed memory goes back to the OS). Setting that variable also
# switches off glibc's sliding mmap threshold: every block over 128 KiB (a conv activation, its gradient, a weight
# matrix's output) is then mmap()ed and munmap()ed afresh, and each of its pages is faulted in and zeroed by the kernel
# again, step after step. A unit then trained ~2x slower than in a local process (audio and fusion; image less so):
# ~1.8 M minor page faults and ~4.5 s system time per 3,000-row audio epoch against ~0.1 M and ~0.3 s; py-spy --native
# showed the time in the first writers of fresh buffers (MKL's sgemm_mscale, TensorIterator loops) and munmap. torch's
# thread counts, denormal flags and CPU affinity matched. While units train, ``local_malloc`` sets the thresholds the
# sliding rule reaches in a plain process (32 MiB mmap, twice that trim). Once the worker has had no unit for
# ``RESTORE_AFTER`` seconds it gives the free memory back (malloc_trim) and gets its own thresholds again. Not at once
# after each unit: the next unit would fault its whole heap in afresh, as the first unit of a process does (an image
# unit after fusion and audio units: ~90 k minor faults and ~0.7 s more CPU than in a local process, whose heap stays).
RESTORE_AFTER = 10.0  # seconds without a unit; back-to-back units are milliseconds apart
MMAP_MAX, TRIM_MAX = 32 << 20, 64 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX (64-bit) and twice it
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MALLOC_ENV = {
    M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", 128 << 10),
    M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", 128 << 10),
}
_malloc_lock = threading.Lock()
_malloc_users = 0  # units training in this process now
_restore: threading.Timer | None = None  # pending after the last unit: the worker's own settings back


@contextlib.contextmanager
def local_malloc():
    """Train with a plain process's malloc thresholds where the worker was started with fixed ones (glibc only)."""
    global _malloc_users, _restore
    environ = _start_environ()  # what glibc read when the process started (os.environ may have changed since)
    fixed = {p: int(environ.get(env, default)) for p, (env, default) in MALLOC_ENV.items()}
    libc = _glibc() if any(env in environ for env, _ in MALLOC_ENV.values()) else None
    if libc is None:  # the sliding thresholds are on (or not glibc): nothing to do
        yield
        return
    with _malloc_lock:
        _malloc_users += 1
        if _restore is not None:  # a unit follows the last one: keep its heap
            _restore.cancel()
            _restore = None
        if _malloc_users == 1:
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_MAX)
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_MAX)
    try:
        yield
    finally:
        with _malloc_lock:
            _malloc_users -= 1
            if _malloc_users == 0:
                _restore = threading.Timer(RESTORE_AFTER, _restore_worker, (libc, fixed))
                _restore.daemon = True
                _restore.start()


def _restore_worker(libc, fixed: dict[int, int]) -> None:
    """The worker's own thresholds back and its free memory returned, unless a unit started meanwhile."""
    global _restore
    with _malloc_lock:
        if _malloc_users or _restore is not threading.current_thread():  # a unit started, or a later timer is due
            return
        _restore = None
        for param, value in fixed.items():
            libc.mallopt(param, value)
        libc.malloc_trim(0)


def _start_environ() -> dict[str, str]:
    try:
        pairs = Path("/proc/self/environ").read_bytes().split(b"\0")
    except OSError:
        return {}
    return dict(p.decode(errors="replace").partition("=")[::2] for p in pairs if p)


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None
    except OSError:
        return None
