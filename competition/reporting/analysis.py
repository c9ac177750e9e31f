"""Report: figures and numbers of a finished CV run, written to ``<run>/report/`` (PNGs, index.html, report.json).

Per model: training / validation loss and accuracy per epoch over the folds (mean, min-max band, each fold),
the out-of-fold confusion matrix and per-class F1. For the fusion model: the image (64-d), audio (64-d) and
fused (128-d) embeddings of the out-of-fold rows, clustered with KMeans (k = 10) and scored with NMI / ARI
against the labels, and projected to 2-D with t-SNE. Finally a gallery of the rows every model gets wrong.

Each fold's fusion model has its own embedding space (features are not aligned across folds), so the
embedding analysis runs per fold, on that fold's validation rows with that fold's model, and the headline
NMI / ARI is the mean over the folds. This module computes; ``figures.py`` draws and shows.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from scipy.special import softmax
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
)

from competition.data.load import N_CLASSES, Competition, load_competition
from competition.metrics import accuracy, macro_f1
from competition.reporting.embeddings import analyse_embeddings, fusion_embeddings
from competition.reporting.figures import (
    CLASSES,
    GALLERY_MAX,
    adversarial_figure,
    confusion_figure,
    curves_figure,
    embeddings_figure,
    gallery_figure,
    print_summary,
    render_html,
    save_png,
    test_likeness_figure,
)
from competition.splits.adversarial import load as load_adversarial
from competition.splits.kinds import CLUSTER_AUC
from competition.store.atomic import environment, write_json, write_text
from competition.store.loading import Run, load_run
from competition.store.runs import check_same_data, missing_folds, model_seeds, read_run_config, unit_files
from competition.utils.console import console
from competition.utils.errors import UserError

REPORT_DIR = "report"
DEFAULT_MAX_ROWS = 5000  # out-of-fold rows in the embedding analysis: t-SNE time grows with the rows


# --------------------------------------------------------------------------- run contents


def _model_order(names) -> list[str]:
    """The fusion model first, then the baselines, then any other model, alphabetically."""
    preferred = ["fusion", "image", "audio"]
    return sorted(names, key=lambda m: (preferred.index(m) if m in preferred else len(preferred), m))


def load_histories(run_dir: Path, model: str) -> pd.DataFrame:
    """Every fold's per-epoch history of one model, with a ``fold`` column."""
    frames = [pd.read_csv(path).assign(fold=k) for k, path in unit_files(run_dir / model, "fold*_history.csv")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def build_report(
    run_dir: Path, data_dir: Path | None = None, max_rows: int = DEFAULT_MAX_ROWS, quiet: bool = False
) -> dict:
    """Write ``run_dir/report/`` (PNGs, index.html, report.json) and return the report's numbers."""
    t0 = time.perf_counter()
    if max_rows < N_CLASSES * 3:
        raise UserError(f"--max-rows {max_rows}: too few rows to cluster; fix: pass at least {N_CLASSES * 3}")
    saved = read_run_config(run_dir)
    seed = int(saved["config"].get("seed", 0))
    comp = load_competition(Path(data_dir or saved["data"]))
    check_same_data(run_dir, saved, comp, f"pass --data {saved['data']}")
    run = load_run(run_dir, comp.n_train, y=comp.y)
    if not run.models:
        raise UserError(f"{run_dir}: no finished (model, fold) units; fix: run `python run.py cv` first")
    missing = missing_folds(run_dir, saved)
    if missing:
        what = "; ".join(f"{m} fold(s) {','.join(map(str, f))}" for m, f in missing.items())
        console.print(
            f"[yellow]warning:[/] run {run_dir.name!r} is unfinished: {what} of {saved['config']['folds']} missing; "
            f"the report covers the finished ones; fix: finish it with `run.py cv --run {run_dir.name}` (same flags)"
        )
    out_dir = run_dir / REPORT_DIR
    models = _model_order(run.models)
    report: dict = {"run": str(run_dir), "data": str(comp.root), "missing": missing, "models": {}, "figures": []}

    for m in models:
        oof = run.oof[m]
        have = np.flatnonzero(~np.isnan(oof).any(axis=1))  # rows of the finished folds
        y, pred = comp.y[have], oof[have].argmax(axis=1)
        per_class = f1_score(y, pred, average=None, labels=CLASSES, zero_division=0)
        hist = load_histories(run_dir, m)
        last = hist[hist["epoch"] == hist.groupby("fold")["epoch"].transform("max")] if len(hist) else hist
        entry = {
            "folds": sorted(r.fold for r in run.folds[m]),
            "oof_rows": len(have),
            "seeds": model_seeds(saved["config"], m),  # seed bagging: each fold's logits the mean of this many
            "oof_macro_f1": macro_f1(y, pred),
            "oof_accuracy": accuracy(y, pred),
            "per_class_f1": [float(v) for v in per_class],
            "confusion": confusion_matrix(y, pred, labels=CLASSES).tolist(),
            # numeric columns with a value (early stopping adds a phase, and no inner scores in the decay phase)
            "last_epoch": {
                c: float(last[c].mean())
                for c in last.select_dtypes("number").dropna(axis=1, how="all").columns
                if c not in ("epoch", "fold")
            },
            "figures": {},
        }
        if len(hist):
            entry["figures"]["curves"] = save_png(curves_figure(hist, m), out_dir / f"curves_{m}.png")
        confusion = confusion_figure(y, pred, per_class, m)
        entry["figures"]["confusion"] = save_png(confusion, out_dir / f"confusion_{m}.png")
        report["models"][m] = entry
        report["figures"] += list(entry["figures"].values())

    report["embeddings"] = None
    if "fusion" in run.oof:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=quiet, transient=True,
        ) as progress:  # fmt: skip
            folds = fusion_embeddings(run_dir, comp, max_rows, seed, progress)
            if folds:
                analysis = analyse_embeddings(folds, seed, progress)
                report["embeddings"] = analysis.summary
        if folds:
            report["embeddings_figure"] = save_png(embeddings_figure(folds[0], analysis), out_dir / "embeddings.png")
            report["embeddings_pictured_fold"] = folds[0].fold
            report["figures"].append(report["embeddings_figure"])

    adv = load_adversarial(run_dir / "adversarial.json", comp, need_rows=False) or {}  # written by cv
    report["adversarial"] = {m: r.summary() for m, r in adv.items()} or None
    if report["adversarial"]:
        figure = adversarial_figure(report["adversarial"], CLUSTER_AUC)
        report["adversarial_figure"] = save_png(figure, out_dir / "adversarial.png")
        report["figures"].append(report["adversarial_figure"])
    likeness = {m: r.test_likeness for m, r in adv.items() if r.test_likeness is not None}
    report["test_likeness"] = test_likeness_summary(likeness, comp.n_train, run.fold_of) if likeness else None
    if likeness:
        figure = test_likeness_figure(likeness, comp.n_train)
        report["test_likeness_figure"] = save_png(figure, out_dir / "test_likeness.png")
        report["figures"].append(report["test_likeness_figure"])

    report["wrong_by_all"] = _wrong_by_all(run, models, comp, out_dir)
    if report["wrong_by_all"]["figure"]:
        report["figures"].append(report["wrong_by_all"]["figure"])
    report["seconds"] = time.perf_counter() - t0
    report["environment"] = environment("cpu", seed)
    for old in out_dir.glob("*.png"):  # figures of an earlier report that this one did not draw
        if old.name not in report["figures"]:
            old.unlink()
    write_json(out_dir / "report.json", report)
    write_text(out_dir / "index.html", render_html(report))
    if not quiet:
        print_summary(report, out_dir)
    return report


def test_likeness_summary(likeness: dict[str, np.ndarray], n_train: int, fold_of: np.ndarray) -> dict:
    """Per modality: how test-like the training rows are (the adversarial classifier's probability that a row is a
    test row): mean over training and over test rows, the share of training rows at least as test-like as the
    median test row, and the mean over each validation fold's rows (a fold that looks like the test rows scores
    the models as the test will)."""
    out = {}
    for m, p in likeness.items():
        train, test = p[:n_train], p[n_train:]
        folds = sorted(set(fold_of[fold_of >= 0].tolist()))
        out[m] = {
            "train_mean": float(train.mean()),
            "test_mean": float(test.mean()),
            "train_share_as_test_like_as_median_test_row": float((train >= np.median(test)).mean()),
            "per_fold": {str(k): float(train[fold_of == k].mean()) for k in folds},
        }
    return out


def _wrong_by_all(run: Run, models: list[str], comp: Competition, out_dir: Path) -> dict:
    """Rows covered by every model's out-of-fold predictions that every model gets wrong, surest mistakes first."""
    covered = np.ones(comp.n_train, dtype=bool)
    for m in models:
        covered &= ~np.isnan(run.oof[m]).any(axis=1)
    preds = {m: run.oof[m].argmax(axis=1) for m in models}
    wrong = covered.copy()
    for m in models:
        wrong &= preds[m] != comp.y
    rows = np.flatnonzero(wrong)
    # Mean probability the models give the true label: the lowest are the most confident mistakes
    # (often label noise or unreadable digits).
    p_true = np.mean(
        [softmax(np.nan_to_num(run.oof[m][rows]), axis=1)[np.arange(len(rows)), comp.y[rows]] for m in models], axis=0
    )
    rows = rows[np.argsort(p_true, kind="stable")] if len(rows) else rows
    table = [
        {"row_id": comp.row_ids[r].item(), "label": int(comp.y[r]), **{m: int(preds[m][r]) for m in models}}
        for r in rows
    ]
    out = {"count": len(rows), "covered_rows": int(covered.sum()), "rows": table, "figure": None}
    if len(rows):
        shown = rows[:GALLERY_MAX]
        titles = [
            f"id {comp.row_ids[r]}: true {comp.y[r]}\n" + "\n".join(f"{m} {preds[m][r]}" for m in models) for r in shown
        ]
        out["figure"] = save_png(gallery_figure(comp.image[shown], titles), out_dir / "wrong_by_all.png")
    return out
