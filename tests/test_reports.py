"""``python run.py report`` end to end on tiny CV runs: every listed PNG exists and opens, the numbers are in range,
a run without the fusion model still reports the rest, and bad input is one line and exit code 2."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_competition
from matplotlib.image import imread

from competition.cli import main
from competition.config import load_config
from competition.reporting.analysis import build_report
from competition.reporting.embeddings import cluster_scores, tsne_2d
from competition.store.atomic import write_npz
from competition.store.runs import find_run, read_run_config
from competition.train.cv import run_cv


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_src):
    """One workdir with a tiny run of all three models and one of the baselines only (1 epoch, 2 folds)."""
    workdir = tmp_path_factory.mktemp("report_wd")
    cfg = load_config(None, {"epochs": 1, "folds": 2, "workers": 1})
    run_cv(cfg, tiny_src, workdir, "full", quiet=True)
    cfg = load_config(None, {"epochs": 1, "folds": 2, "workers": 1, "models": ["image", "audio"]})
    run_cv(cfg, tiny_src, workdir, "nofusion", quiet=True)
    return workdir


def check_figures(out_dir, report: dict) -> None:
    html = (out_dir / "index.html").read_text()
    assert sorted(set(re.findall(r"<img src='([^']+)'", html))) == sorted(report["figures"])
    assert sorted(p.name for p in out_dir.glob("*.png")) == sorted(report["figures"])
    for name in report["figures"]:
        img = imread(out_dir / name)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
        assert img.std() > 0  # not a blank canvas


def check_models(report: dict, n_train: int, models: list[str]) -> None:
    assert list(report["models"]) == models
    for m, e in report["models"].items():
        assert e["folds"] == [0, 1]
        assert e["oof_rows"] == n_train
        assert 0 <= e["oof_macro_f1"] <= 1 and 0 <= e["oof_accuracy"] <= 1
        assert len(e["per_class_f1"]) == 10 and all(0 <= v <= 1 for v in e["per_class_f1"])
        cm = np.array(e["confusion"])
        assert cm.shape == (10, 10) and cm.sum() == n_train
        assert np.trace(cm) / n_train == pytest.approx(e["oof_accuracy"])
        assert e["last_epoch"]["train_loss"] > 0 and 0 <= e["last_epoch"]["val_accuracy"] <= 1
        assert set(e["figures"]) == {"curves", "confusion"}, m


def check_wrong_by_all(report: dict, models: list[str]) -> None:
    w = report["wrong_by_all"]
    assert 0 <= w["count"] <= w["covered_rows"] and len(w["rows"]) == w["count"]
    for row in w["rows"]:
        assert all(row[m] != row["label"] for m in models)
    assert (w["figure"] is not None) == (w["count"] > 0)


def test_report_of_a_fusion_run(runs, tiny_src):
    report = build_report(runs / "full", quiet=True)
    out = runs / "full" / "report"
    check_figures(out, report)
    check_models(report, 240, ["fusion", "image", "audio"])
    check_wrong_by_all(report, ["fusion", "image", "audio"])
    assert "embeddings.png" in report["figures"]
    emb = report["embeddings"]
    assert list(emb) == ["image", "audio", "fused"]
    assert [emb[k]["dims"] for k in emb] == [64, 64, 128]
    for v in emb.values():
        assert [p["fold"] for p in v["per_fold"]] == [0, 1]
        assert sum(p["rows"] for p in v["per_fold"]) == 240  # every out-of-fold row, under the default cap
        for p in v["per_fold"]:
            assert 0 <= p["nmi"] <= 1 and -1 <= p["ari"] <= 1
        assert v["nmi_mean"] == pytest.approx(np.mean([p["nmi"] for p in v["per_fold"]]))
    saved = json.loads((out / "report.json").read_text())
    assert saved["embeddings"] == emb and saved["figures"] == report["figures"]
    assert report["seconds"] > 0
    adv = json.loads((runs / "full" / "adversarial.json").read_text())["modalities"]  # written by cv
    assert report["adversarial"] == (adv or None)
    assert ("adversarial.png" in report["figures"]) == bool(adv)
    assert ("test_likeness.png" in report["figures"]) == bool(adv)


def test_report_draws_the_runs_adversarial_validation(runs, tmp_path):
    run = tmp_path / "full"
    shutil.copytree(runs / "full", run)
    r = {"auc": 0.93, "auc_std": 0.02, "fold_aucs": [0.91, 0.95], "rows": 300}
    modalities = {"image": r | {"modality": "image", "auc": 0.52}, "audio": r | {"modality": "audio"}}
    fingerprint = read_run_config(run)["data_fingerprint"]
    (run / "adversarial.json").write_text(json.dumps({"data_fingerprint": fingerprint, "modalities": modalities}))
    (run / "adversarial.npz").unlink()  # a run saved before the test-likeness: the AUCs alone
    report = build_report(run, quiet=True)
    assert report["adversarial"] == modalities and "adversarial.png" in report["figures"]
    assert report["test_likeness"] is None and "test_likeness.png" not in report["figures"]
    check_figures(run / "report", report)
    assert "Train vs test (adversarial validation)" in (run / "report" / "index.html").read_text()
    n = 240 + len(pd.read_csv(Path(read_run_config(run)["data"]) / "sample_submission.csv"))
    likeness = np.r_[np.full(240, 0.2), np.full(n - 240, 0.8)].astype(np.float32)
    write_npz(run / "adversarial.npz", image=likeness, audio=likeness)
    report = build_report(run, quiet=True)
    like = report["test_likeness"]["audio"]
    assert like["train_mean"] == pytest.approx(0.2) and like["test_mean"] == pytest.approx(0.8)
    assert like["train_share_as_test_like_as_median_test_row"] == 0 and list(like["per_fold"]) == ["0", "1"]
    assert "test_likeness.png" in report["figures"] and "Test-likeness" in (run / "report" / "index.html").read_text()
    (run / "adversarial.json").unlink()  # a run made before cv saved it: no section, no figure
    report = build_report(run, quiet=True)
    assert report["adversarial"] is None and not (run / "report" / "adversarial.png").exists()
    assert not (run / "report" / "test_likeness.png").exists()


def test_report_without_fusion_reports_the_rest(runs):
    report = build_report(runs / "nofusion", quiet=True)
    out = runs / "nofusion" / "report"
    check_figures(out, report)
    check_models(report, 240, ["image", "audio"])
    check_wrong_by_all(report, ["image", "audio"])
    assert report["embeddings"] is None
    assert not (out / "embeddings.png").exists()
    assert "no finished fusion model" in (out / "index.html").read_text()


def test_cli_caps_the_embedding_rows(runs, capsys):
    assert main(["report", "--workdir", str(runs), "--run", "full", "--max-rows", "60"]) == 0
    emb = json.loads((runs / "full" / "report" / "report.json").read_text())["embeddings"]
    assert all(sum(p["rows"] for p in v["per_fold"]) <= 60 for v in emb.values())
    printed = capsys.readouterr().out
    assert "fused (128-d)" in printed and "index.html" in printed


def test_clustering_and_tsne_are_seeded():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 3)
    emb = rng.normal(size=(30, 8)) + 5 * np.eye(10)[y, :8]  # classes 0-7 separated, 8 and 9 mixed
    first = cluster_scores(emb, y, seed=1)
    assert first == cluster_scores(emb, y, seed=1)
    assert 0 < first["nmi"] <= 1 and -1 <= first["ari"] <= 1
    np.testing.assert_array_equal(tsne_2d(emb, seed=1), tsne_2d(emb, seed=1))


def _touch_folds(run_dir, t):
    for path in run_dir.glob("*/fold*.npz"):
        os.utime(path, (t, t))


def test_default_run_is_the_latest_finished(runs):
    _touch_folds(runs / "full", 1_000_000)
    _touch_folds(runs / "nofusion", 2_000_000)
    assert find_run(runs, None) == runs / "nofusion"
    _touch_folds(runs / "full", 3_000_000)
    assert find_run(runs, None) == runs / "full"


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys):
    assert main(["report", "--workdir", str(runs), "--run", "nope"]) == 2
    assert "--run nope" in capsys.readouterr().err
    assert main(["report", "--workdir", str(tmp_path / "empty")]) == 2
    assert "workdir not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", "--workdir", str(tmp_path / "empty")]) == 2
    assert "no cv runs" in capsys.readouterr().err
    other = make_competition(tmp_path / "other", n_train=100, n_test=20)
    assert main(["report", "--workdir", str(runs), "--run", "full", "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "run 'full' was made on data" in err and err.count("\n") == 1
    assert main(["report", "--workdir", str(runs), "--run", "full", "--max-rows", "5"]) == 2
    assert "--max-rows 5" in capsys.readouterr().err
    assert main(["report", "--workdir", str(runs), "--run", "full", "--max-rows", "40"]) == 2  # 20 rows a fold
    assert "fix: pass --max-rows 60 or more" in capsys.readouterr().err
