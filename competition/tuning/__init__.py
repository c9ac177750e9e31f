"""Tune: an Optuna search over one model's hyperparameters, scored by its mean macro-F1 over the saved folds.

A study is one model, one base recipe, one search space (``competition/configs/search.toml``) and one data folder and
split; these are stored as the study's user attributes and checked on every start, so a study is never
mixed with other settings. A trial trains the folds in a fixed order with ``cv.train_unit`` (the code of
``run.py cv``) into ``<workdir>/tune/<study>/trial-<n>/`` and reports the running mean macro-F1 after each
fold to a MedianPruner. Storage is a journal file in that folder (safe for concurrent writers on one machine)
or any RDB URL (``--storage postgresql://...``) shared by trial processes on many machines. The best trial is
written as a config file that ``run.py cv --config`` trains as-is.

One job per module: ``search_space`` (the space file and sampling), ``study`` (storage, the study's identity,
dead workers' trials), ``trials`` (the objective, the trial processes, the command), ``results`` (tables and
the best config).
"""

from competition.tuning.results import best_trials_table, importance_table, write_best_config
from competition.tuning.search_space import SPACE_PATH, SearchSpace, load_space, sample_params
from competition.tuning.study import Tuning, claim_study, fail_orphaned_trials, identity, open_storage
from competition.tuning.trials import WorkersFailed, optimize, run_tune

__all__ = [
    "SPACE_PATH",
    "SearchSpace",
    "Tuning",
    "WorkersFailed",
    "best_trials_table",
    "claim_study",
    "fail_orphaned_trials",
    "identity",
    "importance_table",
    "load_space",
    "open_storage",
    "optimize",
    "run_tune",
    "sample_params",
    "write_best_config",
]
