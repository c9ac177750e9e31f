"""Data: load and validate a competition folder, scale its inputs, and find duplicate feature rows.

A competition folder holds ``x_train_wr.npy`` (N, 784) images, ``x_train_sp.npy`` (N, 507) MFCCs,
``y_train.csv`` (row_id, label), ``x_test_wr.npy`` / ``x_test_sp.npy`` (M rows) and
``sample_submission.csv`` (row_id, label). Every problem is a ``UserError`` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.preprocessing import StandardScaler

from .errors import UserError, plain

# The shapes of the competition's arrays (the models are built for them).
IMAGE_SIDE = 28
IMAGE_WIDTH = IMAGE_SIDE * IMAGE_SIDE  # 784 pixels
AUDIO_FRAMES, AUDIO_COEFS = 39, 13
AUDIO_WIDTH = AUDIO_FRAMES * AUDIO_COEFS  # 507: 39 frames x 13 MFCC coefficients, frame-major
N_CLASSES = 10

FILES = ("x_train_wr.npy", "x_train_sp.npy", "y_train.csv", "x_test_wr.npy", "x_test_sp.npy", "sample_submission.csv")
IMAGE_LAYOUT = (IMAGE_SIDE, IMAGE_SIDE)
AUDIO_LAYOUT = (AUDIO_FRAMES, AUDIO_COEFS)  # 39 frames x 13 MFCC coefficients, frame-major when flattened
DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "wsd"


@dataclass
class Competition:
    """One loaded competition: images scaled to [0, 1], raw (unscaled) audio, labels and ids."""

    root: Path
    image: np.ndarray  # (N, 784) float32 in [0, 1]
    audio: np.ndarray  # (N, 507) float32, unscaled: fit the scaler per fold on training rows
    y: np.ndarray  # (N,) int64 in 0..9
    row_ids: np.ndarray  # (N,) y_train.csv row_id, in array order
    test_image: np.ndarray  # (M, 784), in sample_submission.csv's row order
    test_audio: np.ndarray  # (M, 507), in sample_submission.csv's row order
    sample_submission: pd.DataFrame  # (M, 2): row_id, label; the submission format to copy
    fingerprint: str  # sha256 of the six files' bytes (first 16 hex digits)
    # cv --pseudo: {fold: (test row indices, their pseudo-labels)} added to that fold's training rows (pseudo.py)
    pseudo_rows: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return len(self.y)

    @property
    def n_test(self) -> int:
        return len(self.test_image)


def _load_array(path: Path, layout: tuple[int, int], what: str) -> np.ndarray:
    """The file's (rows, width) array; a cube is accepted only in the canonical ``layout`` (rows, *layout)."""
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


def _pixel_scale(arr: np.ndarray, path: Path) -> float:
    """Detect one image array's pixel range on its own: 0..255 images are divided by 255, 0..1 floats kept."""
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > 255:
        raise UserError(f"{path}: pixel values span [{lo}, {hi}], expected [0, 1] or [0, 255]; fix the file")
    return 1.0 if (hi <= 1.0 and arr.dtype.kind == "f") else 255.0


def _scaled_images(train: np.ndarray, test: np.ndarray, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both image arrays in [0, 1], each scaled by its own detected range; refused when, so scaled, one is
    still far darker than the other (e.g. 0-1 images divided by 255 once more before saving)."""
    out = []
    for arr, name in [(train, "x_train_wr.npy"), (test, "x_test_wr.npy")]:
        out.append(arr.astype(np.float32) / np.float32(_pixel_scale(arr, root / name)))
    peaks = [float(a.max()) for a in out]
    if min(peaks) < max(peaks) / 8:
        raise UserError(
            f"{root}: x_train_wr.npy and x_test_wr.npy are on different pixel scales (brightest pixel "
            f"{peaks[0]:.4g} vs {peaks[1]:.4g} after scaling each to [0, 1]); fix: save both as 0-255 or both as 0-1"
        )
    return out[0], out[1]


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: file not found; fix: point --data at a folder holding the six competition files")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: unreadable CSV ({str(e).strip()}); fix the file") from None
    if list(df.columns[:2]) != ["row_id", "label"] or len(df.columns) != 2:
        raise UserError(f"{path}: expected columns row_id,label, got {','.join(map(str, df.columns))}; fix the header")
    ids = df["row_id"]
    if ids.isna().any():
        raise UserError(f"{path}: {int(ids.isna().sum())} missing row_id values; fix: give every row an id")
    dup = ids[ids.duplicated()]
    if len(dup):
        first = plain(dup.iloc[0])
        raise UserError(f"{path}: {len(dup)} duplicate row_id values (first {first!r}); fix: make ids unique")
    return df


def _labels(df: pd.DataFrame, path: Path) -> np.ndarray:
    raw = pd.to_numeric(df["label"], errors="coerce")
    ok = raw.notna() & (raw == raw.round()) & raw.between(0, N_CLASSES - 1)
    if not ok.all():
        i = int(np.flatnonzero(~ok.to_numpy())[0])
        raise UserError(
            f"{path}: {int((~ok).sum())} labels are not integers in 0-9 "
            f"(first at row_id {plain(df['row_id'].iloc[i])!r}: {plain(df['label'].iloc[i])!r}); fix the labels"
        )
    return raw.to_numpy().astype(np.int64)


def _row_of(df: pd.DataFrame, path: Path, arrays: str) -> np.ndarray:
    """The array row each CSV row describes, from its row_id: ids that are a permutation of 0..N-1 are row
    numbers (any CSV order); other integer ids must be increasing, i.e. in the arrays' order. Anything else
    cannot be matched to the rows and is refused."""
    ids, n = df["row_id"], len(df)
    if pd.api.types.is_integer_dtype(ids):
        values = ids.to_numpy()
        if values.min() == 0 and values.max() == n - 1:  # unique (checked on reading): a permutation
            return values.astype(np.int64)
        if (np.diff(values) > 0).all():
            return np.arange(n)
    raise UserError(
        f"{path}: row_id values cannot be matched to the rows of {arrays} (they are neither 0..{n - 1} in any "
        "order nor increasing integers); fix: number the rows 0..N-1 as in the arrays"
    )


def fingerprint_files(root: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        h.update(name.encode())
        with open(root / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def load_competition(root: str | Path = DEFAULT_DATA) -> Competition:
    """Load and validate a competition folder; raise ``UserError`` naming the file and fix on any problem."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found; fix: pass --data DIR with the six competition files")
    image = _load_array(root / "x_train_wr.npy", IMAGE_LAYOUT, "28x28 images")
    audio = _load_array(root / "x_train_sp.npy", AUDIO_LAYOUT, "39x13 MFCCs (frames x coefficients)")
    test_image = _load_array(root / "x_test_wr.npy", IMAGE_LAYOUT, "28x28 images")
    test_audio = _load_array(root / "x_test_sp.npy", AUDIO_LAYOUT, "39x13 MFCCs (frames x coefficients)")
    labels = _read_csv(root / "y_train.csv")
    sample = _read_csv(root / "sample_submission.csv")

    n, m = len(labels), len(sample)
    for arr, name, want, other in [
        (image, "x_train_wr.npy", n, "y_train.csv"),
        (audio, "x_train_sp.npy", n, "y_train.csv"),
        (test_image, "x_test_wr.npy", m, "sample_submission.csv"),
        (test_audio, "x_test_sp.npy", m, "sample_submission.csv"),
    ]:
        if len(arr) != want:
            raise UserError(
                f"{root / name}: {len(arr)} rows but {other} has {want}; fix: the files must describe the same rows"
            )
    if n == 0 or m == 0:
        raise UserError(f"{root}: no training or no test rows; fix the files")
    # Labels and ids in array order; test arrays in the sample submission's order (the order written out).
    train_row = _row_of(labels, root / "y_train.csv", "x_train_wr.npy / x_train_sp.npy")
    test_row = _row_of(sample, root / "sample_submission.csv", "x_test_wr.npy / x_test_sp.npy")
    y, row_ids = np.empty(n, dtype=np.int64), labels["row_id"].to_numpy().copy()
    y[train_row], row_ids[train_row] = _labels(labels, root / "y_train.csv"), labels["row_id"].to_numpy()
    if (test_row != np.arange(m)).any():
        test_image, test_audio = test_image[test_row], test_audio[test_row]
    if len(np.unique(y)) < 2:
        raise UserError(f"{root / 'y_train.csv'}: only one class present; fix: a classifier needs several classes")

    image, test_image = _scaled_images(image, test_image, root)
    return Competition(
        root=root,
        image=image,
        audio=audio.astype(np.float32),
        y=y,
        row_ids=row_ids,
        test_image=test_image,
        test_audio=test_audio.astype(np.float32),
        sample_submission=sample,
        fingerprint=fingerprint_files(root),
    )


def fit_audio_scaler(audio: np.ndarray, train_idx: np.ndarray) -> StandardScaler:
    """Standardise each MFCC feature with statistics of the fold's training rows only (no leakage)."""
    return StandardScaler().fit(audio[train_idx])


def duplicate_ids(x: np.ndarray) -> np.ndarray:
    """(N,) id of each row's distinct value: equal ids <=> byte-identical feature rows."""
    _, inverse = np.unique(np.ascontiguousarray(x), axis=0, return_inverse=True)
    return inverse.reshape(-1)


def duplicate_groups(*modalities: np.ndarray) -> np.ndarray:
    """(N,) group id: rows sharing an exact duplicate in any modality (transitively) share a group."""
    n = len(modalities[0])
    rows, cols = [], []
    for x in modalities:
        ids = duplicate_ids(x)
        first = np.full(ids.max() + 1, -1)
        first[ids[::-1]] = np.arange(n)[::-1]  # first row holding each distinct value
        rows.append(np.arange(n))
        cols.append(first[ids])  # edge: row -> first row with the same value
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def duplicate_summary(comp: Competition) -> dict[str, dict[str, int]]:
    """How many rows, distinct rows and duplicated rows each modality has, and the test rows seen in train."""
    out = {}
    for name, train, test in [("image", comp.image, comp.test_image), ("audio", comp.audio, comp.test_audio)]:
        ids = duplicate_ids(np.concatenate([train, test]))
        tr, te = ids[: len(train)], ids[len(train) :]
        counts = np.bincount(tr)
        out[name] = {
            "rows": len(train),
            "distinct": int((counts > 0).sum()),
            "rows_in_duplicate_sets": int(counts[tr].__gt__(1).sum()),
            "test_rows_seen_in_train": int(np.isin(te, tr).sum()),
        }
    return out


def write_subset(dest: Path, n_train: int, n_test: int, src: Path = DEFAULT_DATA) -> Path:
    """Write the first rows of a competition folder to ``dest`` (same files, layout and dtypes): a smaller
    problem for tests and quick benchmarks."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, n in [("x_train_wr", n_train), ("x_train_sp", n_train), ("x_test_wr", n_test), ("x_test_sp", n_test)]:
        np.save(dest / f"{name}.npy", np.load(src / f"{name}.npy", mmap_mode="r")[:n].copy())
    pd.read_csv(src / "y_train.csv").iloc[:n_train].to_csv(dest / "y_train.csv", index=False)
    pd.read_csv(src / "sample_submission.csv").iloc[:n_test].to_csv(dest / "sample_submission.csv", index=False)
    return dest
