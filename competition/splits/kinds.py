"""Split kinds: which rows share a fold, and ``auto``'s choice between them from adversarial validation.

- ``stratified``: stratified K-fold over rows (the old ``group_duplicates = false``).
- ``grouped``: stratified group K-fold over duplicate groups: a recording and its copies stay on one side.
- ``cluster``: every validation fold is one speaker-like cluster of the audio (``competition/speakers.py``,
  K-means with as many clusters as folds, united with the duplicate groups), so each fold is scored on voices
  its training rows never heard: the out-of-fold score of a competition whose test rows are new speakers.
  One cluster per fold, not many small ones: a speaker cut into several clusters would sit on both sides.
- ``auto``: ``cluster`` when the audio's train-vs-test AUC (``competition/adversarial.py``) is at least
  ``CLUSTER_AUC``, else ``grouped``. Calibrated on new-speaker testbeds (``bench/speaker_testbed.py``: audio
  AUC 0.99 and 1.00) against the shipped data (0.62: other takes of the same speakers, whose grouped
  out-of-fold scores already match the test scores): a shift that matters, not any shift.

``inner_split`` cuts a fold's training rows once more, whole groups only (``cv.inner_rows`` passes the exact
duplicate groups), for early stopping (``Config.early_stop``): the validation fold never steers training.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from competition.data.duplicates import duplicate_groups
from competition.data.load import Competition
from competition.splits.adversarial import AdversarialResult
from competition.splits.speakers import speaker_clusters
from competition.utils.errors import UserError

SPLITS = ("auto", "grouped", "stratified", "cluster")
CLUSTER_AUC = 0.8  # audio train-vs-test AUC from which auto holds out speaker-like clusters


def choose_split(
    split: str, group_duplicates: bool, adversarial: dict[str, AdversarialResult] | None
) -> tuple[str, str]:
    """(kind, one line saying why) of the split a run asked for; ``auto`` decides from the adversarial AUCs."""
    if split != "auto":
        return split, f"split: {split} (asked for)"
    if not group_duplicates:
        return "stratified", "split: auto -> stratified (group_duplicates = false)"
    auc = adversarial["audio"].auc if adversarial else None
    if auc is not None and auc >= CLUSTER_AUC:
        return "cluster", (
            f"split: auto -> cluster: a classifier tells test audio from training audio (AUC {auc:.2f} >= "
            f"{CLUSTER_AUC}), as for new speakers, so each validation fold holds a speaker-like cluster of its own"
        )
    why = f"audio train-vs-test AUC {auc:.2f} < {CLUSTER_AUC}" if auc is not None else "no adversarial validation"
    return "grouped", f"split: auto -> grouped by duplicates ({why}: the test audio is like the training audio)"


def split_groups(comp: Competition, kind: str, k: int) -> np.ndarray | None:
    """(N,) group of each row for ``kind`` (None for ``stratified``: every row on its own)."""
    if kind == "stratified":
        return None
    if kind == "grouped":
        return duplicate_groups(comp.image, comp.audio)
    speakers = speaker_clusters(comp.audio, comp.y, k)  # a data property: fixed k-means seed
    return duplicate_groups(comp.image, comp.audio, speakers[:, None])  # a duplicate group joins its cluster


def cluster_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) fold of each row: each of the k groups is one fold, in a seeded order."""
    ids = np.unique(groups, return_inverse=True)[1].reshape(-1)
    if ids.max() + 1 != k:
        raise UserError(
            f"data: the speaker-like clusters merged into {ids.max() + 1} groups (rows duplicated across clusters), "
            f"fewer than --folds {k}; fix: --set split=grouped, or fewer folds"
        )
    return np.random.default_rng(seed).permutation(k)[ids].astype(np.int64)


def inner_split(y: np.ndarray, groups: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Indices into ``y`` of about ``share`` of the rows, whole groups only, class-stratified and seeded: the inner
    split early stopping watches. Rows of a group (a recording and its copies) stay on one side, else the inner
    loss falls with memorisation and never stops falling. With fewer groups than ``1 / share`` it is one whole
    group."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise UserError(
            "early_stop: the fold's training rows form a single group, so no inner split can keep groups apart; "
            "fix: --set early_stop=false, or more folds"
        )
    k = min(max(2, round(1 / share)), n_groups)
    if n_groups == len(y):  # every row its own group (split=stratified): the same cut, much faster
        splitter, args = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed), ()
    else:
        splitter, args = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed), (groups,)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        _, inner = next(splitter.split(np.zeros(len(y)), y, *args))
    return inner
