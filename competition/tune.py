"""Tune: an Optuna search over one model's hyperparameters, scored by its mean macro-F1 over the saved folds.

A study is one model, one base recipe, one search space (``configs/search.toml``) and one data folder and
split; these are stored as the study's user attributes and checked on every start, so a study is never
mixed with other settings. A trial trains the folds in a fixed order with ``cv.train_unit`` (the code of
``run.py cv``) into ``<workdir>/tune/<study>/trial-<n>/`` and reports the running mean macro-F1 after each
fold to a MedianPruner. Storage is a journal file in that folder (safe for concurrent writers on one machine)
or any RDB URL (``--storage postgresql://...``) shared by workers on many machines. The best trial is written
as a config file that ``run.py cv --config`` trains as-is.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import signal
import socket
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from rich.table import Table

from .artifacts import check_writable, environment, write_json, write_text
from .config import (
    CONFIG_DIR,
    FIELDS,
    FLAG_KEYS,
    Config,
    config_from_args,
    load_config,
    parse_overrides,
    read_toml,
    to_toml,
)
from .console import console
from .cv import DEFAULT_WORKDIR, load_run, split_fingerprint, train_unit
from .data import Competition, load_competition
from .errors import EXIT_INTERRUPTED, UserError
from .folds import load_or_make_folds
from .metrics import scores
from .models import list_models, model_hparams
from .training import TrainingDiverged, resolve_device

SPACE_PATH = CONFIG_DIR / "search.toml"
# Keys a search may not change: the split (folds, seed, grouping) is shared by every trial, the rest is execution.
NOT_TUNABLE = ("folds", "seed", "group_duplicates", "models", "device", "workers")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A RUNNING trial without an owner is one whose worker died between asking for it and claiming it.
UNCLAIMED_GRACE = timedelta(minutes=2)


# --------------------------------------------------------------------------- search space


@dataclass
class SearchSpace:
    """The parameters to sample (key -> normalised spec) and the sampler's and pruner's settings."""

    params: dict[str, dict[str, Any]]
    sampler: dict[str, int] = field(default_factory=lambda: {"n_startup_trials": 10})
    pruner: dict[str, int] = field(default_factory=lambda: {"n_startup_trials": 5, "n_warmup_steps": 0})


def search_space(trial: optuna.Trial, params: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sample one point of the space: a plain dict of flat config keys, e.g. ``{"lr": 0.002, "image_kernel": 5}``."""
    out = {}
    for key, spec in params.items():
        if spec["type"] == "categorical":
            out[key] = trial.suggest_categorical(key, spec["choices"])
        elif spec["type"] == "int":
            out[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1), log=spec["log"])
        else:
            out[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec["log"])
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _param_spec(where: str, key: str, spec: Any, base: Config) -> dict[str, Any]:
    """Check one ``[params]`` entry and return it normalised with its type; every value it can take is validated."""
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected a table like {{ low = 0.0, high = 0.5 }} or {{ choices = [3, 5, 7] }}")
    kind = type(getattr(base, key))
    if "choices" in spec:
        extra = sorted(set(spec) - {"choices"})
        if extra:
            raise UserError(f"{where}: choices cannot be combined with {extra}; fix: give either choices or low/high")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choices must be a non-empty list; fix the entry")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise UserError(f"{where}: choices {choices} repeat a value; fix: list each value once")
        out, values = {"type": "categorical", "choices": choices}, choices
    else:
        extra = sorted(set(spec) - {"low", "high", "log", "step"})
        if extra:
            raise UserError(f"{where}: unknown field(s) {extra}; fix: use low, high, log, step or choices")
        if kind not in (int, float):
            raise UserError(f"{where}: {key} is a {kind.__name__}; fix: give choices = [...]")
        if "low" not in spec or "high" not in spec:
            raise UserError(f"{where}: a range needs both low and high; fix the entry")
        low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
        if not (_is_number(low) and _is_number(high)) or not isinstance(log, bool):
            raise UserError(f"{where}: low and high must be numbers and log true or false; fix the entry")
        if kind is int and not all(isinstance(v, int) for v in (low, high, step or 1)):
            raise UserError(f"{where}: {key} is an integer; fix: give integer low, high and step")
        if not low < high:
            raise UserError(f"{where}: low {low} is not below high {high}; fix the range, or fix the value in --config")
        if log and low <= 0:
            raise UserError(f"{where}: a log-scale range needs low > 0, got {low}; fix the range")
        if step is not None and (kind is not int or log or step <= 0 or (high - low) % step):
            raise UserError(f"{where}: step needs an int range without log, with high - low a multiple of it; fix it")
        out = {"type": kind.__name__, "low": kind(low), "high": kind(high), "log": log}
        if step is not None:
            out["step"] = step
        values = list(range(low, high + 1, step or 1)) if kind is int and not log else [low, high]
    for v in values:
        try:
            load_config(None, base.to_dict() | {key: v})
        except UserError as e:
            problem = str(e).removeprefix("config: ").split(";")[0]
            raise UserError(f"{where}: the value {v!r} is not allowed ({problem}); fix the range") from None
    return out


def _settings(path: Path, raw: dict, table: str, defaults: dict[str, int]) -> dict[str, int]:
    values = raw.get(table, {})
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise UserError(f"{path}: [{table}] has unknown key(s) {unknown}; fix: use {', '.join(defaults)}")
    for k, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise UserError(f"{path}: [{table}] {k} = {v!r} must be an integer >= 0; fix the value")
    return defaults | values


def load_space(path: str | Path, model: str, base: Config) -> SearchSpace:
    """Read and check a search space file for ``model``; another model's hyperparameters are left out."""
    path = Path(path)
    raw = read_toml(path, "search space file", "pass --space configs/search.toml")
    unknown = sorted(set(raw) - {"params", "sampler", "pruner"})
    if unknown:
        raise UserError(f"{path}: unknown table(s) {unknown}; fix: use [params], [sampler] and [pruner]")
    mine = set(model_hparams(model))
    others = {h for m in list_models() for h in model_hparams(m)} - mine
    tunable = [k for k in FIELDS if k not in NOT_TUNABLE]
    params = {}
    for key, spec in raw.get("params", {}).items():
        where = f"{path}: params.{key}"
        if key not in tunable:
            raise UserError(f"{where}: not a tunable config key; fix: use one of {', '.join(tunable)}")
        if key not in others:  # e.g. audio_dropout is left out when tuning the image model
            params[key] = _param_spec(where, key, spec, base)
    if not params:
        raise UserError(
            f"{path}: the search space has no parameter for model {model!r}; "
            "fix: add entries under [params], e.g. lr = { low = 3e-4, high = 1e-2, log = true }"
        )
    space = SearchSpace(params)
    space.sampler = _settings(path, raw, "sampler", space.sampler)
    space.pruner = _settings(path, raw, "pruner", space.pruner)
    return space


# --------------------------------------------------------------------------- storage


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _driver_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg 3, the
    ``postgres`` extra installs psycopg2."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, scheme in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return scheme + url[len("postgresql") :]
    raise UserError(
        "--storage: no PostgreSQL driver installed; fix: python3 -m pip install -e '.[postgres]' (psycopg2-binary)"
    )


def open_storage(url: str | None, journal: Path) -> BaseStorage:
    """The default journal file (``journal``), or the RDB at ``url`` (sqlite:///..., postgresql://...)."""
    if url is None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        # The journal file is append-only under a file lock: safe for concurrent workers on one machine,
        # where SQLite raises "database is locked" once several processes write at once.
        return JournalStorage(JournalFileBackend(str(journal)))
    if "://" not in url:
        raise UserError(f"--storage {url}: not a database URL; fix: use sqlite:///path.db or postgresql://user@host/db")
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    connect = {"connect_timeout": 10} if url.startswith("postgresql") else {"timeout": 60} if "sqlite" in url else {}
    driver_url = _driver_url(url)
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # The heartbeat marks trials of workers that died (killed, machine lost) FAIL after the grace period.
                return RDBStorage(
                    driver_url, engine_kwargs={"connect_args": connect}, heartbeat_interval=60, grace_period=180
                )
        except Exception as e:  # sqlalchemy's connection, URL and driver errors, raised from deep inside optuna
            if isinstance(e, (IntegrityError, ProgrammingError)) and attempt < 2:
                # Workers starting together on an empty database race in CREATE TABLE IF NOT EXISTS, which
                # PostgreSQL does not make atomic ("duplicate key ... pg_type_typname_nsp_index"): retry.
                time.sleep(1 + attempt)
                continue
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"--storage {_redact(url)}: cannot open the study storage ({reason}); "
                "fix: check the URL, that the server is running and reachable, and the database exists"
            ) from None


# --------------------------------------------------------------------------- stale trials


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a live pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the "(comm)" field


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _owner_alive(owner: str) -> bool | None:
    """True or False for a worker of this machine; None when the worker ran on another machine."""
    host, pid, ticks = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    pid = int(pid)
    if pid == os.getpid():
        return False  # this process is starting up, so it runs no trial yet: a pid reused after a restart
    if Path("/proc").is_dir():
        return _start_ticks(pid) == ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker is dead (this machine's), so no trial stays RUNNING forever.

    Each trial records its worker (host, pid, process start time) when it starts; a worker of another
    machine is left to the RDB storage's heartbeat.
    """
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker")
        if owner is None:
            dead = t.datetime_start is not None and datetime.now() - t.datetime_start > UNCLAIMED_GRACE
        else:
            dead = _owner_alive(owner) is False
        if dead:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed


# --------------------------------------------------------------------------- the study


class WorkersFailed(RuntimeError):
    """A spawned worker process ended with an error (its own output says which)."""


@dataclass
class Tuning:
    """Everything a worker process needs to run trials of one study (picklable)."""

    data_dir: Path
    workdir: Path
    cfg: Config  # the base recipe; each trial overrides the sampled keys
    model: str
    study: str
    storage: str | None  # None: the journal file under the study folder
    space: SearchSpace
    trial_folds: int  # trials evaluate folds 0..trial_folds-1 of the saved split
    trials: int  # the study's target number of finished (complete or pruned) trials
    timeout: float | None = None
    prune: bool = True
    workers: int = 1
    threads: int = 1  # torch threads per worker: 1, as in cv, so a trial's scores are those cv gets

    @property
    def study_dir(self) -> Path:
        return self.workdir / "tune" / self.study

    @property
    def journal(self) -> Path:
        return self.study_dir / "study.journal"


def identity(t: Tuning, comp: Competition, split_fp: str) -> dict[str, Any]:
    """What a study was made for; a rerun must match it (stored as the study's user attribute ``tune``)."""
    values = {
        "model": t.model,
        "data_fingerprint": comp.fingerprint,
        "split_fingerprint": split_fp,
        "config": t.cfg.result_dict(),
        "space": t.space.params,
        "trial_folds": t.trial_folds,
        "data": str(comp.root),
    }
    return json.loads(json.dumps(values))  # as it reads back from the storage (tuples become lists)


def claim_study(study: optuna.Study, mine: dict[str, Any], where: str) -> None:
    """Check that an existing study was made for these settings; stamp a new one with them.

    The settings are one user attribute, written in one storage call, so a worker starting at the same time
    sees all of them or none; the re-read after stamping catches a concurrent start with other settings.
    """
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"{where}: study {study.study_name!r} minimises; fix: pass --study NEW_NAME")
    saved = study.user_attrs.get("tune")
    if saved is None:
        if study.trials:
            raise UserError(f"{where}: study {study.study_name!r} was not made by run.py tune; fix: --study NEW_NAME")
        study.set_user_attr("tune", mine)
        saved = study.user_attrs["tune"]
    diffs = []
    for k, v in mine.items():
        old = saved.get(k)
        if k == "config" and isinstance(old, dict):  # a key added to Config later defaults to what it computed
            old = json.loads(json.dumps(Config().result_dict())) | old
        if k == "data" or old == v:  # the folder's path may differ (another machine); its fingerprint may not
            continue
        if isinstance(v, dict) and isinstance(old, dict):  # name the config keys / parameters that differ
            diffs.append(f"{k} differs in {', '.join(sorted(x for x in set(v) | set(old) if old.get(x) != v.get(x)))}")
        else:
            diffs.append(f"{k}: {old!r} -> {v!r}")
    if diffs:
        raise UserError(
            f"{where}: study {study.study_name!r} was made for other settings ({'; '.join(diffs)}; "
            f"its data: {saved.get('data')}); fix: pass --study NEW_NAME, or the study's --data/--model/--config"
        )


def _objective(trial: optuna.Trial, t: Tuning, comp: Competition, fold_of: np.ndarray, ctx: dict) -> float:
    """Train folds 0..K-1 of one sampled recipe; the mean fold macro-F1, reported after every fold."""
    trial.set_user_attr("worker", _owner())  # first: lets a later start fail this trial if the worker dies
    params = search_space(trial, t.space.params)
    cfg = load_config(None, t.cfg.to_dict() | params | {"models": [t.model]})
    run_dir = t.study_dir / f"trial-{trial.number}"
    write_json(
        run_dir / "config.json",
        {"config": cfg.to_dict(), "data": str(comp.root), "data_fingerprint": comp.fingerprint,
         "split_fingerprint": ctx["split_fp"], "study": t.study, "trial": trial.number},
    )  # fmt: skip
    write_json(run_dir / "environment.json", environment(ctx["device"], cfg.seed))
    tag = f"trial {trial.number:>3}{ctx['tag']}"
    f1s = []
    for k in range(t.trial_folds):  # the same order in every trial: step k compares the same rows
        try:
            result = train_unit(comp, fold_of, cfg, t.model, k, run_dir, ctx["device"], ctx["threads"])
        except TrainingDiverged as e:  # a sampled recipe that diverges is a bad trial, not the study's end
            console.print(f"{tag} [yellow]pruned[/]: {e}")
            raise optuna.TrialPruned(str(e)) from None
        f1s.append(result["macro_f1"])
        trial.set_user_attr("fold_macro_f1", f1s)
        mean = float(np.mean(f1s))
        trial.report(mean, step=k)
        console.print(
            f"{tag} fold {k + 1}/{t.trial_folds}  macro-F1 {result['macro_f1']:.4f}  "
            f"mean {mean:.4f}  {result['seconds']:.0f}s"
        )
        if k < t.trial_folds - 1 and trial.should_prune():  # after the last fold there is nothing left to save
            folds = f"{k + 1} fold{'s' if k else ''}"
            console.print(f"{tag} [yellow]pruned[/] after {folds} (mean below the median of finished trials)")
            raise optuna.TrialPruned(f"mean macro-F1 {mean:.4f} after {k + 1} folds")
    oof = load_run(run_dir, comp.n_train, [t.model])[t.model]["oof"]
    rows = np.isfinite(oof).all(axis=1)
    trial.set_user_attr("oof_macro_f1", scores(comp.y[rows], oof[rows])["macro_f1"])
    pretty = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items())
    console.print(f"{tag} [green]done[/] mean macro-F1 {np.mean(f1s):.4f}  ({pretty})")
    return float(np.mean(f1s))


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _sampler_seed(t: Tuning, n_existing: int, worker: int) -> int:
    """A sequential study is reproducible (the seed depends on the config seed and how many trials exist, so a
    resumed study does not replay its first random trials); parallel workers and machines get distinct seeds."""
    key = f"{t.cfg.seed}:{n_existing}:{worker}"
    if t.storage is not None:  # shared storage: workers on other machines have the same index
        key += f":{socket.gethostname()}:{os.getpid()}"
    return zlib.crc32(key.encode())


def optimize(t: Tuning, n_trials: int, seed: int, worker: int, comp: Competition | None = None) -> None:
    """Run up to ``n_trials`` trials of the study in this process (stops early once the study has its target)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # this module prints one line per fold and per trial
    comp = comp or load_competition(t.data_dir)
    fold_of = load_or_make_folds(comp, t.workdir, t.cfg.folds, t.cfg.seed, t.cfg.group_duplicates)["fold"].to_numpy()
    device = resolve_device(t.cfg.device)
    ctx = {
        "split_fp": split_fingerprint(fold_of),
        "device": device,
        "threads": t.threads,
        "tag": f" (worker {worker})" if t.workers > 1 else "",
    }
    sampler = optuna.samplers.TPESampler(seed=seed, **t.space.sampler)
    # MedianPruner on the running mean: see the README ("Pruning") for why not the WilcoxonPruner at K = 5.
    pruner = optuna.pruners.MedianPruner(**t.space.pruner) if t.prune else optuna.pruners.NopPruner()
    study = optuna.load_study(
        study_name=t.study, storage=open_storage(t.storage, t.journal), sampler=sampler, pruner=pruner
    )
    stop = optuna.study.MaxTrialsCallback(t.trials, states=FINISHED)  # other workers may have finished the rest
    try:
        study.optimize(
            lambda trial: _objective(trial, t, comp, fold_of, ctx),
            n_trials=n_trials,
            timeout=t.timeout,
            callbacks=[stop],
        )
    finally:
        # Optuna fails a trial on an Exception or Ctrl-C; a SystemExit (rich exits so on a closed stdout pipe)
        # or a Ctrl-C between two storage calls would leave it RUNNING: fail whatever this worker still holds.
        me = _owner()
        for tr in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if tr.user_attrs.get("worker") == me:
                study.tell(tr.number, state=TrialState.FAIL, skip_if_finished=True)


def _worker_main(t: Tuning, n_trials: int, seed: int, worker: int) -> None:
    """Entry point of a spawned worker process: exit codes 0, 2 (bad input) and 130 (interrupted)."""
    try:
        optimize(t, n_trials, seed, worker)
    except UserError as e:
        print(f"error: worker {worker}: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)  # optuna has marked the running trial FAIL


def _run_workers(t: Tuning, shares: list[int], seeds: list[int]) -> list[int]:
    """Run one spawned process per share; returns their exit codes. Ctrl-C reaches every worker."""
    mp = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch or storage state
    jobs = enumerate(zip(shares, seeds, strict=True))
    procs = [mp.Process(target=_worker_main, args=(t, n, s, i)) for i, (n, s) in jobs]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:  # a terminal's Ctrl-C reaches them already; a kill -INT of this process does not
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p in procs:
            p.join()
        raise
    return [p.exitcode for p in procs]


def run_tune(t: Tuning) -> optuna.Study:
    """Open or create the study, check it, fail dead workers' trials, and run the missing trials."""
    comp = load_competition(t.data_dir)
    split = load_or_make_folds(comp, t.workdir, t.cfg.folds, t.cfg.seed, t.cfg.group_duplicates)
    if not 1 <= t.trial_folds <= t.cfg.folds:
        raise UserError(f"--trial-folds {t.trial_folds}: must be between 1 and the split's {t.cfg.folds} folds")
    storage = open_storage(t.storage, t.journal)
    where = f"--storage {_redact(t.storage)}" if t.storage else str(t.journal)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=t.study, storage=storage, direction="maximize", load_if_exists=True)
    claim_study(study, identity(t, comp, split_fingerprint(split["fold"].to_numpy())), where)
    failed = fail_orphaned_trials(study)
    trials = study.get_trials(deepcopy=False)
    n_finished = sum(tr.state in FINISHED for tr in trials)
    remaining = max(0, t.trials - n_finished)
    workers = max(1, min(t.workers, remaining))
    console.print(
        f"study {t.study!r} ({where}): model {t.model}, {len(t.space.params)} parameters, "
        f"{t.trial_folds} of {t.cfg.folds} folds per trial, {t.cfg.epochs} epochs; "
        f"{n_finished} trials finished"
        + (f", {len(failed)} interrupted trial(s) marked FAIL ({failed})" if failed else "")
        + f"; {remaining} to run on {workers} worker(s)"
        + ("" if t.prune else ", pruning off")
    )
    if remaining:
        t = dataclasses.replace(t, workers=workers)
        shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
        seeds = [_sampler_seed(t, len(trials), i) for i in range(workers)]
        if workers == 1:
            optimize(t, shares[0], seeds[0], 0, comp)
        else:
            codes = _run_workers(t, shares, seeds)
            if EXIT_INTERRUPTED in codes:
                raise KeyboardInterrupt
            if any(codes):
                raise WorkersFailed(f"tune worker(s) failed with exit codes {codes}; see their output above")
    return optuna.load_study(study_name=t.study, storage=storage)


# --------------------------------------------------------------------------- results


def best_trials_table(study: optuna.Study, n: int = 10) -> Table:
    """The ``n`` best complete trials: mean and per-fold macro-F1, parameters and time."""
    trials = study.get_trials(deepcopy=False)
    done = sorted((tr for tr in trials if tr.state == TrialState.COMPLETE), key=lambda tr: -tr.value)[:n]
    counts = {s: sum(tr.state == s for tr in trials) for s in TrialState}
    title = (
        f"study {study.study_name}: best {len(done)} of {counts[TrialState.COMPLETE]} complete trials "
        f"({counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed)"
    )
    table = Table(title=title)
    for col in ("trial", "mean F1", "fold F1s", "time s"):
        table.add_column(
            col, justify="left" if col == "fold F1s" else "right", style="bold" if col == "mean F1" else None
        )
    table.add_column("parameters", overflow="fold")
    for tr in done:
        folds = " ".join(f"{f:.4f}" for f in tr.user_attrs.get("fold_macro_f1", []))
        seconds = tr.duration.total_seconds() if tr.duration else float("nan")
        params = " ".join(f"{k}={_fmt(v)}" for k, v in tr.params.items())
        table.add_row(str(tr.number), f"{tr.value:.4f}", folds, f"{seconds:.0f}", params)
    return table


def importance_table(study: optuna.Study) -> Table | None:
    """Optuna's fANOVA parameter importances over the complete trials; None while there are too few."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError):
        return None
    if not importances:
        return None
    table = Table(title="parameter importances (fANOVA, complete trials)")
    table.add_column("parameter")
    table.add_column("importance", justify="right")
    table.add_column("")
    for k, v in importances.items():
        table.add_row(k, f"{v:.3f}", "#" * round(30 * v))
    return table


def write_best_config(study: optuna.Study, t: Tuning, path: Path) -> Config | None:
    """The best complete trial's full recipe as a flat TOML config for ``run.py cv --config``."""
    try:
        best = study.best_trial
    except ValueError:
        return None  # no complete trial yet
    cfg = load_config(None, t.cfg.to_dict() | best.params | {"models": [t.model]})
    values = cfg.result_dict() | {"models": cfg.models}
    header = (
        f"# Written by `python run.py tune`: study {study.study_name!r}, best of its complete trials = trial "
        f"{best.number},\n# mean macro-F1 {best.value:.4f} over folds 0-{t.trial_folds - 1} of the saved "
        f"{t.cfg.folds}-fold split, {t.cfg.epochs} epochs per fold.\n"
        f"# Train it: python run.py cv --config {path}\n"
    )
    write_text(path, header + to_toml(values))
    return cfg


def tune_command(args) -> int:
    """``python run.py tune``: resolve the base recipe and the space, run the study, print and save the best."""
    if args.model not in list_models():
        raise UserError(f"--model {args.model}: unknown model; fix: use one of {', '.join(list_models())}")
    for flag, value in (("--trials", args.trials), ("--workers", args.tune_workers), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be >= 1")
    if args.timeout is not None and args.timeout <= 0:
        raise UserError(f"--timeout {args.timeout}: must be > 0 seconds")
    args.models = args.model
    cfg, run_name = config_from_args(args)
    fixed = set(parse_overrides(args.set)) | {k for k in FLAG_KEYS if getattr(args, k, None) is not None}
    fixed |= set(cfg.per_model.get(args.model, {}))
    cfg = cfg.for_model(args.model)  # the tuned model's own recipe; each trial overrides the sampled keys
    space_path = Path(args.space) if args.space else SPACE_PATH
    space = load_space(space_path, args.model, cfg)
    both = sorted(fixed & set(space.params) - {"models"})
    if both:
        raise UserError(f"--set/flags fix {both}, which {space_path} also searches; fix: drop them from one of the two")
    trial_folds = cfg.folds if args.trial_folds is None else args.trial_folds
    name = args.study or (
        f"{args.model}-{run_name}"
        + (f"-{trial_folds}folds" if trial_folds != cfg.folds else "")
        + ("" if space_path.resolve() == SPACE_PATH.resolve() else f"-{space_path.stem}")
    )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"--study {name!r}: use letters, digits, '.', '_' and '-' only (it names a folder)")
    t = Tuning(
        data_dir=Path(args.data),
        workdir=Path(args.workdir) if args.workdir else DEFAULT_WORKDIR,
        cfg=cfg,
        model=args.model,
        study=name,
        storage=args.storage,
        space=space,
        trial_folds=trial_folds,
        trials=args.trials,
        timeout=args.timeout,
        prune=not args.no_prune,
        workers=args.tune_workers,
        threads=args.threads or 1,
    )
    out = Path(args.out) if args.out else CONFIG_DIR / f"tuned-{name}.toml"
    check_writable(out.parent)
    try:
        study = run_tune(t)
    except WorkersFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        console.print(
            "[red]interrupted[/]: the running trial(s) are marked FAIL, finished trials are kept; "
            "rerun the same command to resume the study"
        )
        return EXIT_INTERRUPTED
    console.print(best_trials_table(study))
    imp = importance_table(study)
    if imp is not None:
        console.print(imp)
    write_text(t.study_dir / "trials.csv", study.trials_dataframe().to_csv(index=False))
    if write_best_config(study, t, out) is not None:
        console.print(f"best config: {out}  (train it: python run.py cv --config {out})")
    if t.storage is None:
        console.print(f"dashboard: optuna-dashboard {t.journal}")
    return 0
