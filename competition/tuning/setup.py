"""Setup: a study's ``Tuning`` from what the user asks (model, base recipe, overrides, search space, budget),
every request checked before a trial trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from competition.config import resolve_config
from competition.models import list_models
from competition.tuning.search_space import SPACE_PATH, load_space
from competition.tuning.study import Tuning
from competition.utils.errors import UserError
from competition.utils.paths import default_data, default_workdir
from competition.utils.validation import check_known, check_name


def make_tuning(
    model: str = "fusion", data: str | Path | None = None, config: str | Path | None = None,
    overrides: dict[str, Any] | None = None, space: str | Path | None = None, study: str | None = None,
    storage: str | None = None, trials: int = 20, timeout: float | None = None, prune: bool = True,
    processes: int = 1, threads: int | None = None, trial_folds: int | None = None, workdir: str | Path | None = None,
) -> Tuning:  # fmt: skip
    """The study to run: ``model``'s recipe (``config`` with ``overrides``; keys they set are never searched), the
    search space (default: the shipped ``search.toml``) and the study's name (default: ``<model>-<recipe>``)."""
    check_known([model], list_models(), "model", f"--model {model}")
    for flag, value in (("--trials", trials), ("--workers", processes), ("--threads", threads)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be >= 1")
    if timeout is not None and timeout <= 0:
        raise UserError(f"--timeout {timeout}: must be > 0 seconds")
    overrides = dict(overrides or {})
    cfg, run_name = resolve_config(config, overrides, models=model)
    if cfg.pseudo:  # trials train on the plain folds: a search would silently ignore the pseudo-labels
        raise UserError(
            f"pseudo={cfg.pseudo}: tune does not train pseudo-label rounds; fix: tune without it, then run "
            "`run.py cv --pseudo SUBMISSION` with the tuned config"
        )
    fixed = set(overrides) | set(cfg.per_model.get(model, {}))
    cfg = cfg.for_model(model)  # the tuned model's own recipe; each trial overrides the sampled keys
    space_path = SPACE_PATH if space is None else Path(space)
    search_space = load_space(space_path, model, cfg)
    both = sorted(fixed & set(search_space.params))
    if both:
        raise UserError(f"--set/flags fix {both}, which {space_path} also searches; fix: drop them from one of the two")
    trial_folds = cfg.folds if trial_folds is None else trial_folds
    name = study or (
        f"{model}-{run_name}"
        + (f"-{trial_folds}folds" if trial_folds != cfg.folds else "")
        + ("" if space_path.resolve() == SPACE_PATH.resolve() else f"-{space_path.stem}")
    )
    check_name(name, "--study", "study")
    return Tuning(
        data_dir=default_data() if data is None else Path(data),
        workdir=default_workdir() if workdir is None else Path(workdir),
        cfg=cfg,
        model=model,
        study=name,
        storage=storage,
        search_space=search_space,
        trial_folds=trial_folds,
        trials=trials,
        timeout=timeout,
        prune=prune,
        processes=processes,
        threads=threads or 1,
    )
