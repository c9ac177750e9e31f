"""Prediction files in the convention notebooks and Kaggle kernels load: per model of a finished cv run,
``<model>/oof.npy`` (training rows x classes out-of-fold probabilities, in training row order) and
``<model>/test.npy`` (test rows x classes probabilities, the mean of the folds' probabilities).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from scipy.special import softmax

from competition.store.atomic import write_bytes

OOF_FILE = "oof.npy"
TEST_FILE = "test.npy"


def write_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` written atomically (readers never see half a file)."""
    buf = io.BytesIO()
    np.save(buf, array)
    write_bytes(path, buf.getvalue())


def write_prediction_files(model_dir: Path, oof_logits: np.ndarray, test_logits: np.ndarray) -> None:
    """``oof.npy`` from the (N, C) out-of-fold logits and ``test.npy`` from the (K, M, C) fold test logits."""
    if not np.isfinite(oof_logits).all():
        raise ValueError(f"{model_dir}: out-of-fold logits are missing rows; write only finished models")
    write_npy(model_dir / OOF_FILE, softmax(oof_logits, axis=1).astype(np.float32))
    write_npy(model_dir / TEST_FILE, softmax(test_logits, axis=2).mean(axis=0).astype(np.float32))
