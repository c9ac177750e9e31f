"""Shared fixtures: tiny competition folders cut from the shipped data, so tests take seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from competition.data.load import FILES, write_subset

ROOT = Path(__file__).resolve().parent.parent  # the repository: where run.py is


def one_hot_logits(labels: np.ndarray, margin: float) -> np.ndarray:
    """Logits that put ``margin`` on each row's label and 0 elsewhere."""
    out = np.zeros((len(labels), 10))
    out[np.arange(len(labels)), labels] = margin
    return out


def make_competition(dest: Path, n_train: int = 240, n_test: int = 60, src: Path | None = None) -> Path:
    """The first rows of the shipped competition in ``dest`` (same layout, same dtypes)."""
    return write_subset(dest, n_train, n_test, src)


@pytest.fixture(scope="session")
def root() -> Path:
    """The repository root, the working directory of ``run.py`` subprocesses."""
    return ROOT


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


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` run only where torch sees a CUDA GPU."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
