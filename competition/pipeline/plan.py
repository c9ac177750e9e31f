"""Plan: which stages ``auto`` runs, in which order, and the estimated seconds of each, from the data's profile,
each model's measured speed on this machine, the time left and the preset. Pure: no training, no files.

A stage is an ordinary cv run (a recipe change over the base recipe) followed by its submission, or a blend
submission of earlier runs. The levers are the entries of ``LEVERS``: each has a name (the run's name), its
config overrides for this data, its time factor (epochs relative to the base recipe, extra training rows) and a ``want``
rule saying, from the profile, the preset and what is already chosen, whether it joins the plan and why. A new
lever joins with a new entry; the planner (``make_plan``) then prices it and keeps it when it fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from competition.utils.errors import UserError

PRESETS = ("fast", "best")
CLUSTER_AUC = 0.8  # as splits.kinds.CLUSTER_AUC: the audio train-vs-test AUC from which the test rows count as shifted
# Early stopping trains more epochs than the base recipe, and the more the fewer rows a fold has (fewer steps per
# epoch): measured 2.5x on the shipped data (12,000 rows; docs/howto/shift.md, bench/results/benchmarks.md), 4.0x
# and 3.0x on two new-speaker testbeds of 1,689 and 1,765 rows (bench/results/auto.md): 2.5 x (12,000 / rows) ^ 0.2.
ES_FACTOR, ES_ROWS, ES_EXPONENT = 2.5, 12_000, 0.2
EVAL_OVERHEAD = 1.15  # per epoch: the validation pass, and the test logits at the end, over the training steps
STAGE_OVERHEAD_S = 5.0  # per cv stage: starting worker processes, loading, scoring
# A pseudo-label round adds about this share of the test rows to each fold's rows: 72-87 % measured on first rounds of
# new-speaker testbeds, 86-93 % on second rounds, whose sources label more rows confidently (bench/results/auto.md).
# Used until the round's source submission is written; then the plan is remade with the rows it labels.
PSEUDO_TEST_SHARE = 0.8
SUBMIT_BASE_S = 6.0  # a submission: loading, consensus grouping, writing
SUBMIT_S_PER_ROW_MODEL = 8e-4  # a submission's blends and their nested scores, per training row and blended model
# A pseudo-label round on an early-stopping source starts each unit from the source's same model and fold
# (``pseudo_init=source``) and stops early: on three new-speaker testbeds such rounds trained 5-17 epochs where rounds
# from scratch trained 9-39, in 0.21-0.41 of their time, and scored as well over rounds (bench/results/auto.md). A
# round's epochs are priced at this share of early stopping's; the measured pace corrects the rest.
WARM_ROUND_FACTOR = 0.4
# Pseudo-label rounds at most, each on the one before, the time allowing. With a test split held out of each fold's
# pseudo-labels, rounds 5-8 scored about as well as round 4 on their own, and the equal blend of eight rounds at or
# above the blend of four on four new-speaker testbeds (bench/results/auto.md): more members, less variance.
ROUNDS = 8
# Random erasing on half the training images, with early stopping (which trains the longer the harder the rows), on
# shifted test rows: fusion held-out +0.021 and +0.013 on two new-speaker testbeds with occluded, noisier test images
# (out of fold +0.003, +0.006); on the shipped data, not shifted, out of fold -0.0009, so not there; with the fixed
# 4-epoch schedule it lost (bench/results/levers.md). The pseudo-label round inherits it from its source.
ERASE = {"erase": 0.3, "erase_p": 0.5}


@dataclass(frozen=True)
class Profile:
    """What the plan reads from the data and the base recipe."""

    n_train: int
    n_test: int
    folds: int
    models: tuple[str, ...]
    epochs: int  # the base recipe's epochs
    max_epochs: int  # early stopping's cap
    workers: int  # units trained at once
    class_min_share: float = 0.1
    class_max_share: float = 0.1
    duplicate_share: float = 0.0  # training rows whose audio repeats another training row's
    test_seen_share: float = 0.0  # test rows whose audio is also a training row's
    audio_auc: float | None = None  # adversarial validation, train vs test
    image_auc: float | None = None

    @property
    def shifted(self) -> bool:
        """The test audio is clearly from other speakers (the rule of the cv's ``split=auto``)."""
        return self.audio_auc is not None and self.audio_auc >= CLUSTER_AUC

    def lines(self) -> list[str]:
        auc = lambda a: "n/a" if a is None else f"{a:.2f}"  # noqa: E731
        return [
            f"data: {self.n_train} training rows, {self.n_test} test rows; class shares "
            f"{self.class_min_share:.1%}..{self.class_max_share:.1%}; {self.duplicate_share:.0%} of training rows "
            f"repeat another's audio, {self.test_seen_share:.0%} of test rows' audio is in training",
            f"shift: train-vs-test AUC audio {auc(self.audio_auc)}, image {auc(self.image_auc)} -> "
            + ("shifted (audio AUC >= 0.8)" if self.shifted else "not shifted (audio AUC < 0.8)"),
        ]


Speeds = dict[str, float]  # model -> seconds per training row per epoch, one worker (probe.py)


@dataclass(frozen=True)
class Stage:
    """One step of the plan: a cv run (``kind`` cv, ``name`` its run name) or a submission (``kind`` submit,
    ``name`` its file name, ``runs`` the cv runs it blends)."""

    name: str
    kind: str  # "cv" | "submit"
    why: str
    chosen: bool
    seconds: float  # estimated
    overrides: dict[str, Any] = field(default_factory=dict)  # cv: keys over the base recipe
    runs: tuple[str, ...] = ()  # submit: the runs blended
    pseudo_from: str = ""  # cv: the submission whose fold models label the test rows ("" = none)
    unit_seconds: float = 0.0  # cv: the longest unit's estimate (a unit batch started must end by the deadline)
    # cv: > 0 when only part of the stage fits: the seconds of its first model's folds (its costliest units train
    # first); it trains until the deadline and its models finished on every fold are submitted
    part_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"runs": list(self.runs), "seconds": round(self.seconds, 1)}


@dataclass(frozen=True)
class Plan:
    preset: str
    limit: float  # the seconds the plan had
    profile: Profile
    speeds: Speeds
    stages: tuple[Stage, ...]

    @property
    def chosen(self) -> list[Stage]:
        return [s for s in self.stages if s.chosen]

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.chosen)

    def lines(self) -> list[str]:
        out = [f"plan ({self.preset}, {duration(self.limit)} available, {duration(self.seconds)} estimated):"]
        for s in self.stages:
            mark = f"{duration(s.seconds):>8}" if s.chosen else "    skip"
            out.append(f"  {mark}  {s.kind:6} {s.name:12} {s.why}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "limit_seconds": round(self.limit, 1),
            "estimated_seconds": round(self.seconds, 1),
            "speeds_seconds_per_row_epoch": self.speeds,
            "stages": [s.to_dict() for s in self.stages],
        }


def duration(seconds: float) -> str:
    """``95`` -> ``1m35s``; for plans and messages."""
    s = max(0, math.ceil(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")


# --- the cost model -----------------------------------------------------------------------------------------


def unit_seconds(p: Profile, speeds: Speeds, model: str, epoch_factor: float = 1.0, extra_rows: float = 0.0) -> float:
    """One (model, fold) unit: epochs x training rows x the model's measured seconds per row-epoch."""
    epochs = min(p.max_epochs, p.epochs * epoch_factor) if epoch_factor != 1.0 else p.epochs
    rows = p.n_train * (p.folds - 1) / p.folds + extra_rows
    return epochs * rows * speeds[model] * EVAL_OVERHEAD


def cv_seconds(p: Profile, speeds: Speeds, epoch_factor: float = 1.0, extra_rows: float = 0.0) -> tuple[float, float]:
    """(the stage's seconds, its longest unit's): every model x fold unit spread over the workers."""
    units = [unit_seconds(p, speeds, m, epoch_factor, extra_rows) for m in p.models]
    longest = max(units)
    total = sum(units) * p.folds
    return STAGE_OVERHEAD_S + max(total / max(1, p.workers), longest), longest


def part_seconds(p: Profile, speeds: Speeds, epoch_factor: float = 1.0, extra_rows: float = 0.0) -> float:
    """The seconds of a cv stage's first model's folds: the slowest model's (the costliest units train first), in
    batches of ``workers``; a stage stopped after them submits that model (``run.complete_models``)."""
    first = max(p.models, key=lambda m: speeds[m])
    unit = unit_seconds(p, speeds, first, epoch_factor, extra_rows)
    return STAGE_OVERHEAD_S + math.ceil(p.folds / max(1, p.workers)) * unit


def es_factor(p: Profile) -> float:
    """Early stopping's epochs over the base recipe's for this data (at least 1.5x, at most ``max_epochs``)."""
    factor = ES_FACTOR * (ES_ROWS / max(1, p.n_train)) ** ES_EXPONENT
    return min(max(factor, 1.5), p.max_epochs / max(1, p.epochs))


def submit_seconds(p: Profile, n_models: int) -> float:
    return blend_seconds(p.n_train, n_models)


def blend_seconds(n_train: int, n_models: int) -> float:
    """A submission blending ``n_models`` models' logits of ``n_train`` training rows (nested scores included)."""
    return SUBMIT_BASE_S + SUBMIT_S_PER_ROW_MODEL * n_train * n_models


def blend_runs(runs: Sequence[str], sources: Mapping[str, str], shifted: bool) -> list[str]:
    """The finished ``runs`` (in plan order) the final blend blends; one run's own submission is the final one.
    ``sources``: {pseudo-label round: the run whose submission it used}. With a pseudo-label round among them, the
    rounds only: a round's out-of-fold figures understate its gain on the test rows (its extra rows are test-like, no
    validation fold is), so blend weights fitted out of fold lean on the runs before it: on new-speaker testbeds the
    round alone scored 0.9656 and 0.9445 held-out, its blend with its source 0.9644 and 0.9345. Else, on shifted
    test rows, the runs after the base recipe, for the same reason: the base recipe has none of the shift's levers
    and its out-of-fold figures do not show what it loses on the test rows; blended with early stopping by weights
    fitted out of fold it lost 0.061 and 0.009 held out on two 1,000-row copies, against -0.0003 to +0.0023 on three
    larger ones (bench/results/auto.md)."""
    rounds = [r for r in runs if sources.get(r) in runs]
    later = [r for r in runs if r != BASE] if shifted else list(runs)
    return rounds or later or list(runs)


def final_blend_seconds(p: Profile, runs: Sequence[str], sources: Mapping[str, str]) -> float:
    """The final blend's seconds if the cv stages ``runs`` all finish (none when it would blend one run)."""
    blended = blend_runs(runs, sources, p.shifted)
    return submit_seconds(p, len(p.models) * len(blended)) if len(blended) >= 2 else 0.0


# --- the levers ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What a lever's rule may read: the preset, the cv stages chosen so far and the seconds left."""

    preset: str
    chosen: tuple[Stage, ...]
    left: float


@dataclass(frozen=True)
class Lever:
    name: str  # the cv run's (and its submission's) name
    overrides: Callable[[Profile], dict[str, Any]]  # the config keys over the base recipe, for this data
    epoch_factor: Callable[[Profile], float]  # epochs relative to the base recipe, for this data
    pseudo: bool  # trains a pseudo-label round on the last chosen run's submission
    want: Callable[[Profile, Context], tuple[bool, str]]


def _auc(p: Profile) -> str:
    return "n/a" if p.audio_auc is None else f"{p.audio_auc:.2f}"


def _want_base(p: Profile, ctx: Context) -> tuple[bool, str]:
    if ctx.preset == "fast":
        return True, "the base recipe (preset fast)"
    if p.shifted:  # the final blend leaves it out (blend_runs)
        return True, "the base recipe first: a submission early whatever happens later"
    return True, "the base recipe first: a submission early whatever happens later, and a member of the final blend"


def _want_es(p: Profile, ctx: Context) -> tuple[bool, str]:
    if ctx.preset == "fast":
        return False, f"preset fast: early stopping trains ~{es_factor(p):.1f}x the epochs"
    if p.shifted:
        return (
            True,
            f"early stopping and random erasing: shifted test rows (audio AUC {_auc(p)} >= 0.8), where they gain most",
        )
    return True, "early stopping: a second recipe for the final blend (preset best, the time allows it)"


def _want_pseudo(p: Profile, ctx: Context) -> tuple[bool, str]:
    if ctx.preset == "fast":
        return False, "preset fast: a pseudo-label round retrains every unit"
    if not p.shifted:
        return (
            False,
            f"test rows not shifted (audio AUC {_auc(p)} < 0.8): pseudo-labels would add rows like the training rows",
        )
    if not ctx.chosen:
        return False, "no earlier run whose submission could label the test rows"
    return True, f"shifted test rows: a pseudo-label round on {ctx.chosen[-1].name}'s submission"


# Further rounds, each on the one before, the rounds blended: on three noisy new-speaker testbeds the second round
# gained +0.005 to +0.009 held-out over the first, the third and fourth -0.002 to +0.003 each (bench/results/auto.md);
# taken when the time allows.
def _want_next_round(p: Profile, ctx: Context) -> tuple[bool, str]:
    if not ctx.chosen or not ctx.chosen[-1].pseudo_from:  # fast, unshifted, or the round before did not fit
        return False, "no pseudo-label round before it to label the test rows"
    return True, (
        f"a further pseudo-label round on {ctx.chosen[-1].name}'s submission: its fold models, which trained on "
        "test rows, label them better than the round's source did"
    )


LEVERS: tuple[Lever, ...] = (
    Lever("auto-base", lambda p: {}, lambda p: 1.0, False, _want_base),
    Lever("auto-es", lambda p: {"early_stop": True, **(ERASE if p.shifted else {})}, es_factor, False, _want_es),
    Lever("auto-pseudo", lambda p: {}, lambda p: 1.0, True, _want_pseudo),
    *(Lever(f"auto-pseudo{r}", lambda p: {}, lambda p: 1.0, True, _want_next_round) for r in range(2, ROUNDS + 1)),
)
BLEND = "auto-blend"
BASE = LEVERS[0].name  # the base recipe's run


def round_sources(stages: Sequence[Stage]) -> dict[str, str]:
    """{pseudo-label round: the run whose submission it uses} of ``stages``."""
    return {s.name: s.pseudo_from for s in stages if s.pseudo_from}


def check_preset(preset: str) -> str:
    if preset not in PRESETS:
        raise UserError(f"--preset {preset!r}: unknown; fix: pass one of {', '.join(PRESETS)}")
    return preset


def make_plan(
    profile: Profile, speeds: Speeds, limit: float, preset: str, levers: tuple[Lever, ...] = LEVERS,
    pace: float = 1.0, done: frozenset[str] = frozenset(), pseudo_rows: Mapping[str, float] | None = None,
) -> Plan:  # fmt: skip
    """The stages, in order, chosen or skipped with the reason, priced from ``speeds``, within ``limit`` seconds.
    A plan remade part-way (``run_auto``) passes ``pace``, the measured over the estimated seconds of the stages
    trained so far, which the time a stage needs is (its ``seconds`` stay the estimate from ``speeds``),
    ``done``, the levers whose run and submission are finished: they cost nothing, and ``pseudo_rows``: for a
    written submission, the test rows per fold (mean) a pseudo-label round on it adds, where
    ``PSEUDO_TEST_SHARE`` of the test rows is assumed otherwise."""
    check_preset(preset)
    missing = [m for m in profile.models if m not in speeds]
    if missing:
        raise ValueError(f"no measured speed for {missing}")
    stages: list[Stage] = []
    chosen: list[Stage] = []  # cv stages
    left = float(limit)

    measured = pseudo_rows or {}
    own_submit = submit_seconds(profile, len(profile.models))  # a cv stage's own submission, of all its models

    def price(lever: Lever) -> tuple[float, float, dict[str, Any], str, str, float]:
        """(cv seconds incl. its submission, longest unit, overrides, pseudo source, a note on the pseudo rows,
        the cv seconds of its first model's folds) of ``lever`` now."""
        overrides, factor, source, extra, rows = lever.overrides(profile), lever.epoch_factor(profile), "", 0.0, ""
        if lever.pseudo and chosen:
            src = chosen[-1]
            overrides = {**src.overrides, **overrides}  # the source's recipe, one round further
            overrides["pseudo_test_folds"] = True  # one clean fold model per test row, for the estimate
            if src.overrides.get("early_stop"):  # the source's fold models to start from, and a signal to stop
                overrides["pseudo_init"] = "source"
                factor = max(factor, WARM_ROUND_FACTOR * es_factor(profile))
            source = src.name
            if source in measured:
                extra, rows = measured[source], f"{measured[source]:.0f} pseudo-labelled rows per fold"
            else:
                extra, rows = PSEUDO_TEST_SHARE * profile.n_test, f"~{PSEUDO_TEST_SHARE:.0%} of the test rows assumed"
        seconds, unit = cv_seconds(profile, speeds, factor, extra)
        part = part_seconds(profile, speeds, factor, extra)
        return seconds + own_submit, unit, overrides, source, rows, part

    for lever in levers:
        ok, why = lever.want(profile, Context(preset, tuple(chosen), left))
        seconds, unit, overrides, source, rows, part = price(lever)
        if ok and rows:
            why += f" ({rows})"
        needed = 0.0 if lever.name in done else seconds * pace
        # a stage joins only with time left for the final blend that would then include it (none where that blend
        # would be of one run, e.g. the first pseudo-label round: its own submission is the final one)
        runs, sources = (
            [s.name for s in chosen] + [lever.name],
            round_sources(chosen) | ({lever.name: source} if source else {}),
        )
        blend = 0.0 if lever.name in done else final_blend_seconds(profile, runs, sources) * pace
        cv_part = 0.0
        if ok and needed + blend > left:
            and_blend = " with the final blend" if blend else ""
            # its first model's folds and their submission fit: it trains until the deadline, submits the models it
            # finished, and leaves no time for a later stage
            first = (part + submit_seconds(profile, 1)) * pace
            if len(profile.models) > 1 and first + blend <= left:
                cv_part, needed = part, left - blend
                why = (
                    f"only part fits: ~{duration(first)} for its first model's folds of ~{duration(seconds * pace)}"
                    f"{and_blend and ' (and the final blend)'}, {duration(left)} left; it trains until the deadline "
                    f"and submits the models it finished ({why})"
                )
            else:
                ok, why = (
                    False,
                    f"would not fit: ~{duration(needed + blend)} needed{and_blend}, {duration(left)} left ({why})",
                )
        cv_s = seconds - own_submit
        if cv_part:  # priced as the time it gets: until the deadline, less its submission's
            cv_s = max(cv_part, needed / pace - own_submit)
        stage = Stage(lever.name, "cv", why, ok, cv_s, overrides, (), source, unit, cv_part)
        stages.append(stage)
        sub_why = f"submission of {lever.name} (blend candidates scored nested out of fold, consensus auto)"
        stages.append(
            Stage(lever.name, "submit", sub_why if ok else f"{lever.name} skipped", ok,
                  own_submit if ok else 0.0, runs=(lever.name,))
        )  # fmt: skip
        if ok:
            chosen.append(stage)
            left -= needed
    blend_s = final_blend_seconds(profile, [s.name for s in chosen], round_sources(chosen))
    if len(chosen) < 2:
        stages.append(Stage(BLEND, "submit", "one run: its submission is the final one", False, 0.0))
    elif blend_s * pace > left + 1e-6:  # a part stage leaves exactly the blend's seconds
        stages.append(Stage(BLEND, "submit", f"would not fit: ~{duration(blend_s * pace)} needed", False, blend_s))
    else:
        runs = tuple(s.name for s in chosen)
        why = f"the final blend of {', '.join(runs)}: weights and candidate chosen by nested out-of-fold macro-F1"
        if any(s.pseudo_from for s in chosen):
            why += "; with a pseudo-label round, the rounds only, in equal weights (one round: its own submission)"
        elif profile.shifted:
            why += "; on shifted test rows, the runs after the base recipe (one: its own submission)"
        stages.append(Stage(BLEND, "submit", why, True, blend_s, runs=runs))
    return Plan(preset, float(limit), profile, dict(speeds), tuple(stages))
