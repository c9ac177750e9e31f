"""Report: figures and numbers of a finished CV run, written to ``<run>/report/`` (PNGs, index.html, report.json).

Per model: training / validation loss and accuracy per epoch over the folds (mean, min-max band, each fold),
the out-of-fold confusion matrix and per-class F1. For the fusion model: the image (64-d), audio (64-d) and
fused (128-d) embeddings of the out-of-fold rows, clustered with KMeans (k = 10) and scored with NMI / ARI
against the labels, and projected to 2-D with t-SNE. Finally a gallery of the rows every model gets wrong.

Each fold's fusion model has its own embedding space (features are not aligned across folds), so the
embedding analysis runs per fold, on that fold's validation rows with that fold's model, and the headline
NMI / ARI is the mean over the folds.
"""

from __future__ import annotations

import html
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sklearn.cluster import KMeans
from sklearn.manifold import TSNE
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    adjusted_rand_score,
    confusion_matrix,
    f1_score,
    normalized_mutual_info_score,
)

from .artifacts import environment, write_bytes, write_json, write_text
from .console import console
from .cv import check_run_name, latest_run, load_run, load_unit, read_run_config
from .data import Competition, load_competition
from .errors import UserError
from .metrics import accuracy, macro_f1
from .models import IMAGE_SIDE, N_CLASSES

REPORT_DIR = "report"
DEFAULT_MAX_ROWS = 5000  # out-of-fold rows in the embedding analysis: t-SNE time grows with the rows
EMBED_KINDS = ("image", "audio", "fused")
GALLERY_MAX = 40  # images shown of the rows every model gets wrong
ENCODE_BATCH = 2048
CLASSES = np.arange(N_CLASSES)


# --------------------------------------------------------------------------- run discovery


def find_run(workdir: Path, run: str | None) -> Path:
    """``workdir/run``, or the latest finished run (``cv.latest_run``) when ``run`` is None."""
    if run is not None:
        run_dir = workdir / check_run_name(run)
        if not (run_dir / "config.json").is_file():
            raise UserError(f"--run {run}: no run at {run_dir}; fix: name a folder made by `python run.py cv`")
        return run_dir
    return workdir / latest_run(workdir)


def _model_order(names) -> list[str]:
    """The fusion model first, then the baselines, then any other model, alphabetically."""
    preferred = ["fusion", "image", "audio"]
    return sorted(names, key=lambda m: (preferred.index(m) if m in preferred else len(preferred), m))


def load_histories(run_dir: Path, model: str) -> pd.DataFrame:
    """Every fold's per-epoch history of one model, with a ``fold`` column."""
    frames = []
    for path in sorted((run_dir / model).glob("fold*_history.csv")):
        frames.append(pd.read_csv(path).assign(fold=int(path.stem[4:].split("_")[0])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------- figures


def _png(fig: Figure, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # Figure() renders with the Agg canvas
    write_bytes(path, buf.getvalue())
    return path.name


def curves_figure(hist: pd.DataFrame, model: str) -> Figure:
    """Loss and accuracy per epoch, train and validation: each fold thin, the fold mean bold, min-max shaded."""
    fig = Figure(figsize=(10, 3.6))
    n_folds = hist["fold"].nunique()
    marker = "o" if hist["epoch"].nunique() <= 12 else None
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for split, colour in (("train", "tab:blue"), ("val", "tab:orange")):
            col = f"{split}_{metric}"
            for _, f in hist.groupby("fold"):
                ax.plot(f["epoch"], f[col], color=colour, alpha=0.25, lw=0.8)
            g = hist.groupby("epoch")[col]
            epochs = g.mean().index
            ax.fill_between(epochs, g.min(), g.max(), color=colour, alpha=0.15, lw=0)
            ax.plot(
                epochs,
                g.mean(),
                color=colour,
                lw=2,
                marker=marker,
                ms=3,
                label=f"{split}: mean of {n_folds} folds, band min-max",
            )
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{model}: {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def confusion_figure(y: np.ndarray, pred: np.ndarray, per_class: np.ndarray, model: str) -> Figure:
    """Out-of-fold confusion matrix (counts) beside the per-class F1 bars."""
    fig = Figure(figsize=(10.5, 4.4))
    ax_cm, ax_f1 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.15, 1]})
    counts = np.bincount(y, minlength=N_CLASSES).max()
    ConfusionMatrixDisplay.from_predictions(
        y,
        pred,
        labels=CLASSES,
        ax=ax_cm,
        colorbar=False,
        cmap="Blues",
        text_kw={"fontsize": 9 if counts < 1000 else 6.5},
    )
    ax_cm.set_title(f"{model}: out-of-fold confusion ({len(y)} rows)")
    ax_f1.bar(CLASSES, per_class, color="tab:green")
    for c, v in zip(CLASSES, per_class, strict=True):
        ax_f1.text(c, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax_f1.set_xticks(CLASSES)
    bottom = max(0.0, per_class.min() - 0.1)
    ax_f1.set_ylim(bottom, 1 + 0.15 * (1 - bottom))  # headroom for the value labels
    ax_f1.set_yticks([t for t in ax_f1.get_yticks() if bottom <= t <= 1])
    ax_f1.set_xlabel("class")
    ax_f1.set_title(f"per-class F1 (macro {per_class.mean():.4f})")
    ax_f1.grid(axis="y", alpha=0.3)
    return fig


def embeddings_figure(fold: dict) -> Figure:
    """t-SNE of one fold's image, audio and fused embeddings, coloured by label, each class's digit at its median."""
    fig = Figure(figsize=(15, 5))
    y = fold["y"]
    for ax, kind in zip(fig.subplots(1, len(EMBED_KINDS)), EMBED_KINDS, strict=True):
        xy = fold["tsne"][kind]
        ax.scatter(xy[:, 0], xy[:, 1], c=y, cmap="tab10", vmin=-0.5, vmax=9.5, s=5, alpha=0.7, linewidths=0)
        for c in np.unique(y):
            mx, my = np.median(xy[y == c], axis=0)
            ax.text(mx, my, str(c), fontsize=13, weight="bold", ha="center", va="center")
        s = fold["scores"][kind]
        ax.set_title(
            f"{kind} ({fold['dims'][kind]}-d)  KMeans k=10: NMI {s['nmi']:.3f}  ARI {s['ari']:.3f}", fontsize=10
        )
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"t-SNE of fold {fold['fold']}'s fusion model on its {len(y)} validation rows", fontsize=11)
    return fig


def gallery_figure(images: np.ndarray, titles: list[str]) -> Figure:
    cols = min(8, len(images))
    rows = -(-len(images) // cols)
    lines = titles[0].count("\n") + 1
    fig = Figure(figsize=(cols * 1.45, rows * (1.5 + 0.12 * lines)))
    axes = np.array(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, img, title in zip(axes, images, titles, strict=False):  # the last row may have empty cells
        ax.imshow(img.reshape(IMAGE_SIDE, IMAGE_SIDE), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=6.5)
    return fig


# --------------------------------------------------------------------------- embedding analysis


def _subsample(rows: list[np.ndarray], max_rows: int, seed: int) -> list[np.ndarray]:
    """At most ``max_rows`` rows in all, each fold keeping its share, drawn with a seeded generator."""
    total = sum(len(r) for r in rows)
    if total <= max_rows:
        return rows
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(r, size=max(1, round(max_rows * len(r) / total)), replace=False)) for r in rows]


def fusion_embeddings(run_dir: Path, comp: Competition, max_rows: int, seed: int, progress: Progress) -> list[dict]:
    """Per finished fusion fold: its validation rows (capped) and their image / audio / fused embeddings."""
    import torch

    from .models import create_model

    units = []
    for npz in sorted((run_dir / "fusion").glob("fold*.npz"), key=lambda p: int(p.stem[4:])):
        pt = npz.with_suffix(".pt")
        if pt.is_file():
            units.append((int(npz.stem[4:]), pt, load_unit(npz)["val_idx"]))
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
        # Our own checkpoint (written by cv.train_unit); it holds numpy arrays, hence weights_only=False.
        ckpt = torch.load(pt, map_location="cpu", weights_only=False)
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
        out.append({"fold": fold, "rows": idx, "y": comp.y[idx], "emb": emb, "dims": {k: emb[k].shape[1] for k in emb}})
        progress.advance(task)
    return out


def cluster_scores(emb: np.ndarray, y: np.ndarray, seed: int) -> dict[str, float]:
    """KMeans with one cluster per class on the raw embedding; NMI and ARI of the clusters against the labels."""
    clusters = KMeans(n_clusters=N_CLASSES, n_init=10, random_state=seed).fit_predict(emb)
    return {"nmi": float(normalized_mutual_info_score(y, clusters)), "ari": float(adjusted_rand_score(y, clusters))}


def tsne_2d(emb: np.ndarray, seed: int) -> np.ndarray:
    perplexity = min(30.0, (len(emb) - 1) / 3)  # t-SNE needs perplexity < n_samples
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb)


def analyse_embeddings(folds: list[dict], seed: int, progress: Progress) -> dict:
    """NMI / ARI of every fold's embeddings (added as ``scores``) and the t-SNE of the first fold (``tsne``);
    returns the per-kind mean / std / per-fold scores. One fold is pictured: t-SNE is the slow part."""
    task = progress.add_task("embeddings: KMeans", total=len(folds) * len(EMBED_KINDS))
    for f in folds:
        f["scores"] = {}
        for kind in EMBED_KINDS:
            f["scores"][kind] = cluster_scores(f["emb"][kind], f["y"], seed)
            progress.advance(task)
    pictured = folds[0]
    pictured["tsne"] = {}
    task = progress.add_task(f"embeddings: t-SNE of fold {pictured['fold']}", total=len(EMBED_KINDS))
    for kind in EMBED_KINDS:
        pictured["tsne"][kind] = tsne_2d(pictured["emb"][kind], seed)
        progress.advance(task)
    summary = {}
    for kind in EMBED_KINDS:
        nmi = [f["scores"][kind]["nmi"] for f in folds]
        ari = [f["scores"][kind]["ari"] for f in folds]
        summary[kind] = {
            "dims": folds[0]["dims"][kind],
            "nmi_mean": float(np.mean(nmi)),
            "nmi_std": float(np.std(nmi)),
            "ari_mean": float(np.mean(ari)),
            "ari_std": float(np.std(ari)),
            "per_fold": [{"fold": f["fold"], "rows": len(f["rows"]), **f["scores"][kind]} for f in folds],
        }
    return summary


# --------------------------------------------------------------------------- the report


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def build_report(
    run_dir: Path, data_dir: Path | None = None, max_rows: int = DEFAULT_MAX_ROWS, quiet: bool = False
) -> dict:
    """Write ``run_dir/report/`` (PNGs, index.html, report.json) and return the report's numbers."""
    t0 = time.perf_counter()
    if max_rows < N_CLASSES * 3:
        raise UserError(f"--max-rows {max_rows}: too few rows to cluster; fix: pass at least {N_CLASSES * 3}")
    saved = read_run_config(run_dir)
    seed = int(saved["config"].get("seed", 0))
    data_dir = Path(data_dir or saved["data"])
    comp = load_competition(data_dir)
    if comp.fingerprint != saved.get("data_fingerprint"):
        raise UserError(
            f"--data {data_dir}: not the data run {run_dir.name!r} was trained on (fingerprint {comp.fingerprint}, "
            f"run has {saved.get('data_fingerprint')}); fix: pass --data {saved['data']}"
        )
    runs = load_run(run_dir, comp.n_train)
    if not runs:
        raise UserError(f"{run_dir}: no finished (model, fold) units; fix: run `python run.py cv` first")
    out_dir = run_dir / REPORT_DIR
    models = _model_order(runs)
    report: dict = {"run": str(run_dir), "data": str(comp.root), "models": {}, "figures": []}

    for m in models:
        oof = runs[m]["oof"]
        have = np.flatnonzero(~np.isnan(oof).any(axis=1))  # rows of the finished folds
        y, pred = comp.y[have], oof[have].argmax(axis=1)
        per_class = f1_score(y, pred, average=None, labels=CLASSES, zero_division=0)
        hist = load_histories(run_dir, m)
        last = hist[hist["epoch"] == hist.groupby("fold")["epoch"].transform("max")] if len(hist) else hist
        entry = {
            "folds": sorted(r["fold"] for r in runs[m]["folds"]),
            "oof_rows": len(have),
            "oof_macro_f1": macro_f1(y, pred),
            "oof_accuracy": accuracy(y, pred),
            "per_class_f1": [float(v) for v in per_class],
            "confusion": confusion_matrix(y, pred, labels=CLASSES).tolist(),
            "last_epoch": {c: float(last[c].mean()) for c in last.columns if c not in ("epoch", "fold")},
            "figures": {},
        }
        if len(hist):
            entry["figures"]["curves"] = _png(curves_figure(hist, m), out_dir / f"curves_{m}.png")
        entry["figures"]["confusion"] = _png(confusion_figure(y, pred, per_class, m), out_dir / f"confusion_{m}.png")
        report["models"][m] = entry
        report["figures"] += list(entry["figures"].values())

    report["embeddings"] = None
    if "fusion" in runs:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=quiet, transient=True,
        ) as progress:  # fmt: skip
            folds = fusion_embeddings(run_dir, comp, max_rows, seed, progress)
            if folds:
                report["embeddings"] = analyse_embeddings(folds, seed, progress)
        if folds:
            report["embeddings_figure"] = _png(embeddings_figure(folds[0]), out_dir / "embeddings.png")
            report["embeddings_pictured_fold"] = folds[0]["fold"]
            report["figures"].append(report["embeddings_figure"])

    report["wrong_by_all"] = _wrong_by_all(runs, models, comp, out_dir)
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
        print_summary(report)
    return report


def _wrong_by_all(runs: dict, models: list[str], comp: Competition, out_dir: Path) -> dict:
    """Rows covered by every model's out-of-fold predictions that every model gets wrong, surest mistakes first."""
    covered = np.ones(comp.n_train, dtype=bool)
    for m in models:
        covered &= ~np.isnan(runs[m]["oof"]).any(axis=1)
    preds = {m: runs[m]["oof"].argmax(axis=1) for m in models}
    wrong = covered.copy()
    for m in models:
        wrong &= preds[m] != comp.y
    rows = np.flatnonzero(wrong)
    # Mean probability the models give the true label: the lowest are the most confident mistakes
    # (often label noise or unreadable digits).
    p_true = np.mean(
        [_softmax(np.nan_to_num(runs[m]["oof"][rows]))[np.arange(len(rows)), comp.y[rows]] for m in models], axis=0
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
        out["figure"] = _png(gallery_figure(comp.image[shown], titles), out_dir / "wrong_by_all.png")
    return out


# --------------------------------------------------------------------------- presentation


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(float_format=lambda v: f"{v:.4f}", border=0, classes="num")


def render_html(report: dict) -> str:
    """One self-contained page: each figure next to the numbers it shows."""
    esc = html.escape
    models = report["models"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>report: {esc(Path(report['run']).name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1400px;margin:1em auto;padding:0 1em}"
        "table.num{border-collapse:collapse;font-size:13px}table.num td,table.num th{padding:2px 8px;"
        "text-align:right;border-bottom:1px solid #ddd}img{max-width:100%}.row{display:flex;gap:2em;"
        "align-items:flex-start;flex-wrap:wrap}</style></head><body>",
        f"<h1>Run {esc(Path(report['run']).name)}</h1>",
        f"<p>run folder <code>{esc(report['run'])}</code>, data <code>{esc(report['data'])}</code>; "
        f"report made in {report['seconds']:.1f} s.</p>",
        "<h2>Models (out-of-fold)</h2>",
    ]
    summary = pd.DataFrame.from_dict(
        {
            m: {
                "folds": len(e["folds"]),
                "OOF rows": e["oof_rows"],
                "OOF macro-F1": e["oof_macro_f1"],
                "OOF accuracy": e["oof_accuracy"],
                **{f"last epoch {k}": v for k, v in e["last_epoch"].items()},
            }
            for m, e in models.items()
        },
        orient="index",
    )
    parts.append(_table_html(summary))
    for m, e in models.items():
        parts.append(f"<h2>{esc(m)}</h2>")
        if "curves" in e["figures"]:
            parts.append(f"<h3>Learning curves</h3><img src='{esc(e['figures']['curves'])}' alt='curves {esc(m)}'>")
        per_class = pd.DataFrame({"F1": e["per_class_f1"]}, index=pd.Index(CLASSES, name="class"))
        parts += [
            "<h3>Out-of-fold confusion matrix and per-class F1</h3><div class='row'>",
            f"<img src='{esc(e['figures']['confusion'])}' alt='confusion {esc(m)}'>",
            _table_html(per_class),
            "</div>",
        ]
    parts.append("<h2>Embedding analysis of the fusion model</h2>")
    emb = report["embeddings"]
    if emb is None:
        parts.append("<p>This run has no finished fusion model: no embedding analysis.</p>")
    else:
        parts.append(
            "<p>Each fold's fusion model encodes its own validation rows; KMeans (k = 10) on the raw embedding, "
            "NMI / ARI of the clusters against the labels (1 = the clusters are the classes, 0 = chance); "
            f"t-SNE to 2-D of fold {report['embeddings_pictured_fold']} for the picture (its numbers are in its "
            "titles). Embedding spaces differ between the folds' models, so each fold is scored on its own.</p>"
        )
        rows = {
            f"{k} ({v['dims']}-d)": {
                "NMI mean": v["nmi_mean"],
                "NMI std": v["nmi_std"],
                "ARI mean": v["ari_mean"],
                "ARI std": v["ari_std"],
                **{f"NMI fold {p['fold']}": p["nmi"] for p in v["per_fold"]},
                **{f"ARI fold {p['fold']}": p["ari"] for p in v["per_fold"]},
            }
            for k, v in emb.items()
        }
        parts += [_table_html(pd.DataFrame(rows).T), f"<img src='{esc(report['embeddings_figure'])}' alt='t-SNE'>"]
    w = report["wrong_by_all"]
    parts.append("<h2>Rows every model gets wrong</h2>")
    parts.append(f"<p>{w['count']} of the {w['covered_rows']} rows that every model predicted out of fold.</p>")
    if w["figure"]:
        shown = min(w["count"], GALLERY_MAX)
        parts.append(
            f"<p>Showing {shown}, most confident mistakes first; above each image its row_id, true label and each "
            "model's prediction (every row is listed in report.json).</p>"
            f"<img src='{esc(w['figure'])}' alt='wrong by all'>"
        )
        parts.append(_table_html(pd.DataFrame(w["rows"][:shown]).set_index("row_id")))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def print_summary(report: dict) -> None:
    models = report["models"]
    t = Table(title=f"{Path(report['run']).name}: out-of-fold scores")
    for col in ("model", "folds", "macro-F1", "accuracy", "val loss", "val acc", "worst class (F1)"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for m, e in models.items():
        worst, last, nan = int(np.argmin(e["per_class_f1"])), e["last_epoch"], float("nan")
        t.add_row(
            m, str(len(e["folds"])), f"{e['oof_macro_f1']:.4f}", f"{e['oof_accuracy']:.4f}",
            f"{last.get('val_loss', nan):.4f}", f"{last.get('val_accuracy', nan):.4f}",
            f"{worst} ({e['per_class_f1'][worst]:.4f})",
        )  # fmt: skip
    console.print(t)
    pc = Table(title="per-class F1 (out-of-fold)")
    pc.add_column("class", justify="right")
    for m in models:
        pc.add_column(m, justify="right")
    for c in CLASSES:
        pc.add_row(str(c), *(f"{e['per_class_f1'][c]:.4f}" for e in models.values()))
    console.print(pc)
    if report["embeddings"] is not None:
        et = Table(title="fusion embeddings: KMeans (k = 10) vs labels, mean ± std over folds")
        for col in ("embedding", "NMI", "ARI", "rows"):
            et.add_column(col, justify="left" if col == "embedding" else "right")
        for k, v in report["embeddings"].items():
            rows = sum(p["rows"] for p in v["per_fold"])
            et.add_row(
                f"{k} ({v['dims']}-d)", f"{v['nmi_mean']:.3f} ± {v['nmi_std']:.3f}",
                f"{v['ari_mean']:.3f} ± {v['ari_std']:.3f}", str(rows),
            )  # fmt: skip
        console.print(et)
    else:
        console.print("no finished fusion model: embedding analysis skipped")
    w = report["wrong_by_all"]
    console.print(f"{w['count']} of {w['covered_rows']} rows are wrong for every model")
    out = Path(report["run"]) / REPORT_DIR
    console.print(f"report: {out / 'index.html'} ({len(report['figures'])} figures) in {report['seconds']:.1f} s")


def report_command(args) -> int:
    """``python run.py report``: the report of one run (default: the latest)."""
    from .cv import DEFAULT_WORKDIR

    workdir = Path(args.workdir) if args.workdir else DEFAULT_WORKDIR
    run_dir = find_run(workdir, args.run)
    max_rows = DEFAULT_MAX_ROWS if args.max_rows is None else args.max_rows
    build_report(run_dir, Path(args.data) if args.data else None, max_rows)
    return 0
