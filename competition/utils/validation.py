"""Validation: every check of user input, written once. Each failure is a ``UserError`` naming the file (or
flag), the problem and the fix; callers never catch a parser's exception themselves.

scikit-learn's ``utils/validation.py`` is the model: readers and checks, no knowledge of what the caller does
with the result.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from competition.utils.errors import UserError, plain

N_CLASSES = 10  # labels are the digits 0-9
_NAME = r"[A-Za-z0-9][A-Za-z0-9._{extra}-]*"


# --------------------------------------------------------------------------- files


def read_csv(path: Path, as_text: bool = False, fix_missing: str = "fix the path") -> pd.DataFrame:
    """A CSV file as a DataFrame (every cell as text with ``as_text``: ids and labels exactly as written)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: a folder, not a file; fix: pass the CSV file's path")
    if not path.is_file():
        raise UserError(f"{path}: file not found; {fix_missing}")
    try:
        if as_text:
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{path}: unreadable CSV ({str(e).strip()}); fix the file") from None


def read_array(path: Path, layout: tuple[int, int], what: str) -> np.ndarray:
    """A numeric .npy file as a (rows, width) array, ``width = layout[0] * layout[1]``; a cube is accepted only
    in the canonical ``layout`` (rows, *layout); NaN/inf refused."""
    width = layout[0] * layout[1]
    if not path.is_file():
        raise UserError(f"{path}: file not found; fix: point --data at a folder holding the six competition files")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: unreadable or corrupt .npy ({e}); fix: re-download the file") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "uif":
        raise UserError(f"{path}: expected a numeric array, got dtype {getattr(arr, 'dtype', type(arr))}; fix the file")
    if arr.ndim == 3 and arr.shape[1:] == layout:  # (N, 28, 28) images or (N, 39, 13) MFCCs (frames x coefficients)
        arr = arr.reshape(len(arr), width)
    elif arr.ndim == 3 and arr.shape[1] * arr.shape[2] == width:  # e.g. (N, 13, 39): transposed or reshaped?
        raise UserError(
            f"{path}: shape {arr.shape} is an ambiguous layout of {what}; fix: save it as (rows, {layout[0]}, "
            f"{layout[1]}) or flattened (rows, {width}) in that order"
        )
    if arr.ndim != 2 or arr.shape[1] != width:
        raise UserError(f"{path}: expected shape (rows, {width}) of {what}, got {arr.shape}; fix the file")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise UserError(
                f"{path}: {bad.sum()} NaN/inf values in {len(rows)} rows (first row {rows[0]}); "
                "fix: impute or drop those rows in every file"
            )
    return arr


# --------------------------------------------------------------------------- ids and labels


def check_columns(df: pd.DataFrame, path: Path, expected: list[str]) -> None:
    if list(map(str, df.columns)) != expected:
        raise UserError(
            f"{path}: expected the header {','.join(expected)}, got {','.join(map(str, df.columns))}; fix the header"
        )


def check_unique_ids(ids: pd.Series, path: Path) -> None:
    """No missing and no repeated row_id."""
    missing = ids.isna() | (ids.astype(str) == "")
    if missing.any():
        raise UserError(f"{path}: {int(missing.sum())} missing row_id values; fix: give every row an id")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise UserError(
            f"{path}: {len(dup)} duplicate row_id values (first {plain(dup.iloc[0])!r}); fix: one row per row_id"
        )


def check_same_ids(ids: pd.Series, ref: pd.Series, path: Path, ref_path: Path) -> None:
    """``ids`` are unique and exactly the reference ids (missing or extra ones named)."""
    check_unique_ids(ids, path)
    missing, extra = ref[~ref.isin(ids)], ids[~ids.isin(ref)]
    if len(missing):
        raise UserError(
            f"{path}: {len(missing)} row_id(s) of {ref_path.name} missing (first {plain(missing.iloc[0])!r}); "
            "fix: predict every row"
        )
    if len(extra):
        raise UserError(
            f"{path}: {len(extra)} row_id(s) not in {ref_path.name} (first {plain(extra.iloc[0])!r}); "
            "fix: drop those rows"
        )


def check_labels(labels: pd.Series, ids: pd.Series, path: Path) -> np.ndarray:
    """The labels as int64, each an integer 0-9 (written ``7`` or ``7.0``)."""
    raw = pd.to_numeric(labels, errors="coerce")
    ok = (raw.notna() & (raw == raw.round()) & raw.between(0, N_CLASSES - 1)).to_numpy()
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise UserError(
            f"{path}: {int((~ok).sum())} label(s) not an integer 0-9 (first at row_id {plain(ids.iloc[i])!r}: "
            f"{plain(labels.iloc[i])!r}); fix the labels"
        )
    return raw.to_numpy().astype(np.int64)


def read_labelled(path: Path) -> pd.DataFrame:
    """A row_id,label CSV (a submission or a holdout's labels), checked: unique ids, integer labels 0-9."""
    df = read_csv(path, as_text=True)
    check_columns(df, path, ["row_id", "label"])
    if len(df) == 0:
        raise UserError(f"{path}: no rows; fix the file")
    check_unique_ids(df["row_id"], path)
    return df.assign(label=check_labels(df["label"], df["row_id"], path))


# --------------------------------------------------------------------------- names and values


def check_name(name: str, flag: str, what: str, plus: bool = False) -> str:
    """A run, study or submission name is one file or folder name: letters, digits, '.', '_', '-' (and '+' where
    ``plus``: submission names join run names with it), not starting with '.'."""
    allowed = "'.', '_', '-'" + (" and '+'" if plus else "")
    if not isinstance(name, str) or not re.fullmatch(_NAME.format(extra="+" if plus else ""), name):
        raise UserError(
            f"{flag} {name!r}: a {what} name is one folder or file name of letters, digits and {allowed} "
            "(not a path); fix the name"
        )
    return name


def check_known(values: Iterable[str], known: Iterable[str], what: str, where: str) -> None:
    """Every value is one of ``known`` (e.g. model names against the registry)."""
    known = list(known)
    unknown = [v for v in values if v not in known]
    if unknown:
        raise UserError(f"{where}: unknown {what}(s) {unknown}; fix: use one of {', '.join(known)}")


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(value: str | float, flag: str) -> float:
    """Seconds of a time limit: ``90s``, ``30m``, ``1h``, ``1.5h`` or plain seconds (``600``); must be > 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value).lower())
        if not match:
            raise UserError(f"{flag} {value!r}: not a duration; fix: write e.g. 90s, 30m, 1h or plain seconds")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"{flag} {value!r}: must be a positive duration; fix: write e.g. 90s, 30m, 1h")
    return seconds
