"""Blend: combine models' out-of-fold and test predictions into one probability matrix (pure numpy, no files).

Two averaging spaces: ``logits`` averages log-probabilities (a weighted geometric mean of the models'
probabilities) and ``probs`` averages probabilities (an arithmetic mean). The same space is used to average
a model's K fold predictions on the test rows and to blend the models. Two blends: ``equal`` weights, and
``fitted`` weights from greedy ensemble selection with replacement (Caruana et al. 2004, the algorithm of
AutoGluon's weighted ensemble). The fitted blend is also scored *nested*: for every fold, weights fit on the
other folds' out-of-fold rows predict that fold's rows, so its score is not inflated by fitting and scoring
the same rows. That honest score is the one used to choose the blend that gets written. A third candidate,
``stack``, is a logistic regression on the models' log-probabilities (competition/stack.py), scored nested too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.special import log_softmax, softmax

from competition.ensemble.stack import (
    MIN_FOLDS,
    chosen_c,
    fit_stacker,
    model_shares,
    nested_stack,
    stack_features,
    stacker_probs,
)
from competition.metrics import accuracy, macro_f1

SPACES = ("logits", "probs")
BLENDS = ("equal", "fitted", "stack")
ROUNDS = 25  # greedy selection steps, AutoGluon's default ensemble_size


def to_space(logits: np.ndarray, space: str) -> np.ndarray:
    """Logits (..., 10) as log-probabilities (``logits``) or probabilities (``probs``): the quantity averaged."""
    if space == "logits":
        return log_softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    if space == "probs":
        return softmax(np.asarray(logits, dtype=np.float64), axis=-1)
    raise ValueError(f"unknown space {space!r}; expected one of {SPACES}")


def to_probs(averaged: np.ndarray, space: str) -> np.ndarray:
    """Probabilities of an average taken in ``space`` (a mean of log-probabilities is renormalised)."""
    return softmax(averaged, axis=-1) if space == "logits" else averaged


def fold_average(test_logits: np.ndarray, space: str) -> np.ndarray:
    """One model's (K, M, 10) fold test logits -> (M, 10) mean in ``space``."""
    return to_space(test_logits, space).mean(axis=0)


def combine(stacked: np.ndarray, weights: np.ndarray, space: str) -> np.ndarray:
    """(n_models, N, 10) predictions in ``space`` and (n_models,) weights -> (N, 10) blended probabilities."""
    return to_probs(np.tensordot(weights, stacked, axes=1), space)


def fold_blend(test_logits: list[np.ndarray], fold_weights: np.ndarray, k: int, space: str) -> np.ndarray:
    """Fold k's blend of the models' (K, M, 10) fold test logits, with fold k's weights (row k of the
    (K, n_models) ``fold_weights``) -> (M, 10) probabilities."""
    return combine(np.stack([to_space(t[k], space) for t in test_logits]), fold_weights[k], space)


def fold_blends(test_logits: list[np.ndarray], fold_weights: np.ndarray, space: str) -> np.ndarray:
    """(K, M, 10): every fold's ``fold_blend``."""
    return np.stack([fold_blend(test_logits, fold_weights, k, space) for k in range(len(fold_weights))])


def candidate_fold_probs(test: dict[str, np.ndarray], candidate: Candidate) -> np.ndarray:
    """(S, M, 10): the candidate's weights applied to each of the S fold models (or refits) of its models alone,
    ``test`` being {model: (S, M, 10) logits} in the candidate's order; the candidate's test blend averages them
    (a stack: its models' shares of its coefficients, an approximation)."""
    models = list(test)
    space = candidate.space if candidate.space in SPACES else "logits"  # a single model has no space
    weights = np.tile(candidate.weights, (len(test[models[0]]), 1))  # (S, n_models)
    return fold_blends([test[m] for m in models], weights, space)


def objective(y: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """What greedy selection maximises: macro-F1 (the competition metric), then minus log-loss to break the
    frequent ties of a count-based metric in favour of the better-calibrated blend."""
    p = np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0)
    return macro_f1(y, probs.argmax(axis=1)), float(np.log(p).mean())


def caruana_weights(stacked: np.ndarray, y: np.ndarray, space: str, rounds: int = ROUNDS) -> np.ndarray:
    """Greedy ensemble selection with replacement (Caruana et al. 2004): start from no model, add at each
    step the model (repeats allowed) whose addition gives the best blend, and keep the blend of the best
    step (the earliest on ties, so the smallest ensemble). Weights are counts / total: >= 0, summing to 1."""
    n_models = len(stacked)
    counts = np.zeros(n_models, dtype=np.int64)
    total = np.zeros(stacked.shape[1:], dtype=np.float64)
    best, best_counts = None, None
    for step in range(1, rounds + 1):
        trials = [objective(y, to_probs((total + stacked[m]) / step, space)) for m in range(n_models)]
        m = max(range(n_models), key=lambda i: trials[i])  # max() keeps the first of equal scores
        counts[m] += 1
        total += stacked[m]
        if best is None or trials[m] > best:
            best, best_counts = trials[m], counts.copy()
    return best_counts / best_counts.sum()


def nested_caruana(
    stacked: np.ndarray, y: np.ndarray, fold_of: np.ndarray, space: str, rounds: int = ROUNDS
) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions of the fitted blend itself: each fold's rows are blended with weights fit on
    the other folds' rows only. Returns (N, 10) probabilities and the (K, n_models) per-fold weights."""
    folds = np.unique(fold_of)
    out = np.zeros(stacked.shape[1:], dtype=np.float64)
    weights = np.zeros((len(folds), len(stacked)))
    for i, k in enumerate(folds):
        fit, held = fold_of != k, fold_of == k
        weights[i] = caruana_weights(stacked[:, fit], y[fit], space, rounds)
        out[held] = combine(stacked[:, held], weights[i], space)
    return out, weights


@dataclass
class Candidate:
    """One scored way of predicting: a single model or a blend, in one averaging space."""

    name: str  # a model name, "equal", "fitted" or "stack"
    space: str
    weights: np.ndarray  # (n_models,) summing to 1 (stack: each model's share of its coefficients)
    macro_f1: float  # on the out-of-fold rows (in-sample for the fitted blend's weights and the stacker)
    accuracy: float
    nested_f1: float | None = None  # fitted blend and stack: fit without the scored fold
    nested_accuracy: float | None = None
    fold_weights: np.ndarray | None = field(default=None, repr=False)
    oof_probs: np.ndarray | None = field(default=None, repr=False)  # (N, 10) honest (nested where fit)
    test_probs: np.ndarray | None = field(default=None, repr=False)  # (M, 10)
    details: dict = field(default_factory=dict)  # stack: the C chosen (final and per fold), seconds

    @property
    def honest_f1(self) -> float:
        """The score to choose by: one that did not see the rows it scores."""
        return self.nested_f1 if self.nested_f1 is not None else self.macro_f1


@dataclass
class BlendResult:
    models: list[str]
    singles: list[Candidate]  # each model alone (space does not change a single model's out-of-fold argmax)
    blends: list[Candidate]  # every (blend, space) asked for
    chosen: Candidate
    test_probs: np.ndarray  # (M, 10) blended test probabilities of the chosen candidate


def blend_models(
    oof: dict[str, np.ndarray],
    test: dict[str, np.ndarray],
    y: np.ndarray,
    fold_of: np.ndarray,
    spaces: tuple[str, ...] = SPACES,
    blends: tuple[str, ...] = BLENDS,
    rounds: int = ROUNDS,
) -> BlendResult:
    """Score every model and every requested (blend, space) on the out-of-fold rows, choose the candidate with
    the best honest macro-F1 (ties: the earlier space, then ``equal`` before ``fitted``, the stack last), and
    blend the test rows with its weights. ``oof``: {model: (N, 10) logits}; ``test``: {model: (S, M, 10)
    logits of the S fold models (or full-data refits) that predict the test rows}. The stack is a candidate
    only with three folds or more (see competition/stack.py)."""
    models = list(oof)
    n = len(models)
    singles = []
    for i, m in enumerate(models):
        s = {"macro_f1": macro_f1(y, oof[m].argmax(1)), "accuracy": accuracy(y, oof[m].argmax(1))}
        singles.append(Candidate(m, "-", np.eye(n)[i], **s))
    candidates = []
    for space in spaces:
        stacked = np.stack([to_space(oof[m], space) for m in models])
        test_stacked = np.stack([fold_average(test[m], space) for m in models])
        for kind in blends:
            if kind == "stack":
                continue
            if kind == "equal":
                w = np.full(n, 1.0 / n)
                nested = fold_weights = None
            else:
                w = caruana_weights(stacked, y, space, rounds)
                nested, fold_weights = nested_caruana(stacked, y, fold_of, space, rounds)
            probs = combine(stacked, w, space)
            pred = probs.argmax(1)
            cand = Candidate(kind, space, w, macro_f1(y, pred), accuracy(y, pred), fold_weights=fold_weights)
            if nested is not None:
                cand.nested_f1 = macro_f1(y, nested.argmax(1))
                cand.nested_accuracy = accuracy(y, nested.argmax(1))
            cand.oof_probs = probs if nested is None else nested
            cand.test_probs = combine(test_stacked, w, space)
            candidates.append(cand)
    if "stack" in blends and len(np.unique(fold_of)) >= MIN_FOLDS:
        candidates.append(stack_candidate(oof, test, y, fold_of))
    chosen = max(candidates, key=lambda c: c.honest_f1)  # first of equal scores
    return BlendResult(models, singles, candidates, chosen, chosen.test_probs)


def stack_candidate(
    oof: dict[str, np.ndarray], test: dict[str, np.ndarray], y: np.ndarray, fold_of: np.ndarray
) -> Candidate:
    """The stacker as a candidate: nested out-of-fold score, and a stacker fit on every out-of-fold row
    (C chosen over all the folds) for the test rows, which it reads as fold-averaged log-probabilities."""
    t0 = time.perf_counter()
    models = list(oof)
    x = stack_features([oof[m] for m in models])
    nested, fold_c = nested_stack(x, y, fold_of)
    final = fit_stacker(x, y, fold_of)
    pred = stacker_probs(final, x).argmax(1)
    cand = Candidate("stack", "logits", model_shares(final, len(models)), macro_f1(y, pred), accuracy(y, pred))
    cand.nested_f1, cand.nested_accuracy = macro_f1(y, nested.argmax(1)), accuracy(y, nested.argmax(1))
    cand.oof_probs = nested
    cand.test_probs = stacker_probs(final, stack_features([fold_average(test[m], "logits") for m in models]))
    cand.details = {"C": chosen_c(final), "fold_C": fold_c, "seconds": round(time.perf_counter() - t0, 2)}
    return cand


@dataclass
class Agreement:
    """How often two models predict the same label, out of fold and on the test rows."""

    a: str
    b: str
    oof: float  # share of out-of-fold rows with the same predicted label
    test: float  # the same on the test rows (each model's fold-averaged logits)
    shifted: bool  # the test rows agree far less than the out-of-fold rows


def agreement_shift(oof: dict[str, np.ndarray], test: dict[str, np.ndarray], min_drop: float = 0.05) -> list[Agreement]:
    """Every pair of models' label agreement out of fold and on the test rows: a label-free check for a test
    set unlike the training rows (noisier audio, unseen speakers), which no out-of-fold score can see. Test
    rows drawn like the training rows agree about as often; a pair is ``shifted`` when its test agreement is
    below the out-of-fold one by more than ``min_drop`` and by more than 4 binomial standard errors."""
    models = list(oof)
    labels = {m: (oof[m].argmax(1), fold_average(test[m], "logits").argmax(1)) for m in models}
    out = []
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            on_oof = float((labels[a][0] == labels[b][0]).mean())
            on_test = float((labels[a][1] == labels[b][1]).mean())
            se = np.sqrt(max(on_oof * (1 - on_oof), 1e-12) / len(labels[a][1]))
            out.append(Agreement(a, b, on_oof, on_test, bool(on_oof - on_test > max(min_drop, 4 * se))))
    return out


def odd_ones_out(agreement: list[Agreement]) -> list[str]:
    """The models that part from every other model on the test rows while some other pair still agrees as it
    did out of fold: each sees test inputs unlike its training inputs (e.g. an audio model on noisier test
    audio), so its out-of-fold score, and any weight fitted on it, overrates it on the test rows. When every
    pair parts, no model is singled out (there is nothing to tell which ones moved)."""
    models = list(dict.fromkeys(m for a in agreement for m in (a.a, a.b)))
    out = []
    for m in models:
        own = [a.shifted for a in agreement if m in (a.a, a.b)]
        rest = [a.shifted for a in agreement if m not in (a.a, a.b)]
        if own and all(own) and rest and not all(rest):
            out.append(m)
    return out


def shifted_blocks(agreement: list[Agreement], modalities: dict[str, tuple[str, ...]]) -> list[str]:
    """The models to leave out of the blend: single odd ones out (``odd_ones_out``) and whole blocks of models
    that read the same modalities (every audio-only model, every image-only model, every fusion model).

    A shift in one modality moves every model that reads only it alike: two audio models on new speakers agree
    with each other on the test rows, so neither parts from *every* other model, yet both part from every
    image-reading model while those still agree among themselves. A block goes when each pair of one of its
    models and a model outside it is shifted, and some pair outside it still agrees as out of fold. When the
    blocks that go would leave no model, none goes (nothing tells which side moved)."""
    models = list(dict.fromkeys(m for a in agreement for m in (a.a, a.b)))
    out = set(odd_ones_out(agreement))
    going = set()
    for reads in dict.fromkeys(modalities[m] for m in models):
        block = {m for m in models if modalities[m] == reads}
        cross = [a.shifted for a in agreement if (a.a in block) != (a.b in block)]
        rest = [a.shifted for a in agreement if a.a not in block and a.b not in block]
        if cross and all(cross) and rest and not all(rest):
            going |= block
    if going and going != set(models):
        out |= going
    return [m for m in models if m in out]
