"""Report: figures and numbers of a finished CV run, written to ``<run>/report/`` (PNGs, index.html, report.json).

Per model: training / validation loss and accuracy per epoch over the folds (mean, min-max band, each fold),
the out-of-fold confusion matrix and per-class F1. For the fusion model: the image (64-d), audio (64-d) and
fused (128-d) embeddings of the out-of-fold rows, clustered with KMeans (k = 10) and scored with NMI / ARI
against the labels, and projected to 2-D with t-SNE. Finally a gallery of the rows every model gets wrong.

Each fold's fusion model has its own embedding space (features are not aligned across folds), so the
embedding analysis runs per fold, on that fold's validation rows with that fold's model, and the headline
NMI / ARI is the mean over the folds. This module computes; ``report_view.py`` draws and shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from scipy.special import softmax
from sklearn.cluster import KMeans
from sklearn.manifold import TSNE
from sklearn.metrics import (
    adjusted_rand_score,
    confusion_matrix,
    f1_score,
    normalized_mutual_info_score,
)

from .adversarial import load as load_adversarial
from .artifacts import environment, write_json, write_text
from .console import console
from .data import N_CLASSES, Competition, load_competition
from .errors import UserError
from .metrics import accuracy, macro_f1
from .report_view import (
    CLASSES,
    EMBED_KINDS,
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
from .runs import (
    DEFAULT_WORKDIR,
    Run,
    check_same_data,
    checkpoint_path,
    find_run,
    load_checkpoint,
    load_run,
    load_unit,
    missing_folds,
    read_run_config,
    unit_files,
)
from .splits import CLUSTER_AUC

REPORT_DIR = "report"
DEFAULT_MAX_ROWS = 5000  # out-of-fold rows in the embedding analysis: t-SNE time grows with the rows
# The report encodes each fold's rows once, in batches this large (training.EVAL_BATCH is smaller: it is
# repeated every epoch, where reusing allocator memory pays).
ENCODE_BATCH = 2048


# --------------------------------------------------------------------------- run contents


def _model_order(names) -> list[str]:
    """The fusion model first, then the baselines, then any other model, alphabetically."""
    preferred = ["fusion", "image", "audio"]
    return sorted(names, key=lambda m: (preferred.index(m) if m in preferred else len(preferred), m))


def load_histories(run_dir: Path, model: str) -> pd.DataFrame:
    """Every fold's per-epoch history of one model, with a ``fold`` column."""
    frames = [pd.read_csv(path).assign(fold=k) for k, path in unit_files(run_dir / model, "fold*_history.csv")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------- embedding analysis


@dataclass
class FoldEmbeddings:
    """One fusion fold's (capped) validation rows, their labels and their embeddings by kind."""

    fold: int
    rows: np.ndarray
    y: np.ndarray
    emb: dict[str, np.ndarray]

    @property
    def dims(self) -> dict[str, int]:
        return {k: v.shape[1] for k, v in self.emb.items()}


@dataclass
class EmbeddingAnalysis:
    """KMeans NMI / ARI per fold and kind, the t-SNE of the first fold by kind, and the per-kind summary."""

    scores: list[dict[str, dict[str, float]]]
    tsne: dict[str, np.ndarray]
    summary: dict[str, dict]


def _subsample(rows: list[np.ndarray], max_rows: int, seed: int) -> list[np.ndarray]:
    """At most ``max_rows`` rows in all, each fold keeping its share, drawn with a seeded generator."""
    total = sum(len(r) for r in rows)
    if total <= max_rows:
        return rows
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(r, size=max(1, round(max_rows * len(r) / total)), replace=False)) for r in rows]


def fusion_embeddings(
    run_dir: Path, comp: Competition, max_rows: int, seed: int, progress: Progress
) -> list[FoldEmbeddings]:
    """Per finished fusion fold: its validation rows (capped) and their image / audio / fused embeddings."""
    import torch

    from .models import create_model

    units = []
    for k, npz in unit_files(run_dir / "fusion"):
        pt = checkpoint_path(run_dir, "fusion", k)
        if pt.is_file():
            units.append((k, pt, load_unit(npz).val_idx))
    if not units:
        return []
    rows = _subsample([u[2] for u in units], max_rows, seed)
    if min(len(r) for r in rows) < 3 * N_CLASSES:
        raise UserError(
            f"--max-rows {max_rows}: leaves {min(len(r) for r in rows)} rows in a fold, too few for KMeans with "
            f"{N_CLASSES} clusters; fix: pass --max-rows {3 * N_CLASSES * len(units)} or more"
        )
    task = progress.add_task("embeddings: encoding folds", total=len(units))
    out = []
    for (fold, pt, _), idx in zip(units, rows, strict=True):
        ckpt = load_checkpoint(pt)
        model = create_model("fusion", **ckpt["hparams"])
        model.load_state_dict(ckpt["state_dict"])
        model.eval()
        audio = ((comp.audio[idx] - ckpt["audio_mean"]) / ckpt["audio_scale"]).astype(np.float32)
        parts = {k: [] for k in EMBED_KINDS}
        with torch.no_grad():
            for i in range(0, len(idx), ENCODE_BATCH):
                emb = model.encode(
                    torch.from_numpy(comp.image[idx[i : i + ENCODE_BATCH]]),
                    torch.from_numpy(audio[i : i + ENCODE_BATCH]),
                )
                for k in EMBED_KINDS:
                    parts[k].append(emb[k].numpy())
        emb = {k: np.concatenate(v) for k, v in parts.items()}
        out.append(FoldEmbeddings(fold, idx, comp.y[idx], emb))
        progress.advance(task)
    return out


def cluster_scores(emb: np.ndarray, y: np.ndarray, seed: int) -> dict[str, float]:
    """KMeans with one cluster per class on the raw embedding; NMI and ARI of the clusters against the labels."""
    clusters = KMeans(n_clusters=N_CLASSES, n_init=10, random_state=seed).fit_predict(emb)
    return {"nmi": float(normalized_mutual_info_score(y, clusters)), "ari": float(adjusted_rand_score(y, clusters))}


def tsne_2d(emb: np.ndarray, seed: int) -> np.ndarray:
    perplexity = min(30.0, (len(emb) - 1) / 3)  # t-SNE needs perplexity < n_samples
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb)


def analyse_embeddings(folds: list[FoldEmbeddings], seed: int, progress: Progress) -> EmbeddingAnalysis:
    """NMI / ARI of every fold's embeddings, the t-SNE of the first fold, and the per-kind mean / std / per-fold
    scores. One fold is pictured: t-SNE is the slow part."""
    task = progress.add_task("embeddings: KMeans", total=len(folds) * len(EMBED_KINDS))
    scores = []
    for f in folds:
        scores.append({})
        for kind in EMBED_KINDS:
            scores[-1][kind] = cluster_scores(f.emb[kind], f.y, seed)
            progress.advance(task)
    pictured, tsne = folds[0], {}
    task = progress.add_task(f"embeddings: t-SNE of fold {pictured.fold}", total=len(EMBED_KINDS))
    for kind in EMBED_KINDS:
        tsne[kind] = tsne_2d(pictured.emb[kind], seed)
        progress.advance(task)
    summary = {}
    for kind in EMBED_KINDS:
        nmi = [s[kind]["nmi"] for s in scores]
        ari = [s[kind]["ari"] for s in scores]
        summary[kind] = {
            "dims": folds[0].dims[kind],
            "nmi_mean": float(np.mean(nmi)),
            "nmi_std": float(np.std(nmi)),
            "ari_mean": float(np.mean(ari)),
            "ari_std": float(np.std(ari)),
            "per_fold": [{"fold": f.fold, "rows": len(f.rows), **s[kind]} for f, s in zip(folds, scores, strict=True)],
        }
    return EmbeddingAnalysis(scores, tsne, summary)


# --------------------------------------------------------------------------- the report


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
    run = load_run(run_dir, comp.n_train)
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


def report_command(args) -> int:
    """``python run.py report``: the report of one run (default: the latest)."""
    workdir = Path(args.workdir) if args.workdir else DEFAULT_WORKDIR
    run_dir = find_run(workdir, args.run)
    max_rows = DEFAULT_MAX_ROWS if args.max_rows is None else args.max_rows
    build_report(run_dir, Path(args.data) if args.data else None, max_rows)
    return 0
