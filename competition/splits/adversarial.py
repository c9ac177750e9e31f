"""Adversarial validation: how well a classifier tells the training rows from the test rows, per modality and
for both together, scored by ROC AUC out of fold (0.5: the test rows look like the training rows).

A gradient-boosted classifier (scikit-learn's HistGradientBoostingClassifier) reads each modality's raw
features, reduced by PCA to a few components for speed (fit on the training and test rows together:
no labels are used). Rows that share a byte-identical feature row (the shipped audio repeats each recording
~4.5 times) stay on one side of every split: otherwise the classifier recognises recordings, not a shift
(the shipped audio gives AUC ~1.0 with plain folds and ~0.64 with grouped ones). Deterministic: its own
fixed seed, so every run on one data folder sees the same figures, whatever the recipe's seed.

Besides the AUCs, each row's test-likeness: the classifier's probability that the row is a test row, out of
fold for the rows it was scored on, and the mean of the fold classifiers (none of which saw the row) for the
rows left out of the subsample. Saved beside the AUCs (``adversarial.npz``); ``report`` draws it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from competition.data.duplicates import duplicate_groups
from competition.data.load import Competition
from competition.store.atomic import write_json, write_npz

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
    # (n_train + n_test,) probability that each row (training rows, then test rows) is a test row; kept out
    # of the JSON (saved in adversarial.npz)
    test_likeness: np.ndarray | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict:
        """The JSON part: everything but the per-row test-likeness."""
        return {k: v for k, v in asdict(self).items() if k != "test_likeness"}


def _reduce(x: np.ndarray, n_components: int, fit_rows: np.ndarray) -> np.ndarray:
    """Standardised features projected on their first principal components, both fit on ``fit_rows`` (no labels)."""
    scaler = StandardScaler().fit(x[fit_rows])
    pca = PCA(n_components=min(n_components, x.shape[1], len(fit_rows)), random_state=SEED)
    out = np.empty((len(x), pca.n_components), dtype=np.float64)
    rest = np.setdiff1d(np.arange(len(x)), fit_rows)
    out[fit_rows] = pca.fit_transform(scaler.transform(x[fit_rows]))  # fit_transform: the AUCs of earlier versions
    if len(rest):
        out[rest] = pca.transform(scaler.transform(x[rest]))
    return out


def adversarial_auc(
    x: np.ndarray, is_test: np.ndarray, groups: np.ndarray, folds: int = 5, max_iter: int = 50
) -> tuple[float, float, list[float], np.ndarray, np.ndarray, list[HistGradientBoostingClassifier]]:
    """(AUC over all out-of-fold rows, std of the fold AUCs, fold AUCs, out-of-fold probabilities, each row's
    fold, the fold classifiers) of a classifier telling ``is_test`` rows from the others, with rows of one group
    always on one side of a split."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=SEED)
    oof = np.zeros(len(x))
    fold_of = np.zeros(len(x), dtype=np.int64)
    fold_aucs, classifiers = [], []
    for k, (tr, va) in enumerate(splitter.split(x, is_test, groups)):
        clf = HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False, random_state=SEED)
        oof[va] = clf.fit(x[tr], is_test[tr]).predict_proba(x[va])[:, 1]
        fold_of[va] = k
        classifiers.append(clf)
        if len(np.unique(is_test[va])) == 2:
            fold_aucs.append(float(roc_auc_score(is_test[va], oof[va])))
    return float(roc_auc_score(is_test, oof)), float(np.std(fold_aucs)), fold_aucs, oof, fold_of, classifiers


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
    reduced = {"image": _reduce(image, n_components, rows), "audio": _reduce(audio, n_components, rows)}
    reduced["both"] = np.concatenate([reduced["image"], reduced["audio"]], axis=1)
    groups = {  # over every row: the subsample's groups, and those of the rows it left out
        "image": duplicate_groups(image),
        "audio": duplicate_groups(audio),
        "both": duplicate_groups(image, audio),
    }
    out = {}
    for m in MODALITIES:
        side_groups = [len(np.unique(groups[m][rows][is_test[rows] == side])) for side in (0, 1)]
        if min(side_groups) < 2 * folds:  # too few distinct rows on one side to score a classifier
            return {}
        x = reduced[m]
        # the subsample's groups numbered in order of first appearance, as duplicate_groups numbers them: the
        # splitter's shuffle depends on the numbers, and these give the AUCs of earlier versions
        _, first, inverse = np.unique(groups[m][rows], return_index=True, return_inverse=True)
        sub_groups = np.argsort(np.argsort(first))[inverse]
        auc, std, fold_aucs, oof, fold_of, classifiers = adversarial_auc(x[rows], is_test[rows], sub_groups, folds)
        out[m] = AdversarialResult(
            m, auc, std, fold_aucs, len(rows), _likeness(x, rows, groups[m], oof, fold_of, classifiers)
        )
    return out


def _likeness(x, rows, groups, oof, fold_of, classifiers) -> np.ndarray:
    """Every row's probability of being a test row: out of fold for the subsample ``rows``; for the others, the
    classifier of the fold holding their duplicates (the others saw them), else the mean of the fold classifiers."""
    likeness = np.zeros(len(x), dtype=np.float32)
    likeness[rows] = oof
    others = np.setdiff1d(np.arange(len(x)), rows)
    if len(others):
        probs = np.stack([clf.predict_proba(x[others])[:, 1] for clf in classifiers])  # (K, n_others)
        fold_of_group = dict(zip(groups[rows].tolist(), fold_of.tolist(), strict=True))  # a group is in one fold
        fold = np.array([fold_of_group.get(g, -1) for g in groups[others].tolist()])
        likeness[others] = np.where(fold >= 0, probs[np.maximum(fold, 0), np.arange(len(others))], probs.mean(0))
    return likeness


def load_or_run(comp: Competition, workdir: Path) -> dict[str, AdversarialResult]:
    """The data folder's adversarial validation, cached in ``<workdir>/adversarial.json`` per data fingerprint."""
    path = workdir / "adversarial.json"
    saved = load(path, comp)
    if saved is not None:
        return saved
    result = adversarial_validation(comp)
    save(path, comp, result)
    return result


def load(path: Path, comp: Competition, need_rows: bool = True) -> dict[str, AdversarialResult] | None:
    """The adversarial validation saved at ``path`` (with the test-likeness beside it, when there) for ``comp``'s
    data; None when absent, unreadable, of other data, or (``need_rows``) saved without its test-likeness."""
    try:
        saved = json.loads(path.read_text())
        if saved.get("data_fingerprint") != comp.fingerprint:
            return None
        result = {m: AdversarialResult(**r) for m, r in saved["modalities"].items()}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        with np.load(path.with_suffix(".npz")) as rows:
            for m, r in result.items():
                if rows[m].shape == (comp.n_train + comp.n_test,):
                    r.test_likeness = rows[m]
    except (OSError, ValueError, KeyError, EOFError):  # absent (saved by an earlier version) or unreadable
        pass
    if need_rows and any(r.test_likeness is None for r in result.values()):
        return None
    return result


def save(path: Path, comp: Competition, result: dict[str, AdversarialResult]) -> None:
    """``path`` (JSON: AUCs per modality) and the per-row test-likeness beside it (``.npz``, written first)."""
    write_npz(path.with_suffix(".npz"), **{m: r.test_likeness for m, r in result.items()})
    write_json(path, {"data_fingerprint": comp.fingerprint, "modalities": {m: r.summary() for m, r in result.items()}})


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
