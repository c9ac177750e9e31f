"""Full-data refits (``submit --full``): deterministic per seed, resumable after Ctrl-C, recorded in the manifest."""

from __future__ import annotations

import json

import numpy as np
from scipy.special import log_softmax, softmax

import competition.train.refit as refit
from competition.data.load import load_competition
from competition.store.atomic import write_json
from competition.store.runs import read_run_config
from competition.train import unit
from tests.test_submit import fake_run, submit


def trainable_run(workdir, data, name="r1"):
    """A fake cv run (made-up fold logits) whose config trains the audio model for one epoch on the CPU."""
    run = fake_run(workdir, name, data, models=("audio",))
    meta = read_run_config(run)
    meta["config"] |= {"epochs": 1, "workers": 1, "device": "cpu", "batch_size": 64}
    write_json(run / "config.json", meta)
    return run


def test_same_seed_same_refit_predictions_and_other_seeds_differ(tmp_path, tiny_data):
    comp = load_competition(tiny_data)
    a, b = trainable_run(tmp_path / "a", tiny_data), trainable_run(tmp_path / "b", tiny_data)
    pa = refit.refit_run(a, read_run_config(a), comp, ["audio"], 2, quiet=True)["audio"]
    pb = refit.refit_run(b, read_run_config(b), comp, ["audio"], 1, quiet=True)["audio"]
    assert pa.shape == (2, comp.n_test, 10)
    np.testing.assert_array_equal(pa[0], pb[0])
    assert not np.allclose(pa[0], pa[1])
    assert refit.refit_seed(0, "audio", 0) != refit.refit_seed(0, "audio", 1)


def test_interrupted_refit_keeps_finished_seeds_and_resumes(tmp_path, tiny_data, monkeypatch, capsys):
    run = trainable_run(tmp_path / "wd", tiny_data)
    fits, real = [], unit.Learner

    class Interrupted(unit.Learner):
        def fit(self, *args, **kwargs):
            fits.append(self.seed)
            if len(fits) == 2:
                raise KeyboardInterrupt  # Ctrl-C during the second seed
            return super().fit(*args, **kwargs)

    monkeypatch.setattr(unit, "Learner", Interrupted)
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub", "--full", "--seeds", "2") == 130
    assert refit.refit_path(run, "audio", 0).is_file() and not refit.refit_path(run, "audio", 1).exists()
    assert not list((run / "audio").glob(".*.tmp")) and not list((tmp_path / "sub").glob("*"))
    first = np.load(refit.refit_path(run, "audio", 0))["test_logits"]

    fits.clear()
    monkeypatch.setattr(unit, "Learner", real)
    assert submit(tmp_path / "wd", tiny_data, tmp_path / "sub", "--full", "--seeds", "2", "--name", "f") == 0
    assert "1 finished, 1 to train" in " ".join(capsys.readouterr().out.split())
    np.testing.assert_array_equal(np.load(refit.refit_path(run, "audio", 0))["test_logits"], first)  # kept
    manifest = json.loads((tmp_path / "sub" / "f.json").read_text())
    assert manifest["test_predictions"]["r1/audio"].startswith("full-data refits (2 seeds")
    assert "refits" in manifest["seconds"]
    # the test rows are predicted from the refits, not from the fold models (whose made-up logits say i % 10)
    comp = load_competition(tiny_data)
    fresh = trainable_run(tmp_path / "fresh", tiny_data)
    expected = refit.refit_run(fresh, read_run_config(fresh), comp, ["audio"], 2, quiet=True)["audio"]
    written = np.stack([np.load(refit.refit_path(run, "audio", s))["test_logits"] for s in (0, 1)])
    np.testing.assert_array_equal(written, expected)
    probs = np.load(tmp_path / "sub" / "f.probs.npz")["probs"]
    np.testing.assert_allclose(probs, softmax(log_softmax(expected, axis=2).mean(0), axis=1), atol=1e-6)
