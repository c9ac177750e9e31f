"""Tune's search space: read and check ``competition/configs/search.toml`` for one model, and sample a point of it.

A space file has ``[params]`` (config key -> a range ``{ low, high, log, step }`` or ``{ choices = [...] }``;
every value a range can take is validated as a config), ``[sampler]`` and ``[pruner]`` settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from competition.config import FIELDS, NOT_TUNABLE, Config, load_config, read_toml
from competition.models import list_models, model_hparams
from competition.utils.errors import UserError
from competition.utils.paths import SEARCH_SPACE

SPACE_PATH = SEARCH_SPACE


@dataclass
class SearchSpace:
    """The parameters to sample (key -> normalised spec) and the sampler's and pruner's settings."""

    params: dict[str, dict[str, Any]]
    sampler: dict[str, int] = field(default_factory=lambda: {"n_startup_trials": 10})
    pruner: dict[str, int] = field(default_factory=lambda: {"n_startup_trials": 5, "n_warmup_steps": 0})


def sample_params(trial: optuna.Trial, params: dict[str, dict[str, Any]]) -> dict[str, Any]:
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
            problem = str(e).split(": ", 1)[-1].split(";")[0]  # without the "config (...)" prefix
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
    raw = read_toml(path, "search space file", "pass --space with a search space TOML file")
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
