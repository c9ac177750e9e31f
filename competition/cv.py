"""Cross-validation: train every (model, fold) unit on the saved split, keep its out-of-fold and test logits,
history and weights under ``<workdir>/<run>/``, resume finished units, and score out-of-fold macro-F1.

Layout of a run: ``config.json`` (resolved config + data and split fingerprints), ``environment.json``,
``<model>/fold<k>.npz`` (val_idx, oof_logits, test_logits; written last, so it marks the unit done),
``<model>/fold<k>.pt`` (weights + audio scaler), ``<model>/fold<k>_history.csv``, ``scores.csv``, ``summary.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import signal
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import environment, write_json, write_npz, write_text, write_torch
from .config import Config
from .console import CVProgress, console, cv_table, duplicates_line
from .data import Competition, duplicate_summary, fit_audio_scaler, load_competition
from .errors import UserError
from .folds import load_or_make_folds
from .metrics import scores
from .training import Learner, check_finite, model_kwargs, resolve_device

DEFAULT_WORKDIR = Path(__file__).resolve().parent.parent / "folds"


def unit_seed(seed: int, model: str, fold: int) -> int:
    """A distinct, stable seed per (model, fold): crc32 is the same in every process (unlike hash())."""
    return (seed * 1_000_003 + zlib.crc32(model.encode()) + 7919 * fold) % 2**31


def unit_path(run_dir: Path, model: str, fold: int) -> Path:
    return run_dir / model / f"fold{fold}.npz"


def load_unit(path: Path) -> dict:
    """A finished unit's fold file, read whole: val_idx, oof_logits, test_logits and its result dict.
    An unreadable, truncated or incomplete file is a UserError naming it and the fix."""
    try:
        with np.load(path, allow_pickle=False) as z:
            unit = {k: z[k] for k in ("val_idx", "oof_logits", "test_logits")}
            unit["result"] = json.loads(str(z["result"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(
            f"{path}: unreadable or incomplete fold file ({type(e).__name__}); fix: delete it and rerun "
            "`run.py cv` with the run's flags, which trains that fold again"
        ) from None
    return unit


def unit_done(run_dir: Path, model: str, fold: int) -> bool:
    path = unit_path(run_dir, model, fold)
    if not path.exists():
        return False
    try:
        load_unit(path)
    except UserError:
        console.print(f"[yellow]warning:[/] {path}: unreadable or incomplete fold file; training that unit again")
        return False
    return True


def train_unit(
    comp: Competition, fold_of: np.ndarray, cfg: Config, model: str, fold: int, run_dir: Path,
    device: str, threads: int, events=None,
) -> dict:  # fmt: skip
    """Train one model on one fold and write its artifacts; returns the fold's scores and time."""
    import torch

    cfg = cfg.for_model(model)  # the run's recipe with this model's [per_model.<model>] keys
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    tr, va = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
    scaler = fit_audio_scaler(comp.audio, tr)  # training rows only: no leakage from validation rows
    audio = scaler.transform(comp.audio).astype(np.float32)
    test_audio = scaler.transform(comp.test_audio).astype(np.float32)

    def on_epoch(row: dict) -> None:
        if events is not None:
            events.put(("epoch", model, fold, cfg.epochs, row))

    learner = Learner(model, cfg, seed=unit_seed(cfg.seed, model, fold), device=device)
    learner.fit(comp.image[tr], audio[tr], comp.y[tr], val=(comp.image[va], audio[va], comp.y[va]), on_epoch=on_epoch)
    oof = learner.val_logits_  # (n_val, 10), from the final epoch's validation pass
    test = learner.predict_logits(comp.test_image, test_audio)  # (M, 10)
    check_finite(model, cfg, cfg.epochs, test)
    seconds = time.perf_counter() - t0
    out = run_dir / model
    write_text(out / f"fold{fold}_history.csv", pd.DataFrame(learner.history_).to_csv(index=False))
    write_torch(
        out / f"fold{fold}.pt",
        {
            "model": model,
            "hparams": model_kwargs(model, cfg),
            "state_dict": {k: v.cpu() for k, v in learner.model_.state_dict().items()},
            "audio_mean": scaler.mean_,
            "audio_scale": scaler.scale_,
        },
    )
    result = {"model": model, "fold": fold, **scores(comp.y[va], oof), "seconds": seconds, "epochs": cfg.epochs}
    # Written last: its presence marks the unit finished.
    write_npz(unit_path(run_dir, model, fold), val_idx=va, oof_logits=oof, test_logits=test, result=json.dumps(result))
    return result


def split_fingerprint(fold_of: np.ndarray) -> str:
    return hashlib.sha256(fold_of.astype(np.int64).tobytes()).hexdigest()[:16]


def _check_run(run_dir: Path, cfg: Config, comp: Competition, split_fp: str) -> None:
    """A run directory holds one recipe on one data folder and split: refuse to mix, never overwrite."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    saved = read_run_config(run_dir)
    # A key added to Config after the run was made defaults to "off", which is what the run computed.
    before = Config().to_dict() | saved["config"]
    diffs = [f"{k}: {before[k]!r} -> {v!r}" for k, v in cfg.result_dict().items() if before[k] != v]
    if saved.get("data_fingerprint") != comp.fingerprint:
        diffs.append("data folder contents differ")
    if saved.get("split_fingerprint") != split_fp:
        diffs.append("fold split differs")
    if diffs:
        raise UserError(
            f"{path}: run {run_dir.name!r} was made with other settings ({'; '.join(diffs)}); "
            f"fix: pass --run NEW_NAME, or delete {run_dir} to start it over"
        )


# --- finding runs: shared by submit, report and tune ---------------------------------------------------


def check_run_name(name: str) -> str:
    """A run name is one folder under the workdir: letters, digits, '.', '_' and '-', not starting with '.'."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(
            f"--run {name!r}: a run name is one folder name of letters, digits, '.', '_' and '-' (not a path); "
            "fix the name"
        )
    return name


def read_run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: not a cv run (no config.json); fix: pass --run with a run made by `run.py cv`")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        meta = {"error": str(e)}
    if (
        not isinstance(meta, dict)
        or not isinstance(meta.get("config"), dict)
        or not {"folds", "models"} <= meta["config"].keys()
    ):
        raise UserError(
            f"{path}: unreadable run config (not the config.json `run.py cv` writes); fix: restore it, or delete "
            f"{run_dir} and rerun `run.py cv --run {run_dir.name}`"
        )
    return meta


def missing_folds(run_dir: Path, meta: dict) -> dict[str, list[int]]:
    k = meta["config"]["folds"]
    out = {m: [f for f in range(k) if not unit_path(run_dir, m, f).is_file()] for m in meta["config"]["models"]}
    return {m: f for m, f in out.items() if f}


def latest_run(workdir: Path) -> str:
    """The run under ``workdir`` whose every model has every fold, with the newest fold file."""
    if not workdir.is_dir():
        raise UserError(f"{workdir}: workdir not found; fix: run `run.py cv` first or pass --workdir DIR")
    finished, unfinished = [], []
    for run_dir in sorted(p for p in workdir.iterdir() if (p / "config.json").is_file()):
        try:
            meta = read_run_config(run_dir)
        except UserError:
            continue
        if missing_folds(run_dir, meta):
            unfinished.append(run_dir.name)
            continue
        newest = max((p.stat().st_mtime for p in run_dir.glob("*/fold*.npz")), default=0.0)
        finished.append((newest, run_dir.name))
    if not finished:
        what = f"only unfinished runs ({', '.join(unfinished)})" if unfinished else "no cv runs"
        raise UserError(f"{workdir}: {what}; fix: finish one with `run.py cv`, or pass --run NAME / --workdir DIR")
    return max(finished)[1]


@dataclass
class CVResult:
    run_dir: Path
    per_fold: pd.DataFrame  # model, fold, macro_f1, accuracy, seconds, epochs
    oof: pd.DataFrame  # index model: macro_f1, accuracy (over all training rows)


def load_run(run_dir: Path, n_train: int, models: list[str] | None = None) -> dict[str, dict]:
    """Every finished model of a run: ``{model: {"oof": (N, 10), "test": (K, M, 10), "folds": [...]}}``."""
    out = {}
    for model_dir in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        if models is not None and model_dir.name not in models:
            continue
        files = sorted(model_dir.glob("fold*.npz"), key=lambda p: int(p.stem[4:]))
        if not files:
            continue
        oof = np.full((n_train, 10), np.nan, dtype=np.float32)
        tests, results = [], []
        for f in files:
            unit = load_unit(f)
            oof[unit["val_idx"]] = unit["oof_logits"]
            tests.append(unit["test_logits"])
            results.append(unit["result"])
        out[model_dir.name] = {"oof": oof, "test": np.stack(tests), "folds": results}
    return out


def run_cv(
    cfg: Config, data_dir: Path, workdir: Path = DEFAULT_WORKDIR, run_name: str = "default", quiet: bool = False
) -> CVResult:
    """Train every (model, fold) unit not yet finished in ``workdir/run_name`` and score the run."""
    device = resolve_device(cfg.device)
    comp = load_competition(data_dir)
    if not quiet:
        console.print(f"data {comp.root}: {comp.n_train} train rows, {comp.n_test} test rows")
        console.print(duplicates_line(duplicate_summary(comp)))
    split = load_or_make_folds(comp, workdir, cfg.folds, cfg.seed, cfg.group_duplicates)
    fold_of = split["fold"].to_numpy()
    split_fp = split_fingerprint(fold_of)
    run_dir = workdir / run_name
    _check_run(run_dir, cfg, comp, split_fp)
    saved_models = []
    if (run_dir / "config.json").exists():
        saved_models = read_run_config(run_dir)["config"]["models"]
    run_cfg = cfg.to_dict() | {"models": sorted(set(saved_models) | set(cfg.models))}
    write_json(
        run_dir / "config.json",
        {
            "config": run_cfg,
            "data": str(comp.root),
            "data_fingerprint": comp.fingerprint,
            "split_fingerprint": split_fp,
        },
    )
    write_json(run_dir / "environment.json", environment(device, cfg.seed))

    # Costliest models first (parameter count as the proxy), so the parallel workers end together
    # instead of one finishing a long unit alone.
    by_cost = sorted(cfg.models, key=_parameter_count, reverse=True)
    todo = [(m, k) for m in by_cost for k in range(cfg.folds) if not unit_done(run_dir, m, k)]
    n_done = len(cfg.models) * cfg.folds - len(todo)
    if not quiet:
        grouped = "grouped by duplicates" if cfg.group_duplicates else "not grouped"
        console.print(
            f"run {run_dir}: {len(cfg.models)} models x {cfg.folds} folds ({grouped}), "
            f"{n_done} units already finished, {len(todo)} to train on {device}"
        )
    if todo:
        _execute(todo, comp, fold_of, cfg, run_dir, device, quiet)
    return summarise(run_dir, comp, cfg, quiet)


def _parameter_count(model: str) -> int:
    from .models import create_model

    return sum(p.numel() for p in create_model(model).parameters())


def _plan_workers(cfg: Config, device: str, n_units: int) -> tuple[int, int]:
    """(processes, torch threads each). On CPU every unit trains single-threaded, so its numbers do not
    depend on --workers (a different thread count changes float summation order), and one process per
    core trains ~1.45x faster than one process using every core (bench/cv_speed.py). On a GPU one
    process owns the device."""
    if device == "cuda":
        return 1, 1
    workers = cfg.workers or os.cpu_count() or 1
    return max(1, min(workers, n_units)), 1


def _execute(todo, comp, fold_of, cfg, run_dir, device, quiet) -> None:
    workers, threads = _plan_workers(cfg, device, len(todo))
    total = sum(cfg.for_model(m).epochs for m, _ in todo)
    with CVProgress(total) if not quiet else _Null() as progress:
        if workers == 1:
            for model, fold in todo:
                sink = _DirectSink(progress)
                result = train_unit(comp, fold_of, cfg, model, fold, run_dir, device, threads, sink)
                progress.unit_done(model, fold, result)
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
                    progress.unit_done(result["model"], result["fold"], result)
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

    def unit_done(self, *a) -> None:
        pass


def summarise(run_dir: Path, comp: Competition, cfg: Config, quiet: bool = False) -> CVResult:
    """Per-fold and out-of-fold scores of the run's models; writes scores.csv, summary.json and prints a table."""
    runs = load_run(run_dir, comp.n_train, cfg.models)
    per_fold = pd.DataFrame([r for m in cfg.models if m in runs for r in runs[m]["folds"]])
    oof_rows = {}
    for m in cfg.models:
        if m in runs and len(runs[m]["folds"]) == cfg.folds:
            oof_rows[m] = scores(comp.y, runs[m]["oof"])  # f1_score(average="macro") over all training rows
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
    run_cv(cfg, Path(args.data), workdir, check_run_name(name if args.run is None else args.run))
    return 0
