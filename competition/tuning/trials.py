"""Tune's trials: the objective (train a sampled recipe's folds with ``cv.train_unit``, report the running mean
macro-F1 to the pruner), the trial processes that run it, and the ``tune`` command.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import socket
import sys
import warnings
import zlib

import numpy as np
import optuna
from optuna.trial import TrialState

from competition.data.load import Competition, load_competition
from competition.metrics import scores
from competition.splits.folds import load_or_make_folds
from competition.store.atomic import environment, write_json
from competition.store.loading import load_bag, load_run
from competition.store.runs import split_fingerprint, unit_path, write_run_config
from competition.train.learner import TrainingDiverged, resolve_device
from competition.train.unit import CVJob, train_unit
from competition.tuning.search_space import sample_params
from competition.tuning.study import (
    FINISHED,
    Tuning,
    claim_study,
    fail_orphaned_trials,
    identity,
    open_storage,
    owner,
    redact,
)
from competition.utils.console import console, fmt_value
from competition.utils.errors import EXIT_INTERRUPTED, UserError


class WorkersFailed(RuntimeError):
    """A spawned trial process ended with an error (its own output says which)."""


class SurplusTrial(Exception):
    """A trial asked for when the study's target was already claimed by finished and running trials."""


CLAIMED = (*FINISHED, TrialState.RUNNING)  # the trials that count toward --trials when a trial starts


def _claim(trial: optuna.Trial, t: Tuning) -> None:
    """Count and claim: the storage numbers trials atomically, so a trial runs only when fewer than --trials
    trials numbered before it are finished or running. Concurrent commands then hold the target exactly (unless
    a running trial fails later: the study ends short, and a rerun adds the missing trials). A surplus trial
    trains nothing: it is stored as FAIL (user attribute ``surplus``) and this worker stops."""
    ahead = [tr for tr in trial.study.get_trials(deepcopy=False, states=CLAIMED) if tr.number < trial.number]
    if len(ahead) >= t.trials:
        trial.set_user_attr("surplus", True)
        trial.study.stop()
        raise SurplusTrial(f"trial {trial.number}: the study's {t.trials} trials are already finished or running")


def _train_trial(trial: optuna.Trial, t: Tuning, comp: Competition, fold_of: np.ndarray, ctx: dict) -> float:
    """Train folds 0..K-1 of one sampled recipe; the mean fold macro-F1, reported after every fold."""
    trial.set_user_attr("worker", owner())  # first: lets a later start fail this trial if the worker dies
    _claim(trial, t)
    params = sample_params(trial, t.search_space.params)
    cfg = t.trial_config(params)
    run_dir = t.study_dir / f"trial-{trial.number}"
    write_run_config(run_dir, cfg.to_dict(), comp, ctx["split_fp"], study=t.study, trial=trial.number)
    write_json(run_dir / "environment.json", environment(ctx["device"], cfg.seed))
    tag = f"trial {trial.number:>3}{ctx['tag']}"
    job = CVJob(comp, fold_of, cfg, run_dir, ctx["device"])
    f1s = []
    for k in range(t.trial_folds):  # the same order in every trial: step k compares the same rows
        try:
            result = train_unit(job, t.model, k, ctx["threads"])
            seeds = cfg.for_model(t.model).seeds
            if seeds > 1:  # seed bagging: the fold's score is that of its seeds' averaged logits
                for seed in range(1, seeds):
                    train_unit(job, t.model, k, ctx["threads"], seed=seed)
                result = load_bag(unit_path(run_dir, t.model, k), seeds, comp.y).result
        except TrainingDiverged as e:  # a sampled recipe that diverges is a bad trial, not the study's end
            console.print(f"{tag} [yellow]pruned[/]: {e}")
            raise optuna.TrialPruned(str(e)) from None
        f1s.append(result.macro_f1)
        trial.set_user_attr("fold_macro_f1", f1s)
        mean = float(np.mean(f1s))
        trial.report(mean, step=k)
        console.print(
            f"{tag} fold {k + 1}/{t.trial_folds}  macro-F1 {result.macro_f1:.4f}  "
            f"mean {mean:.4f}  {result.seconds:.0f}s"
        )
        if k < t.trial_folds - 1 and trial.should_prune():  # after the last fold there is nothing left to save
            folds = f"{k + 1} fold{'s' if k else ''}"
            console.print(f"{tag} [yellow]pruned[/] after {folds} (mean below the median of finished trials)")
            raise optuna.TrialPruned(f"mean macro-F1 {mean:.4f} after {k + 1} folds")
    oof = load_run(run_dir, comp.n_train, [t.model]).oof[t.model]
    rows = np.isfinite(oof).all(axis=1)
    trial.set_user_attr("oof_macro_f1", scores(comp.y[rows], oof[rows])["macro_f1"])
    pretty = ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items())
    console.print(f"{tag} [green]done[/] mean macro-F1 {np.mean(f1s):.4f}  ({pretty})")
    return float(np.mean(f1s))


def _sampler_seed(t: Tuning, n_existing: int, worker: int, shared: bool = False) -> int:
    """A sequential study is reproducible (the seed depends on the config seed and how many trials exist, so a
    resumed study does not replay its first random trials); parallel workers and machines get distinct seeds.

    ``shared``: other processes may run trials of this study now (a database storage, several processes, or
    running trials of another process when this one starts, e.g. on a journal file that several machines
    share): the host and process id are mixed in, since workers elsewhere have the same worker index and would
    otherwise draw the same start-up trials."""
    key = f"{t.cfg.seed}:{n_existing}:{worker}"
    if shared or t.storage is not None or t.processes > 1:
        key += f":{socket.gethostname()}:{os.getpid()}"
    return zlib.crc32(key.encode())


def optimize(t: Tuning, n_trials: int, seed: int, worker: int, comp: Competition | None = None) -> None:
    """Run up to ``n_trials`` trials of the study in this process (stops early once the study has its target)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # this module prints one line per fold and per trial
    comp = comp or load_competition(t.data_dir)
    saved = load_or_make_folds(comp, t.workdir, t.cfg.folds, t.cfg.seed, t.cfg.group_duplicates, t.cfg.split)
    fold_of = saved["fold"].to_numpy()
    device = resolve_device(t.cfg.device)
    ctx = {
        "split_fp": split_fingerprint(fold_of),
        "device": device,
        "threads": t.threads,
        "tag": f" (worker {worker})" if t.processes > 1 else "",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # The constant liar (off by default in Optuna) scores other workers' running trials as the worst value,
        # so parallel workers do not sample next to each other; with no running trial it changes nothing, so a
        # sequential study is the same with it (bench/constant_liar.py measures it).
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, **t.search_space.sampler)
    # MedianPruner on the running mean: see docs/howto/tune.md ("Pruning") for why not the WilcoxonPruner at K = 5.
    pruner = optuna.pruners.MedianPruner(**t.search_space.pruner) if t.prune else optuna.pruners.NopPruner()
    study = optuna.load_study(
        study_name=t.study, storage=open_storage(t.storage, t.journal), sampler=sampler, pruner=pruner
    )
    stop = optuna.study.MaxTrialsCallback(t.trials, states=CLAIMED)  # other workers may be running the rest
    try:
        study.optimize(
            lambda trial: _train_trial(trial, t, comp, fold_of, ctx),
            n_trials=n_trials,
            timeout=t.timeout,
            callbacks=[stop],
            catch=(SurplusTrial,),
        )
    finally:
        # Optuna fails a trial on an Exception or Ctrl-C; a SystemExit (rich exits so on a closed stdout pipe)
        # or a Ctrl-C between two storage calls would leave it RUNNING: fail whatever this worker still holds.
        me = owner()
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
    split = load_or_make_folds(comp, t.workdir, t.cfg.folds, t.cfg.seed, t.cfg.group_duplicates, t.cfg.split)
    if not 1 <= t.trial_folds <= t.cfg.folds:
        raise UserError(f"--trial-folds {t.trial_folds}: must be between 1 and the split's {t.cfg.folds} folds")
    storage = open_storage(t.storage, t.journal)
    where = f"--storage {redact(t.storage)}" if t.storage else str(t.journal)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=t.study, storage=storage, direction="maximize", load_if_exists=True)
    claim_study(study, identity(t, comp, split_fingerprint(split["fold"].to_numpy())), where)
    failed = fail_orphaned_trials(study)
    trials = study.get_trials(deepcopy=False)
    n_finished = sum(tr.state in FINISHED for tr in trials)
    n_running = sum(tr.state == TrialState.RUNNING for tr in trials)  # live workers' (dead ones' are failed)
    remaining = max(0, t.trials - n_finished - n_running)
    workers = max(1, min(t.processes, remaining))
    console.print(
        f"study {t.study!r} ({where}): model {t.model}, {len(t.search_space.params)} parameters, "
        f"{t.trial_folds} of {t.cfg.folds} folds per trial, {t.cfg.epochs} epochs; "
        f"{n_finished} trials finished"
        + (f", {n_running} running elsewhere" if n_running else "")
        + (f", {len(failed)} interrupted trial(s) marked FAIL ({failed})" if failed else "")
        + f"; {remaining} to run on {workers} worker(s)"
        + ("" if t.prune else ", pruning off")
    )
    if remaining:
        t = dataclasses.replace(t, processes=workers)
        shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
        seeds = [_sampler_seed(t, len(trials), i, shared=n_running > 0) for i in range(workers)]
        if workers == 1:
            optimize(t, shares[0], seeds[0], 0, comp)
        else:
            codes = _run_workers(t, shares, seeds)
            if EXIT_INTERRUPTED in codes:
                raise KeyboardInterrupt
            if any(codes):
                raise WorkersFailed(f"tune worker(s) failed with exit codes {codes}; see their output above")
    return optuna.load_study(study_name=t.study, storage=storage)
