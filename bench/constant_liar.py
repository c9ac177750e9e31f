#!/usr/bin/env python3
"""Two worker processes on one journal-file study, as ``run.py tune --workers 2`` runs them: TPE with and
without the constant liar, and with the same sampler seed in both workers (what two single-worker processes
on a shared journal drew before issue 13) or distinct seeds. Prints, per setting and over repeated studies,
the best value found and the number of trials that repeat an earlier trial's exact parameter set.

The objective is cheap and synthetic (a smooth function of the same 8 keys as competition/configs/search.toml, with a
sleep standing in for training so the two workers' trials overlap), so the settings can be compared over
many studies in a minute:

    python3 bench/constant_liar.py --repeats 6 --trials 40
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

STARTUP = 10  # competition/configs/search.toml's n_startup_trials


def objective(trial: optuna.Trial, delay: float) -> float:
    """A stand-in for a trial's mean fold macro-F1: best at lr 3e-3, batch 32, small weight decay, kernel 5."""
    lr = trial.suggest_float("lr", 3e-4, 1e-2, log=True)
    bs = trial.suggest_categorical("batch_size", [32, 64, 128])
    wd = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    idrop = trial.suggest_float("image_dropout", 0.0, 0.5)
    adrop = trial.suggest_float("audio_dropout", 0.0, 0.5)
    ik = trial.suggest_categorical("image_kernel", [3, 5, 7])
    ak = trial.suggest_categorical("audio_kernel", [3, 5, 7])
    md = trial.suggest_float("modality_dropout", 0.0, 0.7)
    time.sleep(delay)
    loss = (
        (math.log10(lr) - math.log10(3e-3)) ** 2
        + 0.02 * {32: 0, 64: 1, 128: 3}[bs]
        + 0.01 * (math.log10(wd) + 5) ** 2
        + (idrop - 0.1) ** 2
        + (adrop - 0.4) ** 2
        + 0.03 * (ik != 5)
        + 0.03 * (ak != 5)
        + 0.5 * (md - 0.5) ** 2
    )
    return 1.0 - loss


def worker(journal: str, seed: int, liar: bool, trials: int, delay: float) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP, constant_liar=liar)
    study = optuna.load_study(study_name="bench", storage=JournalStorage(JournalFileBackend(journal)), sampler=sampler)
    stop = optuna.study.MaxTrialsCallback(trials, states=(optuna.trial.TrialState.COMPLETE,))
    study.optimize(lambda t: objective(t, delay), n_trials=trials, callbacks=[stop])


def one_study(seeds: tuple[int, int], liar: bool, trials: int, delay: float) -> tuple[float, int, int]:
    """(best value, trials repeating an earlier parameter set, finished trials) of one 2-worker study."""
    with tempfile.TemporaryDirectory() as tmp:
        journal = str(Path(tmp) / "study.journal")
        storage = JournalStorage(JournalFileBackend(journal))
        optuna.create_study(study_name="bench", storage=storage, direction="maximize")
        mp = multiprocessing.get_context("spawn")
        procs = [mp.Process(target=worker, args=(journal, s, liar, trials, delay)) for s in seeds]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        done = optuna.load_study(study_name="bench", storage=storage).get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)
        )
    seen, dups = set(), 0
    for t in sorted(done, key=lambda t: t.number):
        key = tuple(sorted(t.params.items()))
        dups += key in seen
        seen.add(key)
    return max(t.value for t in done), dups, len(done)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=6, help="studies per setting (different base seeds)")
    p.add_argument("--trials", type=int, default=40, help="finished trials per study")
    p.add_argument("--delay", type=float, default=0.2, help="seconds each trial sleeps (a stand-in for training)")
    p.add_argument("--distinct-only", action="store_true", help="only distinct worker seeds (what tune runs)")
    p.add_argument("--first-repeat", type=int, default=0, help="base seed offset (another set of studies)")
    args = p.parse_args()
    print(f"2 workers, {args.trials} trials per study, {STARTUP} start-up trials, {args.repeats} studies per setting")
    print("seeds     liar  best mean   +-se  best min dup sets mean dup sets max")
    for same in (False,) if args.distinct_only else (True, False):
        for liar in (False, True):
            best, dups = [], []
            for r in range(args.first_repeat, args.first_repeat + args.repeats):
                seeds = (100 + r, 100 + r) if same else (100 + r, 10_000 + r)
                b, d, _ = one_study(seeds, liar, args.trials, args.delay)
                best.append(b)
                dups.append(d)
            print(
                f"{'same' if same else 'distinct':<9} {'on' if liar else 'off':<5} {np.mean(best):>9.4f} "
                f"{np.std(best, ddof=1) / np.sqrt(len(best)):>6.4f} "
                f"{np.min(best):>9.4f} {np.mean(dups):>13.1f} {np.max(dups):>12d}"
            )


if __name__ == "__main__":
    main()
