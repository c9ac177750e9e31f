"""Adversarial validation: how well a classifier tells the training rows from the test rows, per modality and
for both together, scored by ROC AUC out of fold (0.5: the test rows look like the training rows).

A gradient-boosted classifier (scikit-learn's HistGradientBoostingClassifier) reads each modality's raw
features, reduced by PCA to a few components for speed (fit on the training and test rows together:
no labels are used). Rows that share a byte-identical feature row (the shipped audio repeats each recording
~4.5 times) stay on one side of every split: otherwise the classifier recognises recordings, not a shift
(the shipped audio gives AUC ~1.0 with plain folds and ~0.64 with grouped ones). Deterministic: its own
fixed seed, so every run on one data folder sees the same figures, whatever the recipe's seed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .artifacts import write_json
from .data import Competition, duplicate_groups

MODALITIES = ("image", "audio", "both")
SEED = 0


@dataclass
class AdversarialResult:
    """One modality's train-vs-test classifier: out-of-fold ROC AUC, its spread over folds, rows used."""

    modality: str
    auc: float  # over all out-of-fold rows
    auc_std: float  # std of the per-fold AUCs
    fold_aucs: list[float]
    rows: int  # rows the classifier saw (a random subsample when the data is large)


def _reduce(x: np.ndarray, n_components: int) -> np.ndarray:
    """Standardised features projected on their first principal components (all rows, no labels)."""
    x = StandardScaler().fit_transform(x)
    n = min(n_components, x.shape[1], len(x))
    return PCA(n_components=n, random_state=SEED).fit_transform(x)


def adversarial_auc(
    x: np.ndarray, is_test: np.ndarray, groups: np.ndarray, folds: int = 5, max_iter: int = 50
) -> tuple[float, float, list[float]]:
    """(AUC over all out-of-fold rows, std of the fold AUCs, fold AUCs) of a classifier telling ``is_test`` rows
    from the others, with rows of one group always on one side of a split."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=SEED)
    oof = np.zeros(len(x))
    fold_aucs = []
    for tr, va in splitter.split(x, is_test, groups):
        clf = HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False, random_state=SEED)
        oof[va] = clf.fit(x[tr], is_test[tr]).predict_proba(x[va])[:, 1]
        if len(np.unique(is_test[va])) == 2:
            fold_aucs.append(float(roc_auc_score(is_test[va], oof[va])))
    return float(roc_auc_score(is_test, oof)), float(np.std(fold_aucs)), fold_aucs


def adversarial_validation(
    comp: Competition, max_rows: int = 6000, n_components: int = 16, folds: int = 5
) -> dict[str, AdversarialResult]:
    """Train-vs-test ROC AUC of the image rows, the audio rows and both together (single-threaded: the
    same figures on every machine, and no OpenMP spinning on a busy one); empty when either side has too few
    distinct rows to score."""
    with threadpool_limits(1):
        return _adversarial_validation(comp, max_rows, n_components, folds)


def _adversarial_validation(comp: Competition, max_rows: int, n_components: int, folds: int) -> dict:
    image = np.concatenate([comp.image, comp.test_image])
    audio = np.concatenate([comp.audio, comp.test_audio])
    is_test = np.r_[np.zeros(comp.n_train), np.ones(comp.n_test)].astype(np.int64)
    rng = np.random.default_rng(SEED)
    rows = np.sort(rng.permutation(len(is_test))[:max_rows])
    reduced = {"image": _reduce(image[rows], n_components), "audio": _reduce(audio[rows], n_components)}
    reduced["both"] = np.concatenate([reduced["image"], reduced["audio"]], axis=1)
    groups = {
        "image": duplicate_groups(image[rows]),
        "audio": duplicate_groups(audio[rows]),
        "both": duplicate_groups(image[rows], audio[rows]),
    }
    out = {}
    for m in MODALITIES:
        side_groups = [len(np.unique(groups[m][is_test[rows] == side])) for side in (0, 1)]
        if min(side_groups) < 2 * folds:  # too few distinct rows on one side to score a classifier
            return {}
        auc, std, fold_aucs = adversarial_auc(reduced[m], is_test[rows], groups[m], folds)
        out[m] = AdversarialResult(m, auc, std, fold_aucs, len(rows))
    return out


def load_or_run(comp: Competition, workdir: Path) -> dict[str, AdversarialResult]:
    """The data folder's adversarial validation, cached in ``<workdir>/adversarial.json`` per data fingerprint."""
    path = workdir / "adversarial.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
            if saved.get("data_fingerprint") == comp.fingerprint:
                return {m: AdversarialResult(**r) for m, r in saved["modalities"].items()}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            pass  # unreadable: compute it again
    result = adversarial_validation(comp)
    save(path, comp, result)
    return result


def save(path: Path, comp: Competition, result: dict[str, AdversarialResult]) -> None:
    write_json(path, {"data_fingerprint": comp.fingerprint, "modalities": {m: asdict(r) for m, r in result.items()}})


def adversarial_lines(result: dict[str, AdversarialResult]) -> list[str]:
    """One line per modality for cv's data summary."""
    if not result:
        return ["adversarial validation: skipped (fewer than 10 distinct training or test rows)"]
    lines = []
    for m, r in result.items():
        lines.append(
            f"adversarial validation - {m}: train vs test AUC {r.auc:.2f} ± {r.auc_std:.2f} "
            f"(out of fold, {r.rows} rows, duplicates grouped; 0.5 = alike)"
        )
    return lines
