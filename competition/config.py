"""Config: the one typed recipe object, loaded from ``configs/*.toml``, overridden by flags, saved with every run.

Keys are flat so that ``--set key=value``, TOML files and Optuna's parameter dicts are the same thing.
Model hyperparameters (``image_kernel``, ``audio_dropout``, ...) go to every model that takes them; a
``[per_model.<model>]`` table (or ``--set per_model.<model>.<key>=value``) changes a recipe key for one model
only, e.g. milder audio augmentation for the audio-only baseline than for the fusion model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from competition.utils.errors import UserError
from competition.utils.paths import DEFAULT_RECIPE, recipe_path
from competition.utils.validation import check_known

# The config keys with a role beyond "a recipe key", and their roles: the one list the key groups below come from.
#   run: shared by every model of a run (the split, the model list, execution): not settable per model, not tuned;
#   execution: changes how fast or where a run executes, never what it computes (on the same device);
#   flag: has its own command-line flag (--folds, --seed, ...), besides --set.
KEY_ROLES: dict[str, tuple[str, ...]] = {
    "folds": ("run", "flag"),
    "seed": ("run", "flag"),
    "group_duplicates": ("run",),
    "split": ("run",),
    "epochs": ("flag",),
    "models": ("run", "execution", "flag"),
    "device": ("run", "execution", "flag"),
    "workers": ("run", "execution", "flag"),
    "batch_units": ("run",),
    "per_model": ("run",),
    "pseudo": ("run", "flag"),
    "pseudo_precision": ("run",),
    "pseudo_test_folds": ("run",),
}


def _keys_with(role: str) -> tuple[str, ...]:
    return tuple(k for k, roles in KEY_ROLES.items() if role in roles)


RUN_KEYS = _keys_with("run")
EXECUTION_KEYS = _keys_with("execution")
FLAG_KEYS = _keys_with("flag")
NOT_TUNABLE = RUN_KEYS  # a search may not change the split every trial shares, nor execution
# The share-of-rows keys of the augmentations (see Config).
CLASS_WEIGHTS = ("auto", "none", "balanced")  # the loss's per-class weights
AUDIO_NORMS = ("none", "utterance")
PSEUDO_INITS = (
    "scratch",
    "source",
)  # where a pseudo-label round's units start  # per-recording audio normalisation before the scaler
MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds 0..2**32-1
AUGMENT_P_KEYS = (
    "shift_p", "rotate_p", "erase_p", "image_noise_p", "audio_mix_p", "time_mask_p", "freq_mask_p", "audio_noise_p",
    "mix_p",
)  # fmt: skip


@dataclass
class Config:
    """The recipe of a run: every key's meaning is in ``KEY_DOCS`` (docs/reference/config.md is generated from it)."""

    folds: int = 5
    seed: int = 0
    group_duplicates: bool = True
    split: str = "auto"
    models: list[str] = field(default_factory=lambda: ["fusion", "image", "audio"])
    pseudo: str = ""
    pseudo_precision: float = 0.995
    pseudo_init: str = "scratch"
    pseudo_test_folds: bool = False
    epochs: int = 6
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    early_stop: bool = False
    max_epochs: int = 60
    patience: int = 3
    inner_share: float = 0.1
    label_smoothing: float = 0.0
    class_weight: str = "auto"
    audio_norm: str = "none"
    shift: int = 0
    shift_p: float = 1.0
    rotate: float = 0.0
    rotate_p: float = 1.0
    erase: float = 0.0
    erase_p: float = 1.0
    image_noise: float = 0.0
    image_noise_p: float = 1.0
    audio_mix: float = 0.0
    audio_mix_p: float = 1.0
    time_mask: int = 0
    time_mask_p: float = 1.0
    freq_mask: int = 0
    freq_mask_p: float = 1.0
    audio_noise: float = 0.0
    audio_noise_p: float = 1.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_p: float = 1.0
    seeds: int = 1
    ema: float = 0.0
    swa_epochs: int = 0
    tta_shift: int = 0
    tta_mask: int = 0
    image_kernel: int = 5
    image_width: int = 1
    audio_kernel: int = 5
    image_dropout: float = 0.5
    audio_dropout: float = 0.5
    modality_dropout: float = 0.0
    device: str = "auto"
    workers: int = 0
    batch_units: str = "auto"
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_model(self, name: str) -> Config:
        """The recipe model ``name`` trains with: this config with its ``[per_model.<name>]`` keys applied."""
        return dataclasses.replace(self, per_model={}, **self.per_model.get(name, {}))

    def validate(self, source: str = "config") -> Config:
        """Check every value; a bad one is a UserError naming ``source`` (the config file and --set)."""
        infinite = [k for k, v in self.to_dict().items() if isinstance(v, float) and not math.isfinite(v)]
        checks = [
            (not infinite, f"{', '.join(infinite)} must be a finite number (not inf or nan)"),
            (self.folds >= 2, "folds must be >= 2"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in 0..{MAX_SEED} (numpy's seed range)"),
            (0 < self.pseudo_precision <= 1, "pseudo_precision must be in (0, 1]"),
            (self.pseudo_init in PSEUDO_INITS, f"pseudo_init must be one of {', '.join(PSEUDO_INITS)}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_epochs >= 2, "max_epochs must be >= 2 (a warm-up epoch and a decay epoch)"),
            (self.patience >= 1, "patience must be >= 1"),
            (0 < self.inner_share <= 0.5, "inner_share must be in (0, 0.5]"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.class_weight in CLASS_WEIGHTS, f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}"),
            (self.audio_norm in AUDIO_NORMS, f"audio_norm must be one of {', '.join(AUDIO_NORMS)}"),
            (0 <= self.shift <= 8, "shift must be in 0..8 pixels"),
            (0 <= self.rotate <= 180, "rotate must be in 0..180 degrees"),
            (0 <= self.erase <= 1, "erase must be in [0, 1] (a share of the image)"),
            (self.image_noise >= 0, "image_noise must be >= 0"),
            (0 <= self.audio_mix <= 10, "audio_mix must be in 0..10 (an amplitude ratio)"),
            (0 <= self.time_mask <= 39, "time_mask must be in 0..39 frames"),
            (0 <= self.freq_mask <= 13, "freq_mask must be in 0..13 coefficients"),
            (self.audio_noise >= 0, "audio_noise must be >= 0"),
            (0 <= self.mixup <= 10 and 0 <= self.cutmix <= 10, "mixup and cutmix must be in 0..10 (a Beta alpha)"),
            (1 <= self.seeds <= 20, "seeds must be in 1..20"),
            (self.ema == 0 or 0.5 <= self.ema < 1, "ema must be 0 (off) or in [0.5, 1) (a decay per step)"),
            (0 <= self.swa_epochs <= self.epochs or self.early_stop, "swa_epochs must be in 0..epochs"),
            (self.swa_epochs >= 0, "swa_epochs must be >= 0"),
            (not (self.ema and self.swa_epochs), "ema and swa_epochs are two ways to average weights: choose one"),
            (0 <= self.tta_shift <= 4, "tta_shift must be in 0..4 pixels"),
            (0 <= self.tta_mask <= 13, "tta_mask must be in 0..13 frames"),
            (all(0 <= getattr(self, k) <= 1 for k in AUGMENT_P_KEYS), f"{'/'.join(AUGMENT_P_KEYS)} must be in [0, 1]"),
            (0 <= self.image_dropout < 1 and 0 <= self.audio_dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.modality_dropout < 1, "modality_dropout must be in [0, 1)"),
            (self.image_kernel % 2 == 1 and self.image_kernel > 0, "image_kernel must be odd (3, 5, 7)"),
            (self.image_width >= 1, "image_width must be >= 1 (1 = the reference's channels)"),
            (self.audio_kernel % 2 == 1 and self.audio_kernel > 0, "audio_kernel must be odd (3, 5, 7)"),
            (self.schedule in ("onecycle", "constant"), "schedule must be 'onecycle' or 'constant'"),
            (
                self.split in ("auto", "grouped", "stratified", "cluster"),
                "split must be auto/grouped/stratified/cluster",
            ),
            (self.device in ("auto", "cpu", "cuda"), "device must be auto, cpu or cuda"),
            (self.workers >= 0, "workers must be >= 0"),
            (self.batch_units in ("auto", "on", "off"), "batch_units must be auto, on or off"),
            (len(self.models) > 0, "models must name at least one model"),
            (len(set(self.models)) == len(self.models), "models must name each model once"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UserError(f"{source}: {msg}; fix the value in the config file or --set")
        from competition.models import list_models

        check_known([*self.models, *self.per_model], list_models(), "model", source)
        for name in self.per_model:
            self.for_model(name).validate(f"{source} per_model.{name}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def result_dict(self) -> dict[str, Any]:
        """The keys that determine the numbers a run produces (what resume must match)."""
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_KEYS}

    def fingerprint(self) -> str:
        """Hash of the result keys that differ from the defaults: stable when Config gains new keys."""
        default = Config().result_dict()
        changed = {k: v for k, v in self.result_dict().items() if v != default[k]}
        blob = json.dumps(changed, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:8]


# One line per config key, in the order of Config's fields: the config reference (docs/reference/config.md) is
# generated from it by `python -m competition.cli.reference`, and a test fails when a key has no line here.
KEY_DOCS: dict[str, str] = {
    "folds": "K of the K-fold split saved in `<workdir>/folds.csv`",
    "seed": "seeds the split, every model's initialisation and its batch order",
    "group_duplicates": "keep exact duplicate feature rows on one side of every split (`false`: plain stratified "
    "folds)",
    "split": "which rows share a fold: `auto` (`cluster` when adversarial validation finds the test audio unlike the "
    "training audio, else `grouped`), `grouped`, `stratified` or `cluster` (speaker-like clusters)",
    "models": "the models a run trains, e.g. `fusion,image,audio` (any registered model)",
    "pseudo": "a pseudo-label round: the submission (its manifest's path) whose fold models label the confident test "
    "rows added to each fold's training rows; empty = none (set with `--pseudo`)",
    "pseudo_precision": "the out-of-fold accuracy the pseudo-labelled rows' confidence threshold must reach (strict: "
    "on shifted test rows the same confidence is right less often than out of fold)",
    "pseudo_init": "where a pseudo-label round's units start: `scratch` (a fresh initialisation) or `source` (the "
    "weights of the source submission's same model and fold, which never saw that fold's labels)",
    "pseudo_test_folds": "a pseudo-label round leaves 1/K of the test rows (a seeded split of them) out of each "
    "fold's pseudo set, so that each test row has one fold model that never trained on it; `auto` scores its "
    "estimate on those rows",
    "epochs": "training epochs per unit (a fixed length; unused when `early_stop` is on)",
    "batch_size": "training batch size",
    "lr": "peak learning rate (the one-cycle schedule's maximum)",
    "weight_decay": "decoupled weight decay (AdamW when > 0; plain Adam at 0)",
    "schedule": "`onecycle` (warm-up then cosine decay) or `constant`; `early_stop` replaces it",
    "early_stop": "stop each unit on an inner split of its fold's training rows (warm-up / stable / decay schedule)",
    "max_epochs": "with `early_stop`: the most epochs a unit trains, decay phase included",
    "patience": "with `early_stop`: epochs without inner-loss improvement before the decay phase starts",
    "inner_share": "with `early_stop`: share of a fold's training rows held out (grouped by duplicates) as the inner "
    "split",
    "label_smoothing": "label smoothing of the cross-entropy loss",
    "class_weight": "`balanced`: each class's loss weighted by N / (10 x its rows); `none`; `auto`: balanced when the "
    "largest class of the rows trained on has at least twice the rows of the smallest, else none",
    "audio_norm": "`utterance`: subtract from each MFCC coefficient its mean over the recording's 39 frames (cepstral "
    "mean normalisation: removes a speaker's and a channel's constant offset; training, validation and test rows "
    "alike) before the fold's scaler; `none`",
    "shift": "translate training images by up to this many pixels (0 = off)",
    "shift_p": "share of training rows `shift` applies to",
    "rotate": "rotate training images by up to this many degrees (0 = off)",
    "rotate_p": "share of training rows `rotate` applies to",
    "erase": "random erasing: largest share of the image one grey rectangle covers (0 = off)",
    "erase_p": "share of training rows `erase` applies to",
    "image_noise": "std of Gaussian pixel noise on training images, pixels in [0, 1] (0 = off)",
    "image_noise_p": "share of training rows `image_noise` applies to",
    "audio_mix": "mix another training row's audio in at up to this amplitude ratio (1 = 0 dB; 0 = off)",
    "audio_mix_p": "share of training rows `audio_mix` applies to",
    "time_mask": "SpecAugment: blank up to this many consecutive MFCC frames of 39 (0 = off)",
    "time_mask_p": "share of training rows `time_mask` applies to",
    "freq_mask": "SpecAugment: blank up to this many consecutive MFCC coefficients of 13 (0 = off)",
    "freq_mask_p": "share of training rows `freq_mask` applies to",
    "audio_noise": "std of Gaussian noise added to the standardised MFCCs of training rows (0 = off)",
    "audio_noise_p": "share of training rows `audio_noise` applies to",
    "mixup": "mixup across rows: Beta(alpha, alpha) weight, both modalities and the loss mixed alike (0 = off)",
    "cutmix": "cutmix across rows: a box of the other row's image and as large a share of its frames (0 = off)",
    "mix_p": "share of training batches mixed (mixup / cutmix)",
    "seeds": "train each (model, fold) unit with this many seeds and average their logits (seed bagging)",
    "ema": "decay of an exponential moving average of the weights, the averaged model scored and saved (0 = off)",
    "swa_epochs": "average the weights of the last this many epochs (stochastic weight averaging; 0 = off)",
    "tta_shift": "test-time augmentation: also predict on the images shifted by this many pixels (4 views)",
    "tta_mask": "test-time augmentation: also predict with this many MFCC frames blanked (3 views)",
    "image_kernel": "convolution kernel size of the image encoder (odd: 3, 5, 7)",
    "image_width": "the image encoder's convolution channels, times the reference's (16, 32); 1 = the reference",
    "audio_kernel": "convolution kernel size of the audio encoder (odd: 3, 5, 7)",
    "image_dropout": "dropout in the image encoder",
    "audio_dropout": "dropout in the audio encoder",
    "modality_dropout": "fusion models only: blank one modality's features for this share of training rows",
    "device": "`auto` (cuda when present), `cpu` or `cuda`",
    "workers": "parallel training processes; 0 = one per CPU core on cpu, 1 on cuda",
    "batch_units": "train the units of a model (its folds and seeds) as one batched program: `on`, `off`, or `auto` "
    "(only where measured faster: nowhere yet; on a GPU measure with `bench/gpu.sh`); batched units draw other "
    "dropout masks, so their figures differ within fold-to-fold noise",
    "per_model": "recipe keys for one model of the run only: `[per_model.<model>]` tables, or "
    "`--set per_model.<model>.<key>=value`",
}
# The reference's sections: the first key of each, in field order.
KEY_SECTIONS: dict[str, str] = {
    "folds": "Cross-validation",
    "epochs": "Training recipe",
    "early_stop": "Training length (early stopping)",
    "label_smoothing": "Loss",
    "audio_norm": "Input normalisation",
    "shift": "Augmentation of training batches",
    "seeds": "Variance reduction (seeds, weight averaging, test-time augmentation)",
    "image_kernel": "Model hyperparameters",
    "device": "Execution (does not change the result on a given device)",
    "per_model": "Per-model recipes",
}

FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _coerce(key: str, value: Any, source: str) -> Any:
    """Convert a TOML or command-line value to the type of ``Config.<key>``."""
    if key not in FIELDS:
        raise UserError(f"{source}: unknown config key {key!r}; known keys: {', '.join(FIELDS)}")
    if key == "per_model":
        return _coerce_per_model(value, source)
    default = getattr(Config(), key)
    try:
        if isinstance(value, bool) and not isinstance(default, bool):  # TOML's true is not the number 1
            raise ValueError(value)
        if isinstance(default, str) and not isinstance(value, str):
            raise ValueError(value)
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, list):
            return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        return type(default)(value)
    except (TypeError, ValueError):
        raise UserError(f"{source}: {key}={value!r} is not a valid {type(default).__name__}; fix the value") from None


def _coerce_per_model(value: Any, source: str) -> dict[str, dict[str, Any]]:
    """``{model: {key: value}}`` with each value coerced; run-wide keys cannot differ per model."""
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise UserError(f"{source}: per_model must be tables [per_model.<model>] of config keys; fix the file")
    out = {}
    for model, keys in value.items():
        shared = sorted(set(keys) & set(RUN_KEYS))
        if shared:
            raise UserError(f"{source}: per_model.{model}: {shared} apply to the whole run; fix: set them at top level")
        out[model] = {k: _coerce(k, v, f"{source} per_model.{model}") for k, v in keys.items()}
    return out


def read_toml(path: Path, what: str, fix_missing: str) -> dict[str, Any]:
    """A TOML file's tables; a missing or malformed file is a UserError naming it and the fix."""
    if not path.is_file():
        raise UserError(f"{path}: {what} not found; fix: {fix_missing}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML ({e}); fix the file") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults <- the TOML file (a path, or a shipped recipe's name) <- overrides; unknown keys and bad values are
    UserErrors.

    An override ``per_model.<model>.<key>`` changes one key of one model's table, keeping the others.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = recipe_path(path)  # a TOML file, or a shipped recipe's name
        raw = read_toml(
            path, "config file", "pass --config with a TOML file or a shipped recipe (default, robust, seed)"
        )
        values.update({k: _coerce(k, v, str(path)) for k, v in raw.items()})
    per_model = {m: dict(keys) for m, keys in values.get("per_model", {}).items()}
    for k, v in (overrides or {}).items():
        if k.startswith("per_model."):
            model, _, key = k.removeprefix("per_model.").partition(".")
            if not model or not key:
                raise UserError(f"--set {k}: expected per_model.<model>.<key>=value, e.g. per_model.audio.audio_mix=0")
            v = _coerce("per_model", {model: {key: v}}, "--set")[model][key]
            per_model.setdefault(model, {})[key] = v
        elif k == "per_model":
            per_model = {m: dict(keys) for m, keys in _coerce(k, v, "--set").items()}
        else:
            values[k] = _coerce(k, v, "--set")
    values["per_model"] = per_model
    sources = [str(path)] if path is not None else []
    sources += ["--set/flags"] if overrides else []
    return Config(**values).validate(f"config ({' with '.join(sources)})" if sources else "config")


def parse_overrides(pairs: list[str]) -> dict[str, str]:
    """``["lr=1e-3", "epochs=5"]`` -> ``{"lr": "1e-3", "epochs": "5"}``."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {pair!r}: expected key=value, e.g. --set lr=1e-3")
        out[key.strip()] = value.strip()
    return out


def to_toml(values: dict[str, Any]) -> str:
    """Write config values as TOML (the inverse of ``load_config``); per_model as dotted keys."""

    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return json.dumps(str(v))

    flat = {k: v for k, v in values.items() if k != "per_model"}
    flat |= {f"per_model.{m}.{k}": v for m, keys in values.get("per_model", {}).items() for k, v in keys.items()}
    return "".join(f"{k} = {fmt(v)}\n" for k, v in flat.items())


def resolve_config(
    config: str | Path | None = None, overrides: dict[str, Any] | None = None, models: str | list[str] | None = None
) -> tuple[Config, str]:
    """The resolved recipe and its default run name: the shipped ``default`` recipe, or ``config`` (a TOML path
    or a shipped recipe's name), with ``overrides`` applied; ``models`` (a list or comma-separated names)
    replaces the recipe's models.

    The run name is the config file's name, plus the config's fingerprint when overrides changed a key
    that changes the results, so that a rerun of the same command resumes and another recipe never
    lands in the same run folder.
    """
    path = DEFAULT_RECIPE if config is None else recipe_path(config)
    overrides = dict(overrides or {})
    if models is not None:
        overrides["models"] = models if isinstance(models, str) else ",".join(models)
    cfg = load_config(path, overrides)
    base = load_config(path)
    plain = dataclasses.replace(cfg, pseudo=base.pseudo)  # a pseudo-label round is named <name>-pseudo
    name = path.stem if plain.result_dict() == base.result_dict() else f"{path.stem}-{plain.fingerprint()}"
    return cfg, name + ("-pseudo" if cfg.pseudo != base.pseudo else "")
