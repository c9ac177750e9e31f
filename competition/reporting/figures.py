"""Report presentation: the matplotlib figures, the HTML page and the console summary of a report (no analysis).

``reports.py`` computes a run's numbers and calls these to draw and show them.
"""

from __future__ import annotations

import html
import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from rich.table import Table
from sklearn.metrics import ConfusionMatrixDisplay

from competition.data.load import IMAGE_SIDE, N_CLASSES
from competition.reporting.embeddings import EMBED_KINDS, EmbeddingAnalysis, FoldEmbeddings
from competition.store.atomic import write_bytes
from competition.utils.console import console

GALLERY_MAX = 40  # images shown of the rows every model gets wrong
CLASSES = np.arange(N_CLASSES)


# --------------------------------------------------------------------------- figures


def save_png(fig: Figure, path: Path) -> str:
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


def adversarial_figure(modalities: dict[str, dict], threshold: float) -> Figure:
    """Train-vs-test ROC AUC per modality (out of fold, bar = all rows, dots = folds, whisker = fold spread)."""
    names = list(modalities)
    fig = Figure(figsize=(6.5, 0.7 + 0.6 * len(names)))
    ax = fig.subplots()
    for i, m in enumerate(names):
        r = modalities[m]
        ax.barh(i, r["auc"] - 0.5, left=0.5, xerr=r["auc_std"], color="tab:purple", alpha=0.6, capsize=3)
        ax.plot(r["fold_aucs"], [i] * len(r["fold_aucs"]), "k.", ms=4)
    ax.axvline(0.5, color="grey", lw=1)
    ax.axvline(
        threshold, color="tab:red", ls="--", lw=1, label=f"split=auto holds out speakers from audio AUC {threshold}"
    )
    ax.set_yticks(range(len(names)), names)
    ax.set_xlim(0.4, 1.0)
    ax.set_xlabel("train vs test ROC AUC (0.5 = the test rows look like the training rows)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return fig


def test_likeness_figure(likeness: dict[str, np.ndarray], n_train: int) -> Figure:
    """Per modality, histograms of the adversarial classifier's probability that a row is a test row, for the
    training rows and the test rows (density: the two sides are of different sizes)."""
    fig = Figure(figsize=(4.2 * len(likeness), 3.4))
    bins = np.linspace(0, 1, 41)
    for ax, (m, p) in zip(np.atleast_1d(fig.subplots(1, len(likeness))), likeness.items(), strict=True):
        for part, colour, what in ((p[:n_train], "tab:blue", "training"), (p[n_train:], "tab:orange", "test")):
            ax.hist(part, bins=bins, density=True, alpha=0.6, color=colour, label=f"{what} rows ({len(part)})")
        ax.set_title(f"{m}: test-likeness")
        ax.set_xlabel("P(test row) by the train-vs-test classifier")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
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


def embeddings_figure(fold: FoldEmbeddings, analysis: EmbeddingAnalysis) -> Figure:
    """t-SNE of one fold's image, audio and fused embeddings, coloured by label, each class's digit at its median."""
    fig = Figure(figsize=(15, 5))
    y = fold.y
    for ax, kind in zip(fig.subplots(1, len(EMBED_KINDS)), EMBED_KINDS, strict=True):
        xy = analysis.tsne[kind]
        ax.scatter(xy[:, 0], xy[:, 1], c=y, cmap="tab10", vmin=-0.5, vmax=9.5, s=5, alpha=0.7, linewidths=0)
        for c in np.unique(y):
            mx, my = np.median(xy[y == c], axis=0)
            ax.text(mx, my, str(c), fontsize=13, weight="bold", ha="center", va="center")
        s = analysis.scores[0][kind]
        ax.set_title(f"{kind} ({fold.dims[kind]}-d)  KMeans k=10: NMI {s['nmi']:.3f}  ARI {s['ari']:.3f}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"t-SNE of fold {fold.fold}'s fusion model on its {len(y)} validation rows", fontsize=11)
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


# --------------------------------------------------------------------------- page and console


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
                "seeds per fold": e.get("seeds", 1),
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
    adv = report.get("adversarial")
    if adv:
        parts.append("<h2>Train vs test (adversarial validation)</h2>")
        parts.append(
            "<p>A classifier that tells training rows from test rows, scored out of fold with duplicate rows kept on "
            "one side (cv saves it in the run). AUC near 0.5: the test rows look like the training rows, so "
            "out-of-fold scores speak for the test; near 1: they differ (see docs/howto/shift.md).</p>"
        )
        table = pd.DataFrame(
            {m: {"AUC": r["auc"], "fold spread": r["auc_std"], "rows": r["rows"]} for m, r in adv.items()}
        )
        parts += [
            "<div class='row'>",
            f"<img src='{esc(report['adversarial_figure'])}' alt='adversarial validation'>",
            _table_html(table.T),
            "</div>",
        ]
    like = report.get("test_likeness")
    if like:
        parts.append(
            "<p>Test-likeness of each row: the classifier's probability that it is a test row (out of fold). "
            "Training rows far left of the test rows are unlike anything in the test; a validation fold whose mean "
            "is near the test rows' mean scores the models as the test will.</p>"
        )
        rows = {
            m: {
                "training rows, mean": v["train_mean"],
                "test rows, mean": v["test_mean"],
                "training rows as test-like as the median test row": v["train_share_as_test_like_as_median_test_row"],
                **{f"validation fold {k}, mean": x for k, x in v["per_fold"].items()},
            }
            for m, v in like.items()
        }
        parts += [
            "<div class='row'>",
            f"<img src='{esc(report['test_likeness_figure'])}' alt='test-likeness'>",
            _table_html(pd.DataFrame(rows)),
            "</div>",
        ]
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


def print_summary(report: dict, out_dir: Path) -> None:
    """The report's headline numbers as console tables, and where its page is."""
    models = report["models"]
    t = Table(title=f"{Path(report['run']).name}: out-of-fold scores")
    for col in ("model", "folds", "macro-F1", "accuracy", "val loss", "val acc", "worst class (F1)"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for m, e in models.items():
        worst, last, nan = int(np.argmin(e["per_class_f1"])), e["last_epoch"], float("nan")
        t.add_row(
            m, str(len(e["folds"])) + (f" x {e['seeds']} seeds" if e.get("seeds", 1) > 1 else ""),
            f"{e['oof_macro_f1']:.4f}", f"{e['oof_accuracy']:.4f}",
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
    console.print(f"report: {out_dir / 'index.html'} ({len(report['figures'])} figures) in {report['seconds']:.1f} s")
