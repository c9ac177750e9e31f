"""Embeddings: the fusion model's image, audio and fused embeddings of each fold's validation rows, how well
KMeans recovers the digits from them (NMI / ARI), and their t-SNE."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress
from sklearn.cluster import KMeans
from sklearn.manifold import TSNE
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from competition.data.load import N_CLASSES, Competition, normalise_audio
from competition.store.runs import checkpoint_path, load_checkpoint, load_unit, unit_files
from competition.utils.errors import UserError

EMBED_KINDS = ("image", "audio", "fused")
# The report encodes each fold's rows once, in batches this large (the learner's EVAL_BATCH is smaller: it is
# repeated every epoch, where reusing allocator memory pays).
ENCODE_BATCH = 2048
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

    from competition.models import create_model

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
        raw = normalise_audio(comp.audio[idx], ckpt.get("config", {}).get("audio_norm", "none"))  # as it trained
        audio = ((raw - ckpt["audio_mean"]) / ckpt["audio_scale"]).astype(np.float32)
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
