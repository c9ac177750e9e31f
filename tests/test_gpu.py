"""The GPU path: several unit processes on one cuda device, and cv on cuda against cv on CPU (tests marked ``gpu``
run only where torch sees a CUDA GPU; see tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from competition.config import load_config
from competition.metrics import scores
from competition.store.loading import load_run
from competition.train import cv, executor

TINY = {"epochs": 1, "folds": 2, "batch_size": 32}


def test_workers_share_one_cuda_device_when_asked():
    assert executor.plan_workers(load_config(None, {}), "cuda", 15) == (1, 1)  # default: one process owns the GPU
    assert executor.plan_workers(load_config(None, {"workers": 4}), "cuda", 15) == (4, 1)
    assert executor.plan_workers(load_config(None, {"workers": 4}), "cuda", 2) == (2, 1)  # never more than the units


@pytest.mark.gpu
def test_cv_on_cuda_matches_cpu_within_noise(tiny_data, tmp_path):
    from competition.data.load import load_competition

    y = load_competition(tiny_data).y
    cpu = cv.run_cv(load_config(None, TINY | {"device": "cpu", "workers": 1}), tiny_data, tmp_path, "cpu", quiet=True)
    gpu = cv.run_cv(load_config(None, TINY | {"device": "cuda", "workers": 2}), tiny_data, tmp_path, "gpu", quiet=True)
    oof_cpu, oof_gpu = load_run(cpu.run_dir, len(y)).oof, load_run(gpu.run_dir, len(y)).oof
    for m in oof_cpu:
        # Same seeds, data order and augmentation (CPU generator), but dropout masks come from the device's own
        # generator, so the models differ by more than float rounding: the old check (95% of the predictions
        # equal, logits within 0.1) failed on an H100. Compare what must hold: finite logits, a similar score.
        assert oof_gpu[m].shape == oof_cpu[m].shape and np.isfinite(oof_gpu[m]).all(), m
        assert abs(scores(y, oof_cpu[m])["macro_f1"] - scores(y, oof_gpu[m])["macro_f1"]) <= 0.1, m
