"""Artifacts: atomic file writes (temp file + rename) and the environment manifest saved with every run."""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from competition.utils.errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # unwritable folder, a file where a folder belongs, disk full...
        raise UserError(f"{path}: cannot write ({e.strerror}); fix: pass a writable folder") from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise UserError(f"{path}: cannot write ({e.strerror}); fix: free space or pass another folder") from None
        raise


STALE_TEMP_SECONDS = 600  # a temp file lives for the seconds its write takes; one this old was left by a kill


def remove_stale_temp_files(folder: str | Path, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete the temp files (``.<name>.<random>.tmp``) under ``folder`` that a killed process left (SIGKILL, power
    loss: no ``finally`` ran), i.e. not written for ``older_than`` seconds; a concurrent command's temp file is
    seconds old and stays. Returns how many went."""
    import time

    now, removed = time.time(), 0
    for tmp in Path(folder).rglob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > older_than:
                tmp.unlink()
                removed += 1
        except OSError:  # gone meanwhile (renamed by its writer) or not ours to delete
            pass
    return removed


def check_writable(folder: str | Path) -> None:
    """Fail at once, not after the work, when files cannot be written in ``folder`` (made if missing)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise UserError(f"{folder}: cannot write there ({e.strerror}); fix: pass a writable folder") from None


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


def write_torch(path: str | Path, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def git_commit() -> str:
    """The checkout's commit, with ``+dirty`` when it has uncommitted changes; ``unknown`` outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if sha.returncode != 0:
        return "unknown"
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(device: str, seed: int) -> dict[str, Any]:
    """What produced an artifact: versions, device, seed, commit and time."""
    import torch

    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "seed": seed,
        "device": device,
        "cuda_device": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        # installed versions, read without importing (optuna, say, is only needed by tune): None when absent
        "versions": {name: _version(name) for name in ("torch", "numpy", "scikit-learn", "pandas", "optuna", "joblib")},
    }


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
