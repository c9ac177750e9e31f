"""Shared fixtures: tiny competition folders cut from the shipped data, so tests take seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.data import DEFAULT_DATA, FILES


def make_competition(dest: Path, n_train: int = 240, n_test: int = 60, src: Path = DEFAULT_DATA) -> Path:
    """Write the first rows of the shipped competition to ``dest`` (same layout, same dtypes)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, n in [("x_train_wr", n_train), ("x_train_sp", n_train), ("x_test_wr", n_test), ("x_test_sp", n_test)]:
        np.save(dest / f"{name}.npy", np.load(src / f"{name}.npy", mmap_mode="r")[:n].copy())
    pd.read_csv(src / "y_train.csv").iloc[:n_train].to_csv(dest / "y_train.csv", index=False)
    pd.read_csv(src / "sample_submission.csv").iloc[:n_test].to_csv(dest / "sample_submission.csv", index=False)
    return dest


@pytest.fixture(scope="session")
def tiny_src(tmp_path_factory) -> Path:
    return make_competition(tmp_path_factory.mktemp("tiny_src"))


@pytest.fixture
def tiny_data(tmp_path, tiny_src) -> Path:
    """A fresh, writable copy of the tiny competition (tests may break its files)."""
    dest = tmp_path / "data"
    dest.mkdir()
    for name in FILES:
        shutil.copy(tiny_src / name, dest / name)
    return dest
