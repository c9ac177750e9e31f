"""Data: load and validate a competition folder into one ``Competition`` (images scaled to [0, 1]).

A competition folder holds ``x_train_wr.npy`` (N, 784) images, ``x_train_sp.npy`` (N, 507) MFCCs,
``y_train.csv`` (row_id, label), ``x_test_wr.npy`` / ``x_test_sp.npy`` (M rows) and
``sample_submission.csv`` (row_id, label). Every problem is a ``UserError`` naming the file and the fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from competition.utils.errors import UserError
from competition.utils.paths import default_data
from competition.utils.validation import check_columns, check_labels, check_unique_ids, read_array, read_csv

# The shapes of the competition's arrays (the models are built for them).
IMAGE_SIDE = 28
IMAGE_WIDTH = IMAGE_SIDE * IMAGE_SIDE  # 784 pixels
AUDIO_FRAMES, AUDIO_COEFS = 39, 13
AUDIO_WIDTH = AUDIO_FRAMES * AUDIO_COEFS  # 507: 39 frames x 13 MFCC coefficients, frame-major
N_CLASSES = 10

FILES = ("x_train_wr.npy", "x_train_sp.npy", "y_train.csv", "x_test_wr.npy", "x_test_sp.npy", "sample_submission.csv")
IMAGE_LAYOUT = (IMAGE_SIDE, IMAGE_SIDE)
AUDIO_LAYOUT = (AUDIO_FRAMES, AUDIO_COEFS)  # 39 frames x 13 MFCC coefficients, frame-major when flattened


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

    @property
    def n_train(self) -> int:
        return len(self.y)

    @property
    def n_test(self) -> int:
        return len(self.test_image)


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


def _read_id_label_csv(path: Path) -> pd.DataFrame:
    df = read_csv(path, fix_missing="fix: point --data at a folder holding the six competition files")
    check_columns(df, path, ["row_id", "label"])
    check_unique_ids(df["row_id"], path)
    return df


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


def load_competition(root: str | Path | None = None) -> Competition:
    """Load and validate a competition folder; raise ``UserError`` naming the file and fix on any problem."""
    root = default_data() if root is None else Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found; fix: pass --data DIR with the six competition files")
    image = read_array(root / "x_train_wr.npy", IMAGE_LAYOUT, "28x28 images")
    audio = read_array(root / "x_train_sp.npy", AUDIO_LAYOUT, "39x13 MFCCs (frames x coefficients)")
    test_image = read_array(root / "x_test_wr.npy", IMAGE_LAYOUT, "28x28 images")
    test_audio = read_array(root / "x_test_sp.npy", AUDIO_LAYOUT, "39x13 MFCCs (frames x coefficients)")
    labels = _read_id_label_csv(root / "y_train.csv")
    sample = _read_id_label_csv(root / "sample_submission.csv")

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
    y[train_row], row_ids[train_row] = (
        check_labels(labels["label"], labels["row_id"], root / "y_train.csv"),
        labels["row_id"].to_numpy(),
    )
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


def normalise_audio(audio: np.ndarray, how: str = "none") -> np.ndarray:
    """(N, 507) -> (N, 507): ``how="utterance"`` subtracts each coefficient's mean over the row's 39 frames (cepstral
    mean normalisation, a per-row transform: nothing is fit, so no leakage); ``"none"`` returns ``audio`` itself."""
    if how == "none":
        return audio
    frames = audio.reshape(len(audio), AUDIO_FRAMES, AUDIO_COEFS)  # (N, 39, 13), frame-major
    return (frames - frames.mean(axis=1, keepdims=True)).reshape(len(audio), AUDIO_WIDTH).astype(audio.dtype)


def fit_audio_scaler(audio: np.ndarray, train_idx: np.ndarray) -> StandardScaler:
    """Standardise each MFCC feature with statistics of the fold's training rows only (no leakage)."""
    return StandardScaler().fit(audio[train_idx])


def write_subset(dest: Path, n_train: int, n_test: int, src: Path | None = None) -> Path:
    """Write the first rows of a competition folder to ``dest`` (same files, layout and dtypes): a smaller
    problem for tests and quick benchmarks."""
    src = default_data() if src is None else Path(src)
    dest.mkdir(parents=True, exist_ok=True)
    for name, n in [("x_train_wr", n_train), ("x_train_sp", n_train), ("x_test_wr", n_test), ("x_test_sp", n_test)]:
        np.save(dest / f"{name}.npy", np.load(src / f"{name}.npy", mmap_mode="r")[:n].copy())
    pd.read_csv(src / "y_train.csv").iloc[:n_train].to_csv(dest / "y_train.csv", index=False)
    pd.read_csv(src / "sample_submission.csv").iloc[:n_test].to_csv(dest / "sample_submission.csv", index=False)
    return dest
