"""Readers: every file the toolkit reads back (a run's ``config.json`` and ``summary.json``, a submission's
manifest, a pseudo-label round's ``pseudo.json`` and ``pseudo.npz``, the saved split ``folds.csv`` /
``folds.json``, a unit's claim) is read here, once, and checked against its schema. Any failure (missing,
truncated, not JSON, a key dropped or retyped, a value out of range) is a ``UserError`` naming the file, the
problem and the fix, so no caller ever meets a parser's or a ``KeyError``'s exception.
"""

from __future__ import annotations

import json
import math
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from competition.ensemble.blend import BLENDS, SPACES
from competition.utils.errors import UserError
from competition.utils.validation import N_CLASSES, read_csv

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
PSEUDO_JSON = "pseudo.json"
PSEUDO_NPZ = "pseudo.npz"
FIX_SUBMIT = "fix: rerun `run.py submit` to rewrite it (or restore the file)"


class SchemaError(ValueError):
    """One value of a read-back file that breaks its schema (turned into a UserError naming the file)."""


# --------------------------------------------------------------------------- generic checks


def read_json(path: Path, fix: str, what: str = "JSON file") -> dict[str, Any]:
    """A JSON object from ``path``; missing, unreadable or not an object is a UserError naming ``what`` and ending
    in ``fix``."""
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
        raise UserError(f"{path}: unreadable {what} ({type(e).__name__}: {e}); {fix}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: unreadable {what} (a JSON {type(obj).__name__}, not an object); {fix}")
    return obj


def _get(d: dict, key: str, kind: type | tuple[type, ...], where: str = "", optional: bool = False) -> Any:
    """``d[key]`` of type ``kind`` (a bool is not an int or a float)."""
    if key not in d:
        if optional:
            return None
        raise SchemaError(f"{where}{key!r} missing")
    v = d[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(v, bool) and bool not in kinds) or not isinstance(v, kinds):
        names = "/".join(k.__name__ for k in kinds)
        raise SchemaError(f"{where}{key!r} is {type(v).__name__} {v!r}, expected {names}")
    return v


def _number(v: Any, what: str, low: float | None = None, high: float | None = None, none: bool = False) -> Any:
    if v is None and none:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SchemaError(f"{what} is {v!r}, expected a finite number")
    if (low is not None and v < low) or (high is not None and v > high):
        raise SchemaError(f"{what} is {v!r}, expected a number in [{low}, {high}]")
    return v


def _str_list(v: Any, what: str) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise SchemaError(f"{what} is {v!r}, expected a non-empty list of names")
    if len(set(v)) != len(v):
        raise SchemaError(f"{what} names an item twice")
    return v


def _weights(v: Any, models: list[str], what: str) -> dict[str, float]:
    """Blend weights: one finite number >= 0 per model, not all zero."""
    if not isinstance(v, dict) or set(v) != set(models):
        keys = sorted(v) if isinstance(v, dict) else v
        raise SchemaError(f"{what} are {keys!r}, expected one weight for each of {models}")
    for m in models:
        _number(v[m], f"{what}[{m!r}]", low=0)
    if sum(v.values()) <= 0:
        raise SchemaError(f"{what} are all 0")
    return v


# --------------------------------------------------------------------------- a cv run


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A run's ``config.json``: keys config (with folds >= 2 and models), data, data_fingerprint,
    split_fingerprint; UserError if absent or broken."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: not a cv run (no config.json); fix: pass --run with a run made by `run.py cv`")
    fix = f"fix: restore it, or delete {run_dir} and rerun `run.py cv --run {Path(run_dir).name}`"
    meta = read_json(path, fix, "run config")
    try:
        cfg = _get(meta, "config", dict)
        folds = _get(cfg, "folds", int, "config.")
        if folds < 2:
            raise SchemaError(f"config.folds is {folds}, expected >= 2")
        _str_list(cfg.get("models"), "config.models")
        per_model = _get(cfg, "per_model", dict, "config.", optional=True) or {}
        if not all(isinstance(v, dict) for v in per_model.values()):
            raise SchemaError("config.per_model is not a table of tables")
        for key in ("data", "data_fingerprint", "split_fingerprint"):
            _get(meta, key, (str, type(None)), optional=True)
    except SchemaError as e:
        raise UserError(f"{path}: unreadable run config ({e}; not the config.json `run.py cv` writes); {fix}") from None
    return meta


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run's ``summary.json`` (``oof``: model -> macro_f1, accuracy; ``per_fold``: model, fold, scores, seconds);
    an absent one (a run not yet scored) is empty."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        return {"oof": {}, "per_fold": []}
    fix = f"fix: rerun `run.py cv --run {Path(run_dir).name}` with the run's flags, which rewrites it"
    s = read_json(path, fix, "run summary")
    try:
        oof = _get(s, "oof", dict)
        for model, v in oof.items():
            if not isinstance(v, dict):
                raise SchemaError(f"oof[{model!r}] is {v!r}, expected an object")
            for k in ("macro_f1", "accuracy"):
                _number(v.get(k), f"oof[{model!r}].{k}", 0, 1)
        per_fold = _get(s, "per_fold", list)
        for i, r in enumerate(per_fold):
            if not isinstance(r, dict):
                raise SchemaError(f"per_fold[{i}] is {r!r}, expected an object")
            _get(r, "model", str, f"per_fold[{i}].")
            _get(r, "fold", int, f"per_fold[{i}].")
            for k in ("macro_f1", "accuracy", "seconds"):  # NaN: a unit that recorded none
                v = r.get(k)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise SchemaError(f"per_fold[{i}].{k} is {v!r}, expected a number")
    except SchemaError as e:
        raise UserError(f"{path}: unreadable run summary ({e}); {fix}") from None
    return s


# --------------------------------------------------------------------------- a submission's manifest


def read_manifest(path: Path) -> dict[str, Any]:
    """A submission's manifest ``<name>.json``, checked against the one schema ``submission/files.py`` writes:
    its runs, blended models (``run/model``), blend, averaging space, weights (finite, >= 0, not all 0; the
    fitted blend's per-fold weights too) and fingerprints."""
    path = Path(path)
    m = read_json(path, FIX_SUBMIT, "submission manifest")
    try:
        _get(m, "submission", str)
        runs = _get(m, "runs", list)
        if not runs:
            raise SchemaError("'runs' is empty")
        for i, r in enumerate(runs):
            if not isinstance(r, dict):
                raise SchemaError(f"runs[{i}] is {r!r}, expected an object")
            _get(r, "name", str, f"runs[{i}].")
            _get(r, "dir", str, f"runs[{i}].")
            _get(r, "config", dict, f"runs[{i}].", optional=True)
        names = [r["name"] for r in runs]
        models = _str_list(m.get("models"), "'models'")
        for key in models:
            run, _, model = key.rpartition("/")
            if run not in names or not model:
                raise SchemaError(f"model {key!r} is not <run>/<model> of a run in 'runs' ({names})")
        blend, space = _get(m, "blend", str), _get(m, "average", str)
        if blend not in BLENDS or space not in SPACES:
            raise SchemaError(f"blend {blend!r} / average {space!r}: expected one of {BLENDS} / {SPACES}")
        _weights(m.get("weights"), models, "'weights'")
        for key in ("data_fingerprint", "split_fingerprint"):
            _get(m, key, str)
        for key in ("oof_macro_f1", "oof_nested_macro_f1", "oof_accuracy"):
            _number(m.get(key), repr(key), 0, 1, none=True)
        for key in ("consensus", "decisions", "environment", "test_predictions"):
            _get(m, key, dict, optional=True)
        for key in ("left_out", "agreement"):
            _get(m, key, list, optional=True)
        for i, c in enumerate(_get(m, "candidates", list, optional=True) or []):
            if not isinstance(c, dict):
                raise SchemaError(f"candidates[{i}] is {c!r}, expected an object")
            _get(c, "blend", str, f"candidates[{i}].")
            _get(c, "space", str, f"candidates[{i}].")
            fold_weights = _get(c, "fold_weights", list, f"candidates[{i}].", optional=True) or []
            for k, w in enumerate(fold_weights):
                _weights(w, models, f"candidates[{i}].fold_weights[{k}]")
    except SchemaError as e:
        raise UserError(f"{path}: not a valid submission manifest ({e}); {FIX_SUBMIT}") from None
    return m


# --------------------------------------------------------------------------- a pseudo-label round


PSEUDO_FIX = "fix: rerun the same `run.py cv --pseudo` command, which rebuilds it while the submission is unchanged"


def read_pseudo_record(run_dir: Path) -> dict[str, Any]:
    """A pseudo-label round's ``pseudo.json``: at least the submission it was read from and its fingerprint."""
    path = Path(run_dir) / PSEUDO_JSON
    record = read_json(path, PSEUDO_FIX, "pseudo-label record")
    try:
        _get(record, "submission", str)
        _get(record, "fingerprint", str)
    except SchemaError as e:
        raise UserError(f"{path}: not a pseudo-label record ({e}); {PSEUDO_FIX}") from None
    return record


def read_pseudo_sets(run_dir: Path, folds: int, n_test: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """A pseudo-label round's ``pseudo.npz``: per fold (test rows, their labels 0-9, the threshold)."""
    path, fix = Path(run_dir) / PSEUDO_NPZ, PSEUDO_FIX
    try:
        with np.load(path, allow_pickle=False) as z:
            thresholds = np.asarray(z["thresholds"], dtype=float)
            sets = [(z[f"idx{k}"], z[f"labels{k}"]) for k in range(folds)]
        if thresholds.shape != (folds,) or np.isnan(thresholds).any():
            raise SchemaError(f"thresholds of shape {thresholds.shape}, expected ({folds},)")
        out = []
        for k, (idx, labels) in enumerate(sets):
            ok = idx.ndim == 1 and idx.shape == labels.shape and idx.dtype.kind in "iu" and labels.dtype.kind in "iu"
            if not ok or (idx < 0).any() or (idx >= n_test).any() or (labels < 0).any() or (labels >= N_CLASSES).any():
                raise SchemaError(f"fold {k}'s rows or labels are out of range")
            out.append((idx.astype(np.int64), labels.astype(np.int64), float(thresholds[k])))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; {fix}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # SchemaError is a ValueError
        raise UserError(f"{path}: unreadable pseudo-label sets ({type(e).__name__}: {e}); {fix}") from None
    return out


# --------------------------------------------------------------------------- a unit's claim


def read_claim(path: Path) -> tuple[dict | None, float] | None:
    """A unit's claim (``claims.py``): its owner record (None while it is being written, or damaged: then its age
    alone says whether it is dead) and its age in seconds; None if absent. Never an error: a claim is not input."""
    try:
        age = time.time() - path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    return (info if _owner_record(info) else None), age


def _owner_record(info: object) -> bool:
    """Whether a claim's JSON is an owner record (host, pid, start ticks); a damaged one is judged by its age."""
    if not isinstance(info, dict):
        return False
    pid, ticks = info.get("pid"), info.get("start_ticks")
    return (
        isinstance(info.get("host"), str)
        and isinstance(pid, int)
        and not isinstance(pid, bool)
        and pid > 0
        and (ticks is None or isinstance(ticks, str))
    )


# --------------------------------------------------------------------------- the saved split


def read_folds(workdir: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A workdir's saved split: ``folds.csv`` (row_id, label, group, fold in 0..folds-1) and ``folds.json``
    (data_fingerprint, folds, seed, split)."""
    path, meta_path = Path(workdir) / "folds.csv", Path(workdir) / "folds.json"
    fix = f"fix: delete {path} and {meta_path.name} to resplit (runs of the old split cannot be blended with new ones)"
    meta = read_json(meta_path, fix, "saved split record") if meta_path.exists() else {}
    try:
        for key, kind in (("data_fingerprint", str), ("folds", int), ("seed", int), ("split", str)):
            _get(meta, key, kind, optional=True)
        _get(meta, "grouped", bool, optional=True)
    except SchemaError as e:
        raise UserError(f"{meta_path}: not a saved split's record ({e}); {fix}") from None
    df = read_csv(path, fix_missing=fix)
    if list(df.columns) != ["row_id", "label", "group", "fold"]:
        raise UserError(
            f"{path}: expected the header row_id,label,group,fold, got {','.join(map(str, df.columns))}; {fix}"
        )
    fold = df["fold"]
    k = meta.get("folds")
    if fold.dtype.kind not in "iu" or fold.min() < 0 or (isinstance(k, int) and fold.max() >= k):
        raise UserError(f"{path}: the fold column holds values other than 0..{k - 1 if k else 'K-1'}; {fix}")
    return df, meta
