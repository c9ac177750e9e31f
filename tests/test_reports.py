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
from rich.progress import Progress
from sklearn.metrics import confusion_matrix, f1_score

from competition.cli import main
from competition.config import load_config
from competition.data.load import load_competition
from competition.reporting import figures
from competition.reporting.analysis import build_report
from competition.reporting.embeddings import cluster_scores, fusion_embeddings, tsne_2d
from competition.store.atomic import write_npz
from competition.store.loading import load_run
from competition.store.runs import find_run, read_run_config
from competition.train.cv import run_cv


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_src):
    """One workdir with a tiny run of the fusion and image models (1 epoch, 2 folds), and the same run without its
    fusion model (a copy: the report reads fold files, so no second training run is needed)."""
    workdir = tmp_path_factory.mktemp("report_wd")
    cfg = load_config(None, {"epochs": 1, "folds": 2, "workers": 1, "models": ["fusion", "image"], "split": "grouped"})
    run_cv(cfg, tiny_src, workdir, "full", quiet=True)
    shutil.copytree(workdir / "full", workdir / "nofusion")
    shutil.rmtree(workdir / "nofusion" / "fusion")
    config = workdir / "nofusion" / "config.json"
    saved = json.loads(config.read_text())
    saved["config"]["models"] = ["image"]
    config.write_text(json.dumps(saved))
    return workdir


def check_figures(out_dir, report: dict) -> None:
    html = (out_dir / "index.html").read_text()
    assert sorted(set(re.findall(r"<img src='([^']+)'", html))) == sorted(report["figures"])
    assert sorted(p.name for p in out_dir.glob("*.png")) == sorted(report["figures"])
    for name in report["figures"]:
        img = imread(out_dir / name)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
        assert img.std() > 0  # not a blank canvas


def check_models(report: dict, run_dir, models: list[str]) -> None:
    """Each model's numbers are those of its fold files and histories, computed here another way."""
    y = load_competition(Path(read_run_config(run_dir)["data"])).y
    oof = load_run(run_dir, len(y)).oof
    summary = json.loads((run_dir / "summary.json").read_text())["oof"]  # written by cv
    assert list(report["models"]) == models
    for m, e in report["models"].items():
        pred = oof[m].argmax(axis=1)
        assert e["folds"] == [0, 1] and e["oof_rows"] == len(y)
        assert e["oof_macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
        assert e["oof_macro_f1"] == pytest.approx(summary[m]["macro_f1"])
        assert e["oof_accuracy"] == pytest.approx((pred == y).mean())
        per_class = f1_score(y, pred, average=None, labels=range(10), zero_division=0)
        np.testing.assert_allclose(e["per_class_f1"], per_class)
        np.testing.assert_array_equal(e["confusion"], confusion_matrix(y, pred, labels=range(10)))
        last = pd.concat(pd.read_csv(p).tail(1) for p in sorted((run_dir / m).glob("fold*_history.csv")))
        assert e["last_epoch"]["val_accuracy"] == pytest.approx(last["val_accuracy"].mean())
        assert e["last_epoch"]["train_loss"] == pytest.approx(last["train_loss"].mean())
        assert set(e["figures"]) == {"curves", "confusion"}, m


def check_wrong_by_all(report: dict, run_dir, models: list[str]) -> None:
    y = load_competition(Path(read_run_config(run_dir)["data"])).y
    oof = load_run(run_dir, len(y)).oof
    wrong = np.all([oof[m].argmax(axis=1) != y for m in models], axis=0)
    w = report["wrong_by_all"]
    assert w["count"] == wrong.sum() and w["covered_rows"] == len(y) and len(w["rows"]) == w["count"]
    for row in w["rows"]:
        assert all(row[m] != row["label"] for m in models)
    assert (w["figure"] is not None) == (w["count"] > 0)


def test_report_of_a_fusion_run(runs, tiny_src):
    report = build_report(runs / "full", quiet=True)
    out = runs / "full" / "report"
    check_figures(out, report)
    check_models(report, runs / "full", ["fusion", "image"])
    check_wrong_by_all(report, runs / "full", ["fusion", "image"])
    assert "embeddings.png" in report["figures"]
    emb = report["embeddings"]
    assert list(emb) == ["image", "audio", "fused"]
    assert [emb[k]["dims"] for k in emb] == [64, 64, 128]
    # each fold's scores are KMeans of that fold model's embeddings of its own validation rows, recomputed here
    with Progress(disable=True) as progress:
        folds = fusion_embeddings(runs / "full", load_competition(tiny_src), 5000, 0, progress)
    assert [f.fold for f in folds] == [0, 1] and sum(len(f.rows) for f in folds) == 240
    for kind, v in emb.items():
        assert [p["fold"] for p in v["per_fold"]] == [0, 1]
        assert sum(p["rows"] for p in v["per_fold"]) == 240  # every out-of-fold row, under the default cap
        for p, f in zip(v["per_fold"], folds, strict=True):
            assert {k: p[k] for k in ("nmi", "ari")} == pytest.approx(cluster_scores(f.emb[kind], f.y, seed=0))
        assert v["nmi_mean"] == pytest.approx(np.mean([p["nmi"] for p in v["per_fold"]]))
    saved = json.loads((out / "report.json").read_text())
    assert saved["embeddings"] == emb and saved["figures"] == report["figures"]
    assert report["seconds"] > 0
    adv = json.loads((runs / "full" / "adversarial.json").read_text())["modalities"]  # written by cv
    assert report["adversarial"] == (adv or None)
    assert ("adversarial.png" in report["figures"]) == bool(adv)
    assert ("test_likeness.png" in report["figures"]) == bool(adv)


def test_report_draws_the_runs_adversarial_validation(runs, tmp_path):
    run = tmp_path / "nofusion"  # no fusion model: no embedding analysis, the slow part, to redo three times
    shutil.copytree(runs / "nofusion", run)
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
    check_models(report, runs / "nofusion", ["image"])
    check_wrong_by_all(report, runs / "nofusion", ["image"])
    assert report["embeddings"] is None
    assert not (out / "embeddings.png").exists()
    assert "no finished fusion model" in (out / "index.html").read_text()


def test_cli_caps_the_embedding_rows(runs, capsys):
    assert main(["report", "--workdir", str(runs), "--run", "full", "--max-rows", "60"]) == 0
    emb = json.loads((runs / "full" / "report" / "report.json").read_text())["embeddings"]
    assert all(sum(p["rows"] for p in v["per_fold"]) <= 60 for v in emb.values())
    printed = capsys.readouterr().out
    assert "fused (128-d)" in printed and "index.html" in printed


# --- the figures, drawn from fixed arrays ----------------------------------------------------------------------


def test_curves_figure_draws_each_fold_and_the_mean():
    hist = pd.DataFrame(
        {
            "fold": [0, 0, 0, 1, 1, 1],
            "epoch": [1, 2, 3, 1, 2, 3],
            "train_loss": [2.0, 1.0, 0.5, 2.2, 1.2, 0.7],
            "val_loss": [1.8, 1.1, 0.9, 2.0, 1.3, 1.1],
            "train_accuracy": [0.3, 0.6, 0.8, 0.2, 0.5, 0.7],
            "val_accuracy": [0.35, 0.55, 0.7, 0.3, 0.5, 0.6],
        }
    )
    fig = figures.curves_figure(hist, "fusion")
    for ax, metric in zip(fig.axes, ("loss", "accuracy"), strict=True):
        assert ax.get_title() == f"fusion: {metric}"
        lines = [ln.get_ydata() for ln in ax.get_lines()]
        assert len(lines) == 2 * (2 + 1)  # train and val: a line per fold and the mean
        for split in ("train", "val"):
            col = f"{split}_{metric}"
            assert any(np.allclose(y, hist[hist.fold == 0][col]) for y in lines)
            assert any(np.allclose(y, hist.groupby("epoch")[col].mean()) for y in lines)


def test_confusion_figure_shows_the_counts_and_per_class_f1():
    y = np.repeat(np.arange(10), 5)
    pred = y.copy()
    pred[:3] = 7  # three rows of class 0 called 7
    per_class = np.linspace(0.5, 1.0, 10)
    fig = figures.confusion_figure(y, pred, per_class, "image")
    ax_cm, ax_f1 = fig.axes[:2]
    np.testing.assert_array_equal(ax_cm.images[0].get_array(), confusion_matrix(y, pred, labels=range(10)))
    np.testing.assert_allclose([b.get_height() for b in ax_f1.patches], per_class)
    assert "50 rows" in ax_cm.get_title() and f"{per_class.mean():.4f}" in ax_f1.get_title()


def test_adversarial_and_test_likeness_figures():
    r = {"auc": 0.9, "auc_std": 0.02, "fold_aucs": [0.88, 0.92]}
    fig = figures.adversarial_figure({"image": r | {"auc": 0.55}, "audio": r}, 0.8)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["image", "audio"]
    np.testing.assert_allclose([b.get_width() for b in ax.patches], [0.05, 0.4])  # bars from 0.5 to the AUC
    assert any(np.allclose(ln.get_xdata(), 0.8) for ln in ax.get_lines())  # the split=auto threshold
    likeness = np.r_[np.full(30, 0.1), np.full(10, 0.9)]
    fig = figures.test_likeness_figure({"audio": likeness}, n_train=30)
    ax = fig.axes[0]
    train, test = ax.containers  # one histogram per side, densities over 40 bins of [0, 1]
    assert np.argmax([b.get_height() for b in train]) == 4 and np.argmax([b.get_height() for b in test]) == 36
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training rows (30)", "test rows (10)"]


def test_gallery_figure_shows_each_image_with_its_title(tmp_path):
    images = np.zeros((3, 784), dtype=np.float32)
    images[1, :28] = 1.0
    fig = figures.gallery_figure(images, ["a\nx", "b\ny", "c\nz"])
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["a\nx", "b\ny", "c\nz"]
    np.testing.assert_array_equal(shown[1].images[0].get_array(), images[1].reshape(28, 28))
    assert figures.save_png(fig, tmp_path / "g.png") == "g.png" and imread(tmp_path / "g.png").std() > 0


def test_clustering_and_tsne_are_seeded():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(10), 3)
    emb = rng.normal(size=(30, 8)) + 5 * np.eye(10)[y, :8]  # classes 0-7 separated, 8 and 9 mixed
    first = cluster_scores(emb, y, seed=1)
    assert first == cluster_scores(emb, y, seed=1)
    assert cluster_scores(10 * np.eye(10)[y], y, seed=1) == {"nmi": 1.0, "ari": 1.0}  # one cluster per class
    noise = cluster_scores(rng.normal(size=(30, 8)), y, seed=1)
    assert first["nmi"] > noise["nmi"] + 0.2 and first["ari"] > noise["ari"] + 0.4  # separated classes score higher
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
