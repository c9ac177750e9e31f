"""Consensus: duplicate-aware (transductive) labelling. Rows that show one recording share one label, so the
blend's evidence is pooled within each duplicate group and every row of the group gets the group's label
(pure numpy, no files).

Groups join rows that are byte-identical in any modality, training and test rows together (transitively,
as ``data.duplicate_groups`` does for the grouped split). Pooling sums the rows' log-probabilities: if the
rows of a group are conditionally independent views of one label y (naive Bayes, a product of experts),
p(y | x_1..x_k) is proportional to p(y)^(1-k) * prod_i p(y | x_i); with the class prior taken as flat (the
shipped classes are near balanced) that is the argmax of sum_i log p(y | x_i). The rows of a group are not
independent (they repeat one recording), so the summed scores are overconfident, but any positive scaling
gives the same label: the probabilities written are the renormalised *mean* of the log-probabilities (a
geometric mean, as the ``logits`` blend averages models), which keeps one row's calibration.

The step is only valid when the data says so: every training group must hold a single label (``mixed``
counts the groups that do not), and out of fold it is only honest when each group's training rows lie in
one validation fold (else a row's pooled partners were predicted by models that trained on its label). A
test row whose group holds training rows takes their label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_softmax, softmax

from competition.data.duplicates import duplicate_groups
from competition.metrics import macro_f1
from competition.utils.errors import UserError

FLOOR = 1e-30  # a probability that underflowed to 0 is read as this, so one row cannot veto a class outright


@dataclass
class Groups:
    """Duplicate groups over the training rows followed by the test rows."""

    train: np.ndarray  # (N,) group id of each training row
    test: np.ndarray  # (M,) group id of each test row, in the same id space

    @property
    def n_duplicated(self) -> int:
        """Rows (train and test) that share their group with at least one other row."""
        ids = np.concatenate([self.train, self.test])
        return int((np.bincount(ids)[ids] > 1).sum())


def joint_groups(train: list[np.ndarray], test: list[np.ndarray]) -> Groups:
    """Group training and test rows together: rows identical in any modality (train-train, test-test and
    test-train) share a group. ``train`` and ``test``: one (N, d) and one (M, d) array per modality."""
    ids = duplicate_groups(*(np.concatenate([a, b]) for a, b in zip(train, test, strict=True)))
    n = len(train[0])
    return Groups(ids[:n], ids[n:])


def _groups_spanning(groups: np.ndarray, values: np.ndarray) -> int:
    """How many groups hold more than one distinct value."""
    pairs = np.unique(np.stack([groups, values]), axis=1)  # distinct (group, value) pairs
    return int((np.bincount(pairs[0]) > 1).sum())


def mixed_groups(groups: np.ndarray, y: np.ndarray) -> int:
    """How many groups of training rows hold more than one label."""
    return _groups_spanning(groups, y)


def split_groups(groups: np.ndarray, fold_of: np.ndarray) -> int:
    """How many groups of training rows lie in more than one fold (pooling them out of fold would leak)."""
    return _groups_spanning(groups, fold_of)


def pool(probs: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """(n, 10) probabilities -> (n, 10) group probabilities: each row gets the renormalised mean of its
    group's log-probabilities (argmax = that of the summed log-probabilities)."""
    _, inv, counts = np.unique(groups, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    logp = np.log(np.maximum(np.asarray(probs, dtype=np.float64), FLOOR))
    sums = np.zeros((len(counts), logp.shape[1]))
    np.add.at(sums, inv, logp)
    return softmax(log_softmax(sums / counts[:, None], axis=1)[inv], axis=1)


@dataclass
class ConsensusOnTest:
    probs: np.ndarray  # (M, 10) group probabilities (one-hot for rows that take a training label)
    groups: int  # test groups of two or more rows
    grouped_rows: int  # test rows in those groups
    from_train: int  # test rows whose group holds training rows (they take its label)
    changed: int  # test rows whose label differs from the blend's


def consensus_on_test(test_probs: np.ndarray, groups: Groups, y: np.ndarray) -> ConsensusOnTest:
    """Pool the test rows' probabilities within their groups; a group that holds training rows (label-pure,
    checked by the caller) gives its rows the training label."""
    out = pool(test_probs, groups.test)
    label = np.full(max(groups.train.max(initial=-1), groups.test.max(initial=-1)) + 1, -1)
    label[groups.train] = y  # label-pure groups: any training row's label is the group's
    taken = label[groups.test]
    seen = taken >= 0
    out[seen] = np.eye(test_probs.shape[1])[taken[seen]]
    counts = np.bincount(groups.test)
    return ConsensusOnTest(
        probs=out,
        groups=int((counts > 1).sum()),
        grouped_rows=int((counts[groups.test] > 1).sum()),
        from_train=int(seen.sum()),
        changed=int((out.argmax(1) != np.asarray(test_probs).argmax(1)).sum()),
    )


def consensus_f1(y: np.ndarray, oof_probs: np.ndarray, groups: np.ndarray) -> float:
    """Macro-F1 of the consensus of out-of-fold probabilities over the training groups. Honest only when
    every group lies in one fold (check ``split_groups`` first): a row is then pooled only with rows of its
    own validation fold, whose predictions came from models that never saw any of them."""
    return macro_f1(y, pool(oof_probs, groups).argmax(1))


MODES = ("auto", "on", "off")


@dataclass
class ConsensusReport:
    """What the consensus step did, for submit's table, its one line and the manifest."""

    mode: str  # the --consensus flag
    applied: bool
    line: str  # the one line submit prints
    train_groups: int = 0  # distinct groups among the training rows
    mixed_groups: int = 0
    oof_before: float | None = None  # honest out-of-fold macro-F1 of the blend
    oof_after: float | None = None  # the same after consensus
    test: ConsensusOnTest | None = None
    oof_probs: np.ndarray | None = field(default=None, repr=False)  # (N, 10) out of fold after consensus

    def manifest(self) -> dict:
        out = {k: getattr(self, k) for k in ("mode", "applied", "line", "train_groups", "mixed_groups")}
        out |= {"oof_macro_f1_before": self.oof_before, "oof_macro_f1_after": self.oof_after}
        if self.test is not None:
            t = self.test
            out |= {"test_groups": t.groups, "test_grouped_rows": t.grouped_rows}
            out |= {"test_rows_changed": t.changed, "test_rows_from_train_labels": t.from_train}
        return out


def decide_consensus(
    mode: str,
    groups: Groups | None,
    y: np.ndarray,
    fold_of: np.ndarray,
    oof_probs: np.ndarray,
    test_probs: np.ndarray,
) -> ConsensusReport:
    """Run the consensus step on a blend's honest out-of-fold and its test probabilities. ``auto`` applies
    it when the training groups are label-pure, the split keeps each group in one fold and the out-of-fold
    macro-F1 is not lowered; ``on`` applies it whenever it is valid and refuses (UserError) when it is not.
    ``groups`` may be None only for ``off``."""
    if mode not in MODES:
        raise ValueError(f"unknown consensus mode {mode!r}")
    if mode == "off":
        return ConsensusReport(mode, False, "consensus off (--consensus off)")
    if groups.n_duplicated == 0:
        return ConsensusReport(
            mode, False, "consensus: no duplicate rows in the training or test rows, nothing to pool"
        )
    n_groups = len(np.unique(groups.train))
    mixed = mixed_groups(groups.train, y)
    split = split_groups(groups.train, fold_of)
    refusal = None
    if mixed:
        refusal = (
            f"consensus off: {mixed} of {n_groups} duplicate groups of training rows hold more than one label, "
            "so duplicate rows do not share a label in this data"
        )
    elif split:
        refusal = (
            f"consensus refused: {split} duplicate groups of training rows span several folds of the saved split "
            "(not grouped by duplicates), so their out-of-fold consensus would leak labels; fix: cv in a new "
            "--workdir with group_duplicates = true, or pass --consensus off"
        )
    if refusal:
        if mode == "on":
            reason = refusal.partition(": ")[2]
            raise UserError(f"--consensus on: {reason}" + ("" if "fix:" in reason else "; fix: pass --consensus auto"))
        return ConsensusReport(mode, False, refusal, n_groups, mixed)
    before = macro_f1(y, oof_probs.argmax(1))
    pooled = pool(oof_probs, groups.train)
    after = macro_f1(y, pooled.argmax(1))  # consensus_f1, the pooled rows kept for the written submission
    test = consensus_on_test(test_probs, groups, y)
    applied = mode == "on" or after >= before
    why = "" if mode == "on" else (" (not lower)" if applied else " (lower: off)")
    line = (
        f"consensus {'on' if applied else 'off'}: out-of-fold macro-F1 {before:.4f} -> {after:.4f}{why}; "
        f"{n_groups} training groups, all label-pure; test: {test.groups} groups of {test.grouped_rows} rows, "
        f"{test.changed} labels changed, {test.from_train} rows take a training row's label"
    )
    return ConsensusReport(mode, applied, line, n_groups, 0, before, after, test, pooled)
