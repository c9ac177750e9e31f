"""Run: measure, plan, then execute ``auto``'s stages in order against a deadline, and write ``auto.csv``.

Every stage is an ordinary artifact: a cv run ``<workdir>/<stage>`` (trained by ``run_cv``, which resumes its
finished units) or a submission ``<out>/<stage>.csv``. A stage already finished by an earlier invocation is
kept as it is; a stage whose remaining estimate does not fit before the deadline is not started; a running cv
stage claims no unit batch that would end after the deadline (``run_cv(deadline=...)``). After each submission the
plan is remade for the time left, priced at the pace the cv stages so far kept: a stage the first plan skipped
for time joins when the stages before it ran faster than estimated, and leaves when they ran slower. At the end, or on a
deadline or Ctrl-C, ``auto.csv`` is a copy of the latest finished submission of the plan, and its manifest
``auto.json`` (the submission's own manifest, plus an ``auto`` section) says which runs it used, why each stage
was chosen or skipped, what happened to it, and ``estimated_test_macro_f1`` with the kind of estimate it is.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from competition.config import Config
from competition.data.load import Competition, load_competition
from competition.ensemble.blend import combine, fold_blends, to_space
from competition.ensemble.confidence import confidence_macro_f1
from competition.ensemble.consensus import joint_groups
from competition.ensemble.covariate import likeness_weights
from competition.metrics import macro_f1
from competition.pipeline.plan import (
    BLEND,
    Plan,
    Stage,
    blend_runs,
    blend_seconds,
    duration,
    make_plan,
    round_sources,
    submit_seconds,
)
from competition.pipeline.probe import measure_profile, probe_speeds
from competition.store.atomic import check_writable, write_bytes, write_json
from competition.store.loading import load_finished_run, load_runs
from competition.store.readers import read_folds, read_manifest, read_run_config
from competition.store.runs import missing_folds, split_fingerprint, unit_finished
from competition.submission.submit import make_submission
from competition.train import pseudo
from competition.train.cv import DeadlineReached, run_cv
from competition.train.executor import Executor, LocalExecutor, plan_workers
from competition.train.learner import resolve_device
from competition.train.pseudo import load_source
from competition.utils.console import console
from competition.utils.errors import UserError

AUTO = "auto"  # auto.csv, auto.probs.npz, auto.json
RESERVE_S = 2.0  # kept back from the plan for writing auto.csv and its manifest
# The probe times a few batches on an idle worker; a stage's units may then run slower (load from other jobs, a
# cluster's workers, early stopping training more epochs than its factor says). Each cv stage's measured time over
# its planned time re-prices the stages after it, within these bounds.
MIN_PACE, MAX_PACE = 0.5, 10.0
SUFFIXES = (".csv", ".probs.npz", ".json")


@dataclass
class StageOutcome:
    stage: Stage
    status: str  # done | resumed | skipped | not started | stopped
    note: str = ""
    seconds: float = 0.0
    planned: float = 0.0  # the plan's seconds for what this invocation ran of the stage (before pacing)

    def to_dict(self) -> dict[str, Any]:
        return self.stage.to_dict() | {
            "status": self.status,
            "note": self.note,
            "actual_seconds": round(self.seconds, 1),
        }


@dataclass
class AutoResult:
    """What ``auto`` did: the plan, each stage's outcome, and the written ``auto.csv`` (None if no stage
    finished) with its estimate."""

    plan: Plan
    outcomes: list[StageOutcome]
    path: Path | None
    estimated_test_macro_f1: float | None
    estimate: str  # what kind of estimate, and why
    source: str | None  # the submission auto.csv copies
    seconds: float
    manifest: dict[str, Any] = field(default_factory=dict)


def _say(quiet: bool, *lines: str) -> None:
    if not quiet:
        for line in lines:
            console.print(line, highlight=False)


def stage_config(base: Config, stage: Stage, out: Path) -> Config:
    """The recipe of a cv stage: the base recipe with the stage's keys; a pseudo round reads ``out``'s
    submission of its source stage."""
    cfg = dataclasses.replace(base, **stage.overrides)
    if stage.pseudo_from:
        cfg = dataclasses.replace(cfg, pseudo=str((out / f"{stage.pseudo_from}.json").resolve()))
    return cfg.validate()


def units_left(run_dir: Path, cfg: Config) -> int:
    return sum(not unit_finished(run_dir, m, k) for m in cfg.models for k in range(cfg.folds))


def complete_models(run_dir: Path) -> list[str]:
    """The models of a cv run with every fold trained: all of a finished run's, those a stopped run finished (its
    costliest units start first), none of a run never started."""
    try:
        meta = read_run_config(run_dir)
    except UserError:
        return []
    missing = missing_folds(run_dir, meta)
    return [m for m in meta["config"]["models"] if m not in missing]


def run_auto(
    base: Config,
    data: str | Path | Competition | None,
    limit: float,
    preset: str,
    workdir: Path,
    out: Path,
    executor: Executor | None = None,
    speeds: dict[str, float] | None = None,
    quiet: bool = True,
) -> AutoResult:
    """Measure, plan within ``limit`` seconds of this call, run the plan's stages and write ``<out>/auto.csv``."""
    start = time.time()
    deadline = start + limit
    executor = executor or LocalExecutor()
    local = isinstance(executor, LocalExecutor)
    out, workdir = Path(out), Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    check_writable(out)
    comp = data if isinstance(data, Competition) else load_competition(data)
    device = resolve_device(base.device) if local else base.device
    workers = plan_workers(base, device, len(base.models) * base.folds)[0] if local else executor.slots()
    profile = measure_profile(comp, base, workdir, workers)
    _say(quiet, *profile.lines())
    if speeds is None:
        speeds = probe_speeds(comp, base, device if device in ("cpu", "cuda") else "cpu")
        _say(quiet, "speed probe (s per 1000 row-epochs, one worker): "
             + ", ".join(f"{m} {s * 1000:.3f}" for m, s in speeds.items()))  # fmt: skip
    plan = make_plan(profile, speeds, deadline - time.time() - RESERVE_S, preset)
    _say(quiet, *plan.lines())
    outcomes: list[StageOutcome] = []
    finished: set[str] = set()  # "cv:<name>", "submit:<name>"
    pace = 1.0  # measured / planned seconds of the latest cv stage trained: later stages are priced with it
    pseudo_rows: dict[str, float] = {}  # written submission -> the test rows per fold a round on it adds
    replans: list[str] = []
    try:
        while len(outcomes) < len(plan.stages):  # the plan may be remade after a stage; its stage order is fixed
            stage = plan.stages[len(outcomes)]
            sources = round_sources(plan.stages)  # pseudo round -> its source
            until = stage_deadline(plan, stage, deadline, pace)
            outcome = _run_stage(
                stage, base, comp, workdir, out, executor, until, finished, quiet, pace, sources, plan.profile.shifted
            )
            outcomes.append(outcome)
            # a part's seconds are the time it was given, not an estimate of its work: it sets no pace
            if stage.kind == "cv" and outcome.status == "done" and outcome.planned > 0 and not stage.part_seconds:
                pace = min(max(outcome.seconds / outcome.planned, MIN_PACE), MAX_PACE)
                _say(quiet, f"auto: {stage.name} took {pace:.2f}x its estimate: later stages are priced so")
            if stage.kind == "submit" and f"submit:{stage.name}" in finished and stage.name != BLEND:
                rows = round_rows(out / f"{stage.name}.json", base, comp, workdir)
                if rows is not None:
                    pseudo_rows[stage.name] = rows
                plan, note = _replan(plan, len(outcomes), deadline, pace, finished, pseudo_rows)
                if note:
                    replans.append(note)
                    _say(quiet, note)
    finally:  # a deadline, Ctrl-C or an error: auto.csv is the latest finished submission so far
        result = _write_auto(plan, outcomes, comp, workdir, out, start, finished, replans)
        _say(quiet, *_summary_lines(result))
    return result


def stage_deadline(plan: Plan, stage: Stage, deadline: float, pace: float) -> float:
    """The time by which ``stage`` must end: a stage before the plan's final blend leaves it its seconds at ``pace``
    (a cv stage claims no unit batch that would eat into them), so the blend of what finished is still written; a
    cv stage also leaves its own submission's seconds, so what it trains, all of it or the models it finished
    before a stop, is submitted."""
    blend = plan.stages[-1]
    end = deadline - blend.seconds * pace if blend.name == BLEND and blend.chosen and stage is not blend else deadline
    if stage.kind == "cv":
        end -= submit_seconds(plan.profile, len(plan.profile.models)) * pace
    return end


def round_rows(submission: Path, base: Config, comp: Competition, workdir: Path) -> float | None:
    """The test rows per fold (mean) that a pseudo-label round on the written ``submission`` adds: the very sets
    ``cv --pseudo`` computes (``train.pseudo``), so the plan prices the round by the rows it will train on. None
    when they cannot be computed here (the round itself then says why)."""
    try:
        fold_of = read_folds(workdir)[0]["fold"].to_numpy()
        cfg = dataclasses.replace(base, pseudo=str(submission.resolve()))
        rnd = pseudo.compute(workdir / "-", comp, fold_of, split_fingerprint(fold_of), cfg)
    except (OSError, KeyError, ValueError, UserError):
        return None
    return float(np.mean([len(s.idx) for s in rnd.sets]))


def _replan(
    plan: Plan, ran: int, deadline: float, pace: float, finished: set[str], pseudo_rows: dict[str, float] | None = None
) -> tuple[Plan, str]:
    """The plan remade for the time left at the measured ``pace`` after its first ``ran`` stages: a stage skipped
    because it would not fit may fit now (the probe priced high), a chosen one may no longer; a pseudo-label round
    is priced by the rows its written source submission labels (``pseudo_rows``). The stages run so far stay as
    they were; the note says what changed ("" when nothing did)."""
    done = frozenset(n.split(":", 1)[1] for n in finished if n.startswith("submit:"))
    left = deadline - time.time() - RESERVE_S
    new = make_plan(plan.profile, plan.speeds, left, plan.preset, pace=pace, done=done, pseudo_rows=pseudo_rows)
    stages = plan.stages[:ran] + new.stages[ran:]
    changes = [
        f"{s.kind} {s.name} {'now fits' if s.chosen else 'no longer fits'}"
        for old, s in zip(plan.stages[ran:], new.stages[ran:], strict=True)
        if s.chosen != old.chosen
    ]
    note = f"auto: plan remade at {pace:.2f}x the estimates, {duration(deadline - time.time())} left: " + "; ".join(
        changes
    )
    return dataclasses.replace(plan, stages=stages), note if changes else ""


def _run_stage(
    stage: Stage, base: Config, comp: Competition, workdir: Path, out: Path, executor: Executor, deadline: float,
    finished: set[str], quiet: bool, pace: float = 1.0, sources: dict[str, str] | None = None, shifted: bool = False,
) -> StageOutcome:  # fmt: skip
    """Run one stage unless it is skipped, already finished, waits on an unfinished one, or would not end before
    ``deadline`` at ``pace`` times its planned seconds."""
    if not stage.chosen:
        return StageOutcome(stage, "skipped", stage.why)
    t0 = time.time()
    if stage.kind == "cv":
        if stage.pseudo_from and f"submit:{stage.pseudo_from}" not in finished:
            return StageOutcome(stage, "not started", f"needs the submission {stage.pseudo_from}, not finished")
        cfg = stage_config(base, stage, out)
        run_dir = workdir / stage.name
        total = len(cfg.models) * cfg.folds
        left = units_left(run_dir, cfg)
        if left == 0 and (run_dir / "summary.json").is_file():
            finished.add(f"cv:{stage.name}")
            return StageOutcome(stage, "resumed", "finished by an earlier invocation")
        planned = stage.seconds * left / total
        needed = planned * pace
        as_part = ", a part: until the deadline" if stage.part_seconds else ""
        if stage.part_seconds and t0 + needed > deadline:  # planned to stop after its first model's folds, or later
            needed = min(needed, stage.part_seconds * pace)
        if t0 + needed > deadline:
            note = f"would not finish in time: ~{duration(needed)} for {left} unit(s), {duration(deadline - t0)} left"
            _say(quiet, f"auto: {stage.name}: not started, {note}")
            return StageOutcome(stage, "not started", note)
        _say(quiet, f"auto: {stage.name}: cv, {left} of {total} unit(s) to train (~{duration(needed)}{as_part})")
        try:
            run_cv(cfg, comp, workdir, stage.name, quiet, executor, deadline, stage.unit_seconds * pace)
        except DeadlineReached as e:
            note = f"stopped at a unit boundary: {e}; rerun to resume"
            return StageOutcome(stage, "stopped", note, time.time() - t0, planned)
        finished.add(f"cv:{stage.name}")
        note = "" if left == total else f"resumed: {total - left} unit(s) were finished earlier"
        return StageOutcome(stage, "done", note, time.time() - t0, planned)
    # a run stopped at a unit boundary takes part with the models it finished on every fold, the others left out
    trained = {r: complete_models(workdir / r) for r in stage.runs}  # the models with every fold, read once
    partial = {r: trained[r] for r in stage.runs if f"cv:{r}" not in finished and trained[r]}
    done = [r for r in stage.runs if f"cv:{r}" in finished or r in partial]
    missing = [r for r in stage.runs if r not in done]
    sources = sources or {}
    runs = blend_runs(done, sources, shifted)
    rounds_only = any(r in sources for r in runs)  # blend_runs kept the pseudo-label rounds only
    left_out = [r for r in done if r not in runs]
    why = "the runs before the pseudo-label rounds" if rounds_only else "the base recipe: shifted test rows"
    if stage.name == BLEND and len(runs) == 1 and written(finished, runs[0]):
        note = f"{runs[0]}'s own submission is the final one"
        if left_out:
            note += f": {', '.join(left_out)} left out ({why})"
        return StageOutcome(stage, "skipped", note)
    if not runs or (stage.name == BLEND and missing and len(runs) < 2):  # a blend of one run repeats its submission
        return StageOutcome(stage, "not started", f"needs the run(s) {', '.join(missing)}, not finished")
    key = f"partial:{stage.name}" if partial.keys() & set(runs) else f"submit:{stage.name}"
    complete = [f"{r}/{m}" for r in runs for m in trained[r]]
    models = complete if key.startswith("partial") else None
    if _written_from(out, stage.name) == (runs, sorted(complete)):
        finished.add(key)
        return StageOutcome(stage, "resumed", "written by an earlier invocation")
    n_models = len(models) if models else len(base.models) * len(runs)
    seconds = blend_seconds(comp.n_train, n_models)  # what it blends now, not what was planned
    if t0 + seconds * pace > deadline:
        return StageOutcome(stage, "not started", f"would not finish in time: ~{duration(seconds * pace)} needed")
    _say(quiet, f"auto: {stage.name}: submission of {', '.join(runs)}")
    # the rounds differ on the test rows, which no validation fold holds: weights fitted out of fold across them chase
    # the training rows (on four new-speaker testbeds -0.0048 to +0.0003 held out against equal weights), so equal;
    # a round's own submission keeps submit's choice across its models
    blend = "equal" if stage.name == BLEND and rounds_only else "auto"
    # overwrite: an earlier invocation's blend of fewer runs or models (one was not finished then) is replaced
    make_submission(load_runs(workdir, runs, comp, models), comp, blend=blend).write(out, stage.name, overwrite=True)
    finished.add(key)
    notes = [f"without {', '.join(missing)} (not finished)"] if missing and stage.name == BLEND else []
    for r in (r for r in runs if r in partial):
        notes.append(f"{r}: {', '.join(partial[r])} only (stopped at a unit boundary before its other models)")
    if left_out:
        notes.append(f"without {', '.join(left_out)} ({why})")
    return StageOutcome(stage, "done", "; ".join(notes), time.time() - t0, seconds)


def written(finished: set[str], name: str) -> bool:
    """The submission ``name`` is written, of its run's every model or (a run stopped at a unit boundary) of those
    it finished."""
    return f"submit:{name}" in finished or f"partial:{name}" in finished


def _written_from(out: Path, name: str) -> tuple[list[str], list[str]] | None:
    """The runs an earlier invocation's submission ``name`` blended and their models it read (``run/model``, sorted:
    the blended and the left out); None when it is not all written."""
    if not ((out / f"{name}.json").is_file() and (out / f"{name}.csv").is_file()):
        return None
    try:
        m = read_manifest(out / f"{name}.json")
    except UserError:
        return None  # damaged: written again
    return [r["name"] for r in m["runs"]], sorted([*m.get("models", []), *m.get("left_out", [])])


def honest_oof(manifest: dict) -> float | None:
    """A written submission's honest out-of-fold macro-F1 (``Submission.oof_macro_f1``, read from its manifest):
    after consensus when applied, else after the decision steps when they changed it, else the nested blend's."""
    consensus, decisions = manifest.get("consensus") or {}, manifest.get("decisions") or {}
    if consensus.get("applied"):
        return consensus.get("oof_macro_f1_after")
    if decisions.get("changed"):
        return decisions.get("oof_macro_f1")
    nested = manifest.get("oof_nested_macro_f1")
    return manifest.get("oof_macro_f1") if nested is None else nested


def _pseudo_runs(manifest: dict) -> list[str]:
    return [r["name"] for r in manifest.get("runs", []) if r.get("config", {}).get("pseudo")]


def reweighted_estimate(probs_file: Path, base_dir: Path, comp: Competition) -> dict[str, Any]:
    """The written submission's honest out-of-fold macro-F1 re-weighted to test-like rows (``ensemble.covariate``),
    the weights read off the base run's best model: a run without pseudo-labelled rows, whose test outputs are
    predictions, not fits. Empty when the submission has no out-of-fold probabilities (written by an older version)
    or the base run is not readable."""
    try:
        with np.load(probs_file) as f:
            oof_probs = f["oof_probs"] if "oof_probs" in f.files else None
        base = load_finished_run(base_dir, comp)
    except (OSError, KeyError, ValueError, UserError):
        return {}
    if oof_probs is None or len(oof_probs) != comp.n_train:
        return {}
    model = max(base.oof, key=lambda m: macro_f1(comp.y, base.oof[m].argmax(1)))
    likeness = likeness_weights(base.oof[model], base.test[model])
    pred = oof_probs.argmax(1)
    return {
        "plain_oof_macro_f1": macro_f1(comp.y, pred),
        "reweighted_oof_macro_f1": macro_f1(comp.y, pred, likeness.weights),
        "weights_from": f"{base_dir.name}/{model}",
        "domain_auc": round(likeness.auc, 4),
        "effective_rows": round(likeness.effective_rows, 1),
    }


def confidence_estimate(manifest_path: Path, comp: Competition) -> tuple[float, bool, bool] | None:
    """The macro-F1 the written submission's calibrated fold models expect of its labels (``ensemble.confidence``):
    each fold's blend of the submission's models (with that fold's weights; a stack's equal blend), calibrated on
    the out-of-fold blend; per test row, where its pseudo-label rounds held out a test split
    (``pseudo.held_out_test_folds``), the one fold model that never trained on the row; where the submission applied
    consensus, the beliefs pooled within the same duplicate groups. Returns the figure, whether it is so held out and
    whether so pooled; None when the submission or its runs cannot be read."""
    try:
        m = read_manifest(manifest_path)
        with np.load(manifest_path.with_suffix(".probs.npz")) as f:
            pred = f["probs"].argmax(axis=1)
        folds = int(m["runs"][0]["config"]["folds"])
        src = load_source(manifest_path, comp, m["split_fingerprint"], folds, manifest_path.parent / "-")
    except (OSError, KeyError, ValueError, IndexError, UserError):
        return None
    space = src.space
    oof = combine(np.stack([to_space(o, space) for o in src.oof]), src.weights.mean(axis=0), space)  # (N, 10)
    test = fold_blends(src.test, src.weights, space)  # (K, M, 10)
    held, use = pseudo.held_out_test_folds(manifest_path), None
    if held is not None and held[0] >= 0 and held[1] == folds:  # (seed, K) of a chain of rounds on one split
        use = pseudo.test_folds(comp.n_test, folds, held[0])[None, :] == np.arange(folds)[:, None]  # (K, M)
    # consensus pooled the written labels within duplicate groups: the beliefs that score them are pooled alike
    pooled = bool((m.get("consensus") or {}).get("applied"))
    groups = joint_groups([comp.image, comp.audio], [comp.test_image, comp.test_audio]) if pooled else None
    return confidence_macro_f1(oof, comp.y, test, pred, use, groups), use is not None, pooled


def estimate_kind(manifest: dict, split: str | None, pseudo_runs: list[str], detail: dict | None = None) -> str:
    """What the estimate is worth as an estimate of the written submission's test macro-F1."""
    what = (
        "honest out-of-fold macro-F1 of what is written (nested where the blend was fitted: each fold scored by "
        "weights chosen without its rows)"
    )
    if detail:
        what = (
            f"honest out-of-fold macro-F1 of what is written ({detail['plain_oof_macro_f1']:.4f}; nested where the "
            "blend was fitted), re-weighted to the test rows: each training row counts by how test-like "
            f"{detail['weights_from']}'s outputs on it are (domain AUC {detail['domain_auc']:.2f}, "
            f"{detail['effective_rows']:.0f} effective rows)"
        )
        if "confidence_macro_f1" in detail:
            held = (
                ", each test row read by the one fold model that never trained on it: the rounds left a test split "
                "out of each fold's pseudo-labels"
                if detail.get("confidence_held_out")
                else ""
            )
            if detail.get("confidence_pooled"):
                held += ", their beliefs pooled within the duplicate groups whose labels consensus pooled"
            what = (
                f"the mean of two estimates: {what} ({detail['reweighted_oof_macro_f1']:.4f}), and the macro-F1 the "
                f"calibrated fold models expect of the written labels ({detail['confidence_macro_f1']:.4f}{held})"
            )
    if split == "cluster":
        what += (
            "; the folds hold out speaker-like clusters, as the shifted test rows are from other speakers; test rows "
            "noisier than every training row stay beyond the re-weighting (on new-speaker testbeds with noisier test "
            "audio the estimate still overstated the held-out score, by less than the plain figure)"
        )
    if pseudo_runs:
        what += (
            f"; {', '.join(pseudo_runs)} trained on pseudo-labelled test rows: each fold's were labelled by models "
            "that never saw that fold, so the figure stays honest for the training rows, but the round's gain lands "
            "on test-like rows that no validation fold holds"
        )
    return what


def _write_auto(plan: Plan, outcomes: list[StageOutcome], comp: Competition, workdir: Path, out: Path, start: float,
                finished: set[str], replans: list[str] | None = None) -> AutoResult:  # fmt: skip
    subs = [o.stage.name for o in outcomes if o.stage.kind == "submit" and written(finished, o.stage.name)]
    source = subs[-1] if subs else None
    estimate, kind, path, runs_used, detail = None, "no stage finished: nothing written", None, [], {}
    if source is not None:
        manifest = json.loads((out / f"{source}.json").read_text())
        runs_used = [r["name"] for r in manifest.get("runs", [])]
        split = _split_of(manifest)
        estimate = honest_oof(manifest)
        detail = reweighted_estimate(out / f"{source}.probs.npz", workdir / plan.stages[0].name, comp)
        if detail:
            estimate = detail["reweighted_oof_macro_f1"]
            read = confidence_estimate(out / f"{source}.json", comp)
            if read is not None:
                confidence, detail["confidence_held_out"], detail["confidence_pooled"] = read
                # two estimates biased in opposite directions on shifted testbeds (bench/results/auto.md): the
                # re-weighting overstates where the test rows lie beyond every training row, the fold models'
                # calibrated confidence understates (each believes less in the ensemble's label than it scores)
                detail["confidence_macro_f1"] = confidence
                detail["estimate_range"] = sorted([estimate, confidence])
                estimate = (estimate + confidence) / 2
        kind = estimate_kind(manifest, split, _pseudo_runs(manifest), detail)
        for suffix in SUFFIXES[:-1]:
            write_bytes(out / f"{AUTO}{suffix}", (out / f"{source}{suffix}").read_bytes())
        path = out / f"{AUTO}.csv"
    seconds = time.time() - start
    auto = {
        "source_submission": source,
        "why_source": "the latest finished submission of the plan (each later stage builds on the earlier ones)"
        if source
        else None,
        "runs_used": runs_used,
        "estimated_test_macro_f1": estimate,
        "estimate": kind,
        "estimate_details": detail,
        "seconds": round(seconds, 1),
        "profile": dataclasses.asdict(plan.profile),
        "plan": plan.to_dict(),
        "replans": replans or [],
        "stages": [o.to_dict() for o in outcomes],
        "not_reached": [s.to_dict() for s in plan.stages[len(outcomes) :]],
    }
    if source is not None:
        write_json(out / f"{AUTO}.json", manifest | {"estimated_test_macro_f1": estimate, "auto": auto})
    else:
        write_json(out / f"{AUTO}.plan.json", {"auto": auto})
    return AutoResult(plan, outcomes, path, estimate, kind, source, seconds, auto)


def _split_of(manifest: dict) -> str | None:
    """The split kind the submission's runs trained on: the ``split`` of their workdir's ``folds.json``."""
    for r in manifest.get("runs", []):
        meta = Path(r.get("dir", "")).parent / "folds.json"
        if meta.is_file():
            return json.loads(meta.read_text()).get("split")
    return None


def _summary_lines(r: AutoResult) -> list[str]:
    lines = [f"auto: {o.status:11} {o.stage.kind:6} {o.stage.name:12} {o.note}" for o in r.outcomes]
    if r.path is None:
        return [*lines, f"auto: nothing written after {duration(r.seconds)}: no submission finished"]
    est = "n/a" if r.estimated_test_macro_f1 is None else f"{r.estimated_test_macro_f1:.4f}"
    return [
        *lines,
        f"wrote {r.path} (a copy of {r.source}) in {duration(r.seconds)}; estimated test macro-F1 {est}: {r.estimate}",
    ]
