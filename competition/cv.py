"""Cross-validation: train every (model, fold) unit on the saved split, keep its out-of-fold and test logits,
history and weights in the run folder (its layout: ``runs.py``), resume finished units, and score out-of-fold
macro-F1; once a model has every fold, write its ``oof.npy`` and ``test.npy`` probabilities (predictions.py).
The ``cv`` command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import signal
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import adversarial, pseudo
from .artifacts import environment, remove_stale_temp_files, write_json, write_npz, write_text, write_torch
from .claims import UnitClaims
from .config import Config
from .console import CVProgress, console, cv_table, duplicates_line
from .data import Competition, duplicate_groups, duplicate_summary, fit_audio_scaler, load_competition
from .folds import load_or_make_folds
from .metrics import scores
from .predictions import write_prediction_files
from .runs import (
    DEFAULT_WORKDIR,
    UnitResult,
    add_to_run_config,
    check_folder_name,
    checkpoint_path,
    history_path,
    load_run,
    split_fingerprint,
    unit_finished,
    unit_path,
)
from .splits import inner_split
from .training import Learner, check_finite, model_kwargs, resolve_device

if TYPE_CHECKING:
    from .cluster import DaskUnits


def unit_seed(seed: int, model: str, fold: int) -> int:
    """A distinct, stable seed per (model, fold): crc32 is the same in every process (unlike hash())."""
    return (seed * 1_000_003 + zlib.crc32(model.encode()) + 7919 * fold) % 2**31


def planned_epochs(cfg: Config, model: str) -> int:
    """The epochs a unit of ``model`` trains (with early stopping, the most it may train: it often stops sooner)."""
    cfg = cfg.for_model(model)
    return cfg.max_epochs if cfg.early_stop else cfg.epochs


def inner_rows(comp: Competition, rows: np.ndarray, cfg: Config, seed: int) -> np.ndarray:
    """Positions in ``rows`` of the inner split early stopping watches, rows sharing an exact duplicate kept on one
    side (else the inner loss falls with memorisation and never stops falling). Duplicate groups whatever the
    split: under the cluster split, holding a whole speaker-like cluster out until the decay kept half a fold's
    rows from the stable phase and cost the audio model (docs/shift.md)."""
    return inner_split(comp.y[rows], duplicate_groups(comp.image, comp.audio)[rows], cfg.inner_share, seed)


def fit_unit(
    comp: Competition, cfg: Config, model: str, rows: np.ndarray, seed: int, device: str, threads: int,
    val_rows: np.ndarray | None = None, extra: tuple[np.ndarray, np.ndarray] | None = None, on_epoch=None,
) -> tuple[Learner, np.ndarray, dict]:  # fmt: skip
    """Train ``model`` (recipe ``cfg``, its per-model keys applied) on the training ``rows`` (and the test rows
    ``extra`` = (indices, pseudo-labels) after them) with the audio scaler fit on ``rows``; returns the learner,
    its (M, 10) test logits and its checkpoint dict. ``val_rows`` are scored each epoch for the history only. The
    one fitting recipe of fold units and full-data refits (refit.py)."""
    import torch

    torch.set_num_threads(threads)
    scaler = fit_audio_scaler(comp.audio, rows)  # training rows only: no leakage from validation rows
    audio = scaler.transform(comp.audio).astype(np.float32)
    test_audio = scaler.transform(comp.test_audio).astype(np.float32)
    inner = inner_rows(comp, rows, cfg, seed) if cfg.early_stop else None  # never a validation row
    train = (comp.image[rows], audio[rows], comp.y[rows])
    if extra is not None:  # cv --pseudo: the fold's confident test rows with their labels (pseudo.py)
        idx, labels = extra
        pseudo_rows = (comp.test_image[idx], test_audio[idx], labels)
        train = tuple(np.concatenate(p) for p in zip(train, pseudo_rows, strict=True))  # after the fold's own rows
    val = None if val_rows is None else (comp.image[val_rows], audio[val_rows], comp.y[val_rows])
    learner = Learner(model, cfg, seed=seed, device=device)
    learner.fit(*train, val=val, on_epoch=on_epoch, inner=inner)  # inner: positions among ``rows``
    test = learner.predict_logits(comp.test_image, test_audio)  # (M, 10)
    check_finite(model, cfg, learner.epochs_, test)
    checkpoint = {
        "model": model,
        "config": cfg.to_dict(),  # the resolved recipe this unit trained with (nanoGPT keeps it likewise)
        "hparams": model_kwargs(model, cfg),
        "state_dict": {k: v.cpu() for k, v in learner.model_.state_dict().items()},
        "audio_mean": scaler.mean_,
        "audio_scale": scaler.scale_,
    }
    return learner, test, checkpoint


def train_unit(
    comp: Competition, fold_of: np.ndarray, cfg: Config, model: str, fold: int, run_dir: Path,
    device: str, threads: int, events=None,
) -> UnitResult:  # fmt: skip
    """Train one model on one fold and write its artifacts; returns the fold's scores and time."""
    cfg = cfg.for_model(model)  # the run's recipe with this model's [per_model.<model>] keys
    t0 = time.perf_counter()
    tr, va = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)

    def on_epoch(row: dict) -> None:
        if events is not None:
            events.put(("epoch", model, fold, planned_epochs(cfg, model), row))

    seed, extra = unit_seed(cfg.seed, model, fold), comp.pseudo_rows.get(fold)
    learner, test, checkpoint = fit_unit(comp, cfg, model, tr, seed, device, threads, va, extra, on_epoch)
    oof = learner.val_logits_  # (n_val, 10), from the final epoch's validation pass
    seconds = time.perf_counter() - t0
    write_text(history_path(run_dir, model, fold), pd.DataFrame(learner.history_).to_csv(index=False))
    write_torch(checkpoint_path(run_dir, model, fold), checkpoint)
    result = UnitResult(model, fold, **scores(comp.y[va], oof), seconds=seconds, epochs=learner.epochs_)
    # Written last: its presence marks the unit finished.
    write_npz(unit_path(run_dir, model, fold), val_idx=va, oof_logits=oof, test_logits=test, result=result.to_json())
    return result


@dataclass
class CVResult:
    run_dir: Path
    per_fold: pd.DataFrame  # model, fold, macro_f1, accuracy, seconds, epochs
    oof: pd.DataFrame  # index model: macro_f1, accuracy (over all training rows)


def run_cv(
    cfg: Config,
    data_dir: Path,
    workdir: Path = DEFAULT_WORKDIR,
    run_name: str = "default",
    quiet: bool = False,
    cluster: DaskUnits | None = None,
) -> CVResult:
    """Train every (model, fold) unit not yet finished in ``workdir/run_name`` and score the run; with ``cluster``,
    as tasks on its Dask cluster instead of local processes."""
    device = resolve_device(cfg.device) if cluster is None else cfg.device  # a cluster's workers resolve "auto"
    comp = load_competition(data_dir)
    if cfg.pseudo:  # saved in the run's config as an absolute path
        cfg = dataclasses.replace(cfg, pseudo=str(pseudo.resolve_submission(cfg.pseudo)))
    if not quiet:
        console.print(f"data {comp.root}: {comp.n_train} train rows, {comp.n_test} test rows")
        console.print(duplicates_line(duplicate_summary(comp)))
    adv = adversarial.load_or_run(comp, workdir)  # cached per data folder: the split's auto choice reads it
    if not quiet:
        for line in adversarial.adversarial_lines(adv):
            console.print(line)
    split = load_or_make_folds(comp, workdir, cfg.folds, cfg.seed, cfg.group_duplicates, cfg.split)
    if not quiet:
        console.print(split.attrs["why"])
    fold_of = split["fold"].to_numpy()
    split_fp = split_fingerprint(fold_of)
    run_dir = workdir / run_name
    # cv --pseudo: a bad submission is refused before the run folder is made
    rnd = pseudo.compute(run_dir, comp, fold_of, split_fp, cfg) if cfg.pseudo else None
    add_to_run_config(run_dir, cfg, comp, split_fp)
    remove_stale_temp_files(run_dir)  # left by a killed earlier command (SIGKILL runs no cleanup)
    adversarial.save(run_dir / "adversarial.json", comp, adv)
    if rnd is not None:
        comp.pseudo_rows, lines = pseudo.save_or_check(run_dir, rnd)
        if not quiet:
            console.print(*lines, sep="\n")
    where = {} if cluster is None else {"scheduler": cluster.address}
    write_json(run_dir / "environment.json", environment(device, cfg.seed) | where)

    # Costliest models first (parameter count as the proxy), so the parallel workers end together
    # instead of one finishing a long unit alone.
    by_cost = sorted(cfg.models, key=_parameter_count, reverse=True)
    todo = [(m, k) for m in by_cost for k in range(cfg.folds) if not unit_finished(run_dir, m, k)]
    n_done = len(cfg.models) * cfg.folds - len(todo)
    if not quiet:
        grouped = {"grouped": "grouped by duplicates", "stratified": "not grouped"}.get(split.attrs["split"], "")
        grouped = grouped or "each a speaker-like cluster"
        console.print(
            f"run {run_dir}: {len(cfg.models)} models x {cfg.folds} folds ({grouped}), "
            f"{n_done} units already finished, {len(todo)} to train on {device if cluster is None else cluster}"
        )
    if todo:
        execute = _execute if cluster is None else cluster.execute
        _train_claimed(todo, comp, fold_of, cfg, run_dir, device, quiet, execute)
    return summarise(run_dir, comp, cfg, quiet)


CLAIM_POLL = 5.0  # seconds between looks at units another command is training


def _train_claimed(todo, comp, fold_of, cfg, run_dir, device, quiet, execute) -> None:
    """Train the units of ``todo`` this command can claim, then wait for those another command holds (training
    any it gives up or whose owner dies), so the run is complete when this returns."""
    with UnitClaims(run_dir) as claims:
        waiting = []
        while todo:
            mine, todo = claims.take(todo, lambda m, k: unit_finished(run_dir, m, k))
            if mine:
                execute(mine, comp, fold_of, cfg, run_dir, device, quiet)
                for unit in mine:
                    claims.release(*unit)
            if todo:
                if not quiet and todo != waiting:
                    console.print(f"waiting for {len(todo)} unit(s) that {claims.holders(todo)} is training")
                waiting = todo
                time.sleep(CLAIM_POLL)


def _parameter_count(model: str) -> int:
    from .models import create_model

    return sum(p.numel() for p in create_model(model).parameters())


def _plan_workers(cfg: Config, device: str, n_units: int) -> tuple[int, int]:
    """(processes, torch threads each). On CPU every unit trains single-threaded, so its numbers do not
    depend on --workers (a different thread count changes float summation order), and one process per
    core trains ~1.45x faster than one process using every core (bench/cv_speed.py). On a GPU, --workers N
    unit processes share the one device (default 1: not yet measured on a GPU)."""
    if device == "cuda":
        return max(1, min(cfg.workers or 1, n_units)), 1
    workers = cfg.workers or os.cpu_count() or 1
    return max(1, min(workers, n_units)), 1


def _execute(todo, comp, fold_of, cfg, run_dir, device, quiet) -> None:
    workers, threads = _plan_workers(cfg, device, len(todo))
    planned = {m: planned_epochs(cfg, m) for m in cfg.models}
    with CVProgress(sum(planned[m] for m, _ in todo), planned) if not quiet else _Null() as progress:
        if workers == 1:
            for model, fold in todo:
                sink = _DirectSink(progress)
                result = train_unit(comp, fold_of, cfg, model, fold, run_dir, device, threads, sink)
                progress.unit_trained(model, fold, result)
            return
        from multiprocessing.managers import SyncManager

        from joblib import Parallel, delayed, parallel_config

        # Ctrl-C reaches the whole process group: only this process acts on it. The helper processes ignore
        # it, and joblib stops the workers (loky kills their process trees with psutil).
        manager = SyncManager()
        manager.start(signal.signal, (signal.SIGINT, signal.SIG_IGN))
        loky = parallel_config("loky", initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
        with manager, loky, _stop_helpers_on_sigint():
            events = manager.Queue()
            stop = threading.Event()

            def drain() -> None:  # forward the workers' per-epoch events to the live display
                while not stop.is_set() or not events.empty():
                    try:
                        _, model, fold, epochs, row = events.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    except (EOFError, OSError, BrokenPipeError):
                        return
                    progress.epoch(model, fold, epochs, row)

            drainer = threading.Thread(target=drain, daemon=True)
            drainer.start()
            try:
                jobs = Parallel(n_jobs=workers, return_as="generator_unordered")(
                    delayed(train_unit)(comp, fold_of, cfg, m, k, run_dir, device, threads, events) for m, k in todo
                )
                for result in jobs:
                    progress.unit_trained(result.model, result.fold, result)
            finally:
                stop.set()
                drainer.join(timeout=2)


@contextlib.contextmanager
def _stop_helpers_on_sigint():
    """Ctrl-C during a parallel run kills the worker and manager processes at once and raises KeyboardInterrupt.
    The interrupt alone could land inside joblib's wait loop and be lost there, leaving the run waiting on
    workers for minutes; with the workers gone, joblib fails fast and the failure is reported as the interrupt."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    import psutil

    interrupted = threading.Event()

    def on_sigint(signum, frame) -> None:
        interrupted.set()
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "resource_tracker" not in " ".join(child.cmdline()):  # it cleans up after the others
                    child.kill()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except Exception:
        if interrupted.is_set():
            raise KeyboardInterrupt from None
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


class _DirectSink:
    """The in-process stand-in for the workers' event queue."""

    def __init__(self, progress):
        self.progress = progress

    def put(self, event) -> None:
        _, model, fold, epochs, row = event
        self.progress.epoch(model, fold, epochs, row)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def epoch(self, *a) -> None:
        pass

    def unit_trained(self, *a) -> None:
        pass


def summarise(run_dir: Path, comp: Competition, cfg: Config, quiet: bool = False) -> CVResult:
    """Per-fold and out-of-fold scores of every model of the run (this command's first, then those of earlier
    commands, e.g. after a rerun with a subset of --models); writes scores.csv, summary.json and prints a table."""
    run = load_run(run_dir, comp.n_train)
    models = list(dict.fromkeys([*cfg.models, *run.meta["config"]["models"]]))
    per_fold = pd.DataFrame([dataclasses.asdict(r) for m in models if m in run.folds for r in run.folds[m]])
    oof_rows = {}
    for m in models:
        if m in run.folds and len(run.folds[m]) == cfg.folds:
            oof_rows[m] = scores(comp.y, run.oof[m])  # f1_score(average="macro") over all training rows
            write_prediction_files(run_dir / m, run.oof[m], run.test[m])  # oof.npy, test.npy
    oof = pd.DataFrame.from_dict(oof_rows, orient="index", columns=["macro_f1", "accuracy"])
    write_text(run_dir / "scores.csv", per_fold.to_csv(index=False))
    write_json(run_dir / "summary.json", {"oof": oof_rows, "per_fold": per_fold.to_dict(orient="records")})
    if not quiet and len(oof):
        console.print(cv_table(per_fold, oof, f"{run_dir.name}: {cfg.folds}-fold CV, macro-F1"))
    return CVResult(run_dir, per_fold, oof)


def cv_command(args) -> int:
    """``python run.py cv``: resolve the config from the command line and run the CV."""
    from .config import config_from_args

    cfg, name = config_from_args(args)
    workdir = Path(args.workdir) if args.workdir else DEFAULT_WORKDIR
    if args.track:
        from .tracking import import_mlflow, log_cv_run

        import_mlflow()  # a missing package is an error before training, not after
    run_name = check_folder_name(name if args.run is None else args.run)
    if getattr(args, "scheduler", None) is None:
        result = run_cv(cfg, Path(args.data), workdir, run_name)
    else:
        from .cluster import DaskUnits

        with DaskUnits(args.scheduler, args.artifacts) as cluster:
            result = run_cv(cfg, Path(args.data), workdir, run_name, cluster=cluster)
    if args.track:
        rid = log_cv_run(result.run_dir, workdir)
        console.print(f"mlflow: {'logged as run ' + rid if rid else 'already logged, unchanged'}")
    return 0
