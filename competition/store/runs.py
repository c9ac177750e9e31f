"""Runs: the one place that knows a cv run folder: its paths, its config.json, loading its fold files into one
typed ``Run``, and the data / split fingerprint checks that cv, submit, report and tune share.

Layout of a run ``<workdir>/<run>/``: ``config.json`` (resolved config + data and split fingerprints),
``environment.json``, ``<model>/fold<k>.npz`` (val_idx, oof_logits, test_logits, result; written last, so it
marks the unit done), ``<model>/fold<k>.pt`` (weights, audio scaler and the resolved config),
``<model>/fold<k>_history.csv``, with ``seeds`` > 1 the further seeds' ``<model>/fold<k>_seed<s>.npz`` (``.pt``,
``_history.csv``) beside seed 0's (loading averages their logits), ``scores.csv``, ``summary.json``; a
pseudo-label round (``cv --pseudo``) also ``pseudo.npz`` and ``pseudo.json`` (pseudo.py); while a command trains
a unit, ``<model>/fold<k>.claim`` (``fold<k>_seed<s>.claim``; its owner: ``claims.py``), and ``.lock`` (the lock
of config.json updates).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from competition.config import Config
from competition.data.load import Competition
from competition.store.atomic import write_json
from competition.store.readers import CONFIG_FILE, read_run_config
from competition.utils.console import console
from competition.utils.errors import UserError
from competition.utils.validation import check_name

LOCK_FILE = ".lock"
LOCK_TIMEOUT = 120.0  # seconds to wait for the run's lock before giving up
_FOLD_FILE = re.compile(r"fold(\d+)(?:_seed\d+)?(?:\.npz|\.pt|_history\.csv)")


# --------------------------------------------------------------------------- paths


def _stem(fold: int, seed: int) -> str:
    """``fold<k>`` for seed 0 (where runs without seed bagging keep it), ``fold<k>_seed<s>`` for further seeds."""
    return f"fold{fold}" if seed == 0 else f"fold{fold}_seed{seed}"


def unit_path(run_dir: Path, model: str, fold: int, seed: int = 0) -> Path:
    """The fold file of one (model, fold, seed) unit: its predictions; its presence marks the unit finished."""
    return run_dir / model / f"{_stem(fold, seed)}.npz"


def checkpoint_path(run_dir: Path, model: str, fold: int, seed: int = 0) -> Path:
    return run_dir / model / f"{_stem(fold, seed)}.pt"


def history_path(run_dir: Path, model: str, fold: int, seed: int = 0) -> Path:
    return run_dir / model / f"{_stem(fold, seed)}_history.csv"


def claim_path(run_dir: Path, model: str, fold: int, seed: int = 0) -> Path:
    """The claim of a unit that a command is training (see ``claims.py``)."""
    return run_dir / model / f"{_stem(fold, seed)}.claim"


def model_seeds(config: dict[str, Any], model: str) -> int:
    """The seeds each fold of ``model`` trains in a saved run config (``seeds``, per model; 1 before it existed)."""
    return int(config.get("per_model", {}).get(model, {}).get("seeds", config.get("seeds", 1)))


def fold_number(path: Path) -> int | None:
    """The fold of a unit file (``fold3.npz``, ``fold3.pt``, ``fold3_history.csv`` -> 3); None for other files."""
    m = _FOLD_FILE.fullmatch(path.name)
    return int(m.group(1)) if m else None


def unit_files(model_dir: Path, pattern: str = "fold*.npz") -> list[tuple[int, Path]]:
    """``(fold, path)`` of a model folder's unit files matching ``pattern``, in fold order (seed 0's: the files of
    further seeds sit beside them, ``unit_path(..., seed)``)."""
    found = [(fold_number(p), p) for p in model_dir.glob(pattern) if "_seed" not in p.name]
    return sorted((k, p) for k, p in found if k is not None)


def split_fingerprint(fold_of: np.ndarray) -> str:
    """A short hash of a fold assignment: runs blended or resumed together must share it."""
    return hashlib.sha256(fold_of.astype(np.int64).tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------- one unit


@dataclass
class UnitResult:
    """The scores and cost of one trained (model, fold) unit (stored in its fold file as JSON)."""

    model: str
    fold: int
    macro_f1: float = math.nan
    accuracy: float = math.nan
    seconds: float = math.nan
    epochs: int = 0
    seed: int = 0  # which seed of the fold (seed bagging)
    seeds: int = 1  # in a loaded run: how many seeds' logits the fold's scores average (seconds: their sum)

    def to_json(self) -> str:
        out = dataclasses.asdict(self)
        # without seed bagging the fold file reads as it always did
        return json.dumps({k: v for k, v in out.items() if not (k == "seed" and v == 0 or k == "seeds" and v == 1)})


@dataclass
class Unit:
    """One fold file: the validation rows, their out-of-fold logits (n_val, 10), the test logits (M, 10)."""

    fold: int
    val_idx: np.ndarray
    oof_logits: np.ndarray
    test_logits: np.ndarray
    result: UnitResult


def load_unit(path: Path) -> Unit:
    """Read one ``fold<k>.npz`` whole; an unreadable, truncated or incomplete file is a UserError naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            val_idx, oof, test, raw = z["val_idx"], z["oof_logits"], z["test_logits"], str(z["result"])
        fields = {f.name for f in dataclasses.fields(UnitResult)}
        result = UnitResult(**{k: v for k, v in json.loads(raw).items() if k in fields})
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        # json.JSONDecodeError is a ValueError; a truncated zip raises BadZipFile or EOFError
        raise UserError(
            f"{path}: unreadable or incomplete fold file ({type(e).__name__}); fix: delete it and rerun "
            "`run.py cv` with the run's flags, which trains that fold again"
        ) from None
    return Unit(fold_number(path), val_idx, oof, test, result)


def load_checkpoint(path: Path) -> dict:
    """Read one ``fold<k>.pt`` (weights, hyperparameters, the fold's audio scaler); an unreadable or incomplete
    file is a UserError naming it. torch is imported here only: reading fold files needs none."""
    import torch

    try:
        # Our own checkpoint (written by cv.train_unit); it holds numpy arrays, hence weights_only=False.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(ckpt, dict) or not {"hparams", "state_dict", "audio_mean", "audio_scale"} <= ckpt.keys():
            raise KeyError("missing keys")
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        raise UserError(
            f"{path}: unreadable or incomplete model checkpoint ({type(e).__name__}); fix: delete it and its "
            f"{path.with_suffix('.npz').name}, then rerun `run.py cv` with the run's flags (it trains that fold again)"
        ) from None
    return ckpt


def unit_finished(run_dir: Path, model: str, fold: int, seed: int = 0) -> bool:
    """Whether the unit's fold file exists and reads; an unreadable one is trained again (and cv says so)."""
    path = unit_path(run_dir, model, fold, seed)
    if not path.exists():
        return False
    try:
        load_unit(path)
    except UserError:
        console.print(f"[yellow]warning:[/] {path}: unreadable or incomplete fold file; training that unit again")
        return False
    return True


# --------------------------------------------------------------------------- the run's config


def write_run_config(run_dir: Path, config: dict[str, Any], comp: Competition, split_fp: str, **extra: Any) -> None:
    """``config.json``: the resolved config and the data and split it was made on (plus ``extra`` keys)."""
    meta = {"config": config, "data": str(comp.root), "data_fingerprint": comp.fingerprint}
    write_json(run_dir / CONFIG_FILE, meta | {"split_fingerprint": split_fp} | extra)


@contextmanager
def run_lock(run_dir: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the run folder's lock (``<run>/.lock``, an flock: the kernel releases it if its holder dies)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(run_dir / LOCK_FILE, timeout=timeout):
            yield
    except Timeout:
        raise UserError(
            f"{run_dir / LOCK_FILE}: another command has held the run's lock for {timeout:.0f}s; "
            "fix: wait for it, or stop the command that hangs"
        ) from None


def add_to_run_config(run_dir: Path, cfg: Config, comp: Competition, split_fp: str) -> None:
    """Create the run's config.json, or check that the run may be resumed with ``cfg`` and add its models to the
    saved list; read, merge and write under the run's lock, so two commands adding models never lose one."""
    with run_lock(run_dir):
        saved = check_resumable(run_dir, cfg, comp, split_fp)
        models = sorted(set(saved["config"].get("models", []) if saved else []) | set(cfg.models))
        write_run_config(run_dir, cfg.to_dict() | {"models": models}, comp, split_fp)


def data_mismatch(meta: dict, comp: Competition) -> bool:
    """Whether a run was made on other data than ``comp`` (its folder may have moved; its contents may not)."""
    return meta.get("data_fingerprint") != comp.fingerprint


def check_same_data(
    run_dir: Path, meta: dict, comp: Competition, fix: str = "pass the --data the run was made on"
) -> None:
    """UserError when the run in ``run_dir`` (its config.json ``meta``) was made on other data than ``comp``."""
    if data_mismatch(meta, comp):
        raise UserError(
            f"{run_dir / CONFIG_FILE}: run {run_dir.name!r} was made on data {meta.get('data')} "
            f"(fingerprint {meta.get('data_fingerprint')}), not --data {comp.root} ({comp.fingerprint}); fix: {fix}"
        )


def check_resumable(run_dir: Path, cfg: Config, comp: Competition, split_fp: str) -> dict | None:
    """A run folder holds one recipe on one data folder and split: refuse to mix, never overwrite.
    Returns the saved ``config.json`` (None for a new run)."""
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return None
    saved = read_run_config(run_dir)
    # A key added to Config after the run was made defaults to "off", which is what the run computed.
    before = Config().to_dict() | saved["config"]
    diffs = [f"{k}: {before[k]!r} -> {v!r}" for k, v in cfg.result_dict().items() if before[k] != v]
    if data_mismatch(saved, comp):
        diffs.append("data folder contents differ")
    if saved.get("split_fingerprint") != split_fp:
        diffs.append("fold split differs")
    if diffs:
        raise UserError(
            f"{path}: run {run_dir.name!r} was made with other settings ({'; '.join(diffs)}); "
            f"fix: pass --run NEW_NAME, or delete {run_dir} to start it over"
        )
    return saved


def missing_folds(run_dir: Path, meta: dict) -> dict[str, list[int]]:
    """``{model: [fold, ...]}`` of the run's configured units that have no fold file yet (for any of its seeds)."""
    k, config = meta["config"]["folds"], meta["config"]
    out = {
        m: [
            f for f in range(k) if not all(unit_path(run_dir, m, f, s).is_file() for s in range(model_seeds(config, m)))
        ]
        for m in config["models"]
    }
    return {m: f for m, f in out.items() if f}


def latest_run(workdir: Path) -> str:
    """The run under ``workdir`` whose every model has every fold, with the newest fold file."""
    if not workdir.is_dir():
        raise UserError(f"{workdir}: workdir not found; fix: run `run.py cv` first or pass --workdir DIR")
    finished, unfinished = [], []
    for run_dir in sorted(p for p in workdir.iterdir() if (p / CONFIG_FILE).is_file()):
        try:
            meta = read_run_config(run_dir)
        except UserError:
            continue
        if missing_folds(run_dir, meta):
            unfinished.append(run_dir.name)
            continue
        newest = max((p.stat().st_mtime for p in run_dir.glob("*/fold*.npz")), default=0.0)
        finished.append((newest, run_dir.name))
    if not finished:
        what = f"only unfinished runs ({', '.join(unfinished)})" if unfinished else "no cv runs"
        raise UserError(f"{workdir}: {what}; fix: finish one with `run.py cv`, or pass --run NAME / --workdir DIR")
    return max(finished)[1]


def find_run(workdir: Path, run: str | None) -> Path:
    """``workdir/run``, or the latest finished run when ``run`` is None."""
    if run is not None:
        run_dir = workdir / check_name(run, "--run", "run")
        if not (run_dir / CONFIG_FILE).is_file():
            raise UserError(f"--run {run}: no run at {run_dir}; fix: name a folder made by `python run.py cv`")
        return run_dir
    return workdir / latest_run(workdir)
