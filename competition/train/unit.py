"""Unit: one (model, fold) unit of a cv run (with seed bagging, one (model, fold, seed) unit): its seed, the
fitting recipe it shares with full-data refits (``fit_unit``), and ``train_unit``, which trains it and writes its
files into the run folder (fold file last)."""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from competition.config import Config
from competition.data.duplicates import duplicate_groups
from competition.data.load import Competition, fit_audio_scaler, normalise_audio
from competition.metrics import scores
from competition.splits.kinds import inner_split
from competition.store.atomic import write_npz, write_text, write_torch
from competition.store.runs import UnitResult, checkpoint_path, history_path, load_checkpoint, unit_path
from competition.train.learner import Learner, check_finite, model_kwargs
from competition.train.progress import EpochEvent, EventSink
from competition.train.pseudo import source_checkpoint

PseudoRows = dict[int, tuple[np.ndarray, np.ndarray]]  # {fold: (test row indices, their pseudo-labels)}


@dataclass(frozen=True)
class CVJob:
    """What every unit of one cv run shares: the data, the split, the recipe, the run folder, where to train,
    and (``cv --pseudo``) each fold's pseudo-labelled test rows."""

    comp: Competition
    fold_of: np.ndarray  # (N,) fold of each training row
    cfg: Config
    run_dir: Path
    device: str
    pseudo: PseudoRows = field(default_factory=dict)


def unit_seed(seed: int, model: str, fold: int, bag: int = 0) -> int:
    """A distinct, stable seed per (model, fold) and, with seed bagging, per seed ``bag`` of the fold (0: the seed
    of a run without bagging): crc32 is the same in every process (unlike hash())."""
    name = model if bag == 0 else f"{model}/seed{bag}"
    return (seed * 1_000_003 + zlib.crc32(name.encode()) + 7919 * fold) % 2**31


def planned_epochs(cfg: Config, model: str) -> int:
    """The epochs a unit of ``model`` trains (with early stopping, the most it may train: it often stops sooner)."""
    cfg = cfg.for_model(model)
    return cfg.max_epochs if cfg.early_stop else cfg.epochs


def inner_rows(comp: Competition, rows: np.ndarray, cfg: Config, seed: int) -> np.ndarray:
    """Positions in ``rows`` of the inner split early stopping watches, rows sharing an exact duplicate kept on one
    side (else the inner loss falls with memorisation and never stops falling). Duplicate groups whatever the
    split: under the cluster split, holding a whole speaker-like cluster out until the decay kept half a fold's
    rows from the stable phase and cost the audio model (docs/explanation/validation.md)."""
    return inner_split(comp.y[rows], duplicate_groups(comp.image, comp.audio)[rows], cfg.inner_share, seed)


def unit_audio(comp: Competition, cfg: Config, rows: np.ndarray) -> tuple[StandardScaler, np.ndarray, np.ndarray]:
    """A unit's audio inputs: (its scaler, the (N, 507) training and (M, 507) test audio), each recording normalised
    as ``cfg.audio_norm`` says, then standardised with the statistics of the training ``rows`` only (no leakage
    from validation rows). The one preparation of fold units, batched units and refits."""
    raw, raw_test = normalise_audio(comp.audio, cfg.audio_norm), normalise_audio(comp.test_audio, cfg.audio_norm)
    scaler = fit_audio_scaler(raw, rows)
    return scaler, scaler.transform(raw).astype(np.float32), scaler.transform(raw_test).astype(np.float32)


def fit_unit(
    comp: Competition, cfg: Config, model: str, rows: np.ndarray, seed: int, device: str, threads: int,
    val_rows: np.ndarray | None = None, extra: tuple[np.ndarray, np.ndarray] | None = None, on_epoch=None,
    init: dict | None = None,
) -> tuple[Learner, np.ndarray, dict]:  # fmt: skip
    """Train ``model`` (recipe ``cfg``, its per-model keys applied) on the training ``rows`` (and the test rows
    ``extra`` = (indices, pseudo-labels) after them) with the audio scaler fit on ``rows``; returns the learner,
    its (M, 10) test logits and its checkpoint dict. ``val_rows`` are scored each epoch for the history only. The
    one fitting recipe of fold units and full-data refits (refit.py)."""
    import torch

    torch.set_num_threads(threads)
    scaler, audio, test_audio = unit_audio(comp, cfg, rows)
    inner = inner_rows(comp, rows, cfg, seed) if cfg.early_stop else None  # never a validation row
    train = (comp.image[rows], audio[rows], comp.y[rows])
    if extra is not None:  # cv --pseudo: the fold's confident test rows with their labels (pseudo.py)
        idx, labels = extra
        pseudo_rows = (comp.test_image[idx], test_audio[idx], labels)
        train = tuple(np.concatenate(p) for p in zip(train, pseudo_rows, strict=True))  # after the fold's own rows
    val = None if val_rows is None else (comp.image[val_rows], audio[val_rows], comp.y[val_rows])
    learner = Learner(model, cfg, seed=seed, device=device)
    learner.fit(*train, val=val, on_epoch=on_epoch, inner=inner, init=init)  # inner: positions among ``rows``
    test = learner.predict_logits(comp.test_image, test_audio)  # (M, 10)
    check_finite(model, cfg, learner.epochs_, test)
    state = {k: v.cpu() for k, v in learner.model_.state_dict().items()}
    return learner, test, unit_checkpoint(model, cfg, state, scaler)


def unit_checkpoint(model: str, cfg: Config, state_dict: dict, scaler) -> dict:
    """A unit's checkpoint dict: the model, its resolved recipe, weights and the audio scaler it trained with."""
    return {
        "model": model,
        "config": cfg.to_dict(),  # the resolved recipe this unit trained with (nanoGPT keeps it likewise)
        "hparams": model_kwargs(model, cfg),
        "state_dict": state_dict,
        "audio_mean": scaler.mean_,
        "audio_scale": scaler.scale_,
    }


def train_unit(
    job: CVJob, model: str, fold: int, threads: int, events: EventSink | None = None, seed: int = 0
) -> UnitResult:
    """Train one model on one fold of ``job`` (with seed bagging, its seed ``seed`` of ``cfg.seeds``) and write
    its artifacts; returns the unit's scores and time."""
    comp, cfg = job.comp, job.cfg.for_model(model)  # the recipe with [per_model.<model>] keys
    t0 = time.perf_counter()
    tr, va = np.flatnonzero(job.fold_of != fold), np.flatnonzero(job.fold_of == fold)

    def on_epoch(row: dict) -> None:
        if events is not None:
            events.put(EpochEvent(model, fold, planned_epochs(cfg, model), row, seed))

    extra = job.pseudo.get(fold)
    rng_seed = unit_seed(cfg.seed, model, fold, seed)
    init = None
    if cfg.pseudo and cfg.pseudo_init == "source":  # the source's fold model: it never saw this fold's labels
        init = load_checkpoint(source_checkpoint(Path(cfg.pseudo), model, fold, seed))["state_dict"]
    learner, test, checkpoint = fit_unit(comp, cfg, model, tr, rng_seed, job.device, threads, va, extra, on_epoch, init)
    oof = learner.val_logits_  # (n_val, 10), from the final epoch's validation pass
    seconds = time.perf_counter() - t0
    return write_unit(job, model, fold, seed, learner.history_, oof, test, checkpoint, seconds)


def write_unit(
    job: CVJob, model: str, fold: int, seed: int, history: list[dict], oof: np.ndarray, test: np.ndarray,
    checkpoint: dict, seconds: float,
) -> UnitResult:  # fmt: skip
    """Write a trained unit's files into the run folder (history, checkpoint, then the fold file, whose presence
    marks the unit finished); returns its scores. ``oof`` (n_val, 10) are the fold's validation rows' logits."""
    run_dir, va = job.run_dir, np.flatnonzero(job.fold_of == fold)
    write_text(history_path(run_dir, model, fold, seed), pd.DataFrame(history).to_csv(index=False))
    write_torch(checkpoint_path(run_dir, model, fold, seed), checkpoint)
    result = UnitResult(model, fold, **scores(job.comp.y[va], oof), seconds=seconds, epochs=len(history), seed=seed)
    # Written last: its presence marks the unit finished.
    write_npz(
        unit_path(run_dir, model, fold, seed), val_idx=va, oof_logits=oof, test_logits=test, result=result.to_json()
    )
    return result
