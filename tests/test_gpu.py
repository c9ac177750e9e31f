"""The GPU path: several unit processes on one cuda device, and cv on cuda against cv on CPU (tests marked ``gpu``
run only where torch sees a CUDA GPU; see tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

from competition.config import load_config
from competition.store.loading import load_run
from competition.train import cv, executor

TINY = {"epochs": 1, "folds": 2, "batch_size": 32}


def test_workers_share_one_cuda_device_when_asked():
    assert executor.plan_workers(load_config(None, {}), "cuda", 15) == (1, 1)  # default: one process owns the GPU
    assert executor.plan_workers(load_config(None, {"workers": 4}), "cuda", 15) == (4, 1)
    assert executor.plan_workers(load_config(None, {"workers": 4}), "cuda", 2) == (2, 1)  # never more than the units


@pytest.mark.gpu
def test_cv_on_cuda_trains_the_same_models_as_on_cpu(tiny_data, tmp_path):
    """Two unit processes on one cuda device train the models a CPU run trains, up to float rounding.

    Data order and augmentation come from the CPU generator on both devices; dropout masks come from the device's
    own generator, so dropout is off here: what is left to differ is float rounding (cuDNN kernels, TF32 convolutions).
    A cuda path that trained on other rows, another seed or not at all parts from the CPU logits by far more."""
    import json

    from competition.data.load import load_competition

    same = TINY | {"epochs": 2, "image_dropout": 0.0, "audio_dropout": 0.0, "modality_dropout": 0.0}
    y = load_competition(tiny_data).y
    cpu = cv.run_cv(load_config(None, same | {"device": "cpu", "workers": 1}), tiny_data, tmp_path, "cpu", quiet=True)
    gpu = cv.run_cv(load_config(None, same | {"device": "cuda", "workers": 2}), tiny_data, tmp_path, "gpu", quiet=True)
    assert json.loads((gpu.run_dir / "environment.json").read_text())["device"] == "cuda"
    oof_cpu, oof_gpu = load_run(cpu.run_dir, len(y)).oof, load_run(gpu.run_dir, len(y)).oof
    assert sorted(oof_gpu) == sorted(oof_cpu) == ["audio", "fusion", "image"]
    for m in oof_cpu:
        c, g = oof_cpu[m], oof_gpu[m]
        assert g.shape == c.shape and np.isfinite(g).all(), m
        scale = np.abs(c).max()
        assert np.abs(g - c).max() <= 0.05 * scale, (m, np.abs(g - c).max(), scale)  # rounding, not other models
        assert (g.argmax(1) == c.argmax(1)).mean() >= 0.95, m
    other = cv.run_cv(load_config(None, same | {"device": "cpu", "workers": 1, "seed": 1}), tiny_data, tmp_path / "o",
                      "seed1", quiet=True)  # fmt: skip
    seed1 = load_run(other.run_dir, len(y)).oof["fusion"]
    # the tolerance above is tighter than what separates two seeds' models: the check can fail
    assert np.abs(seed1 - oof_cpu["fusion"]).max() > 0.05 * np.abs(oof_cpu["fusion"]).max()
