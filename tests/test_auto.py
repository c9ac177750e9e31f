"""``run.py auto``: the planner on fake speed figures, the budget on a tiny copy, resume, and the manifest."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

from competition.cli import main
from competition.config import resolve_config
from competition.pipeline import run as auto_run
from competition.pipeline.plan import (
    BLEND,
    ROUNDS,
    STAGE_OVERHEAD_S,
    Profile,
    blend_seconds,
    es_factor,
    make_plan,
    submit_seconds,
)
from competition.train.cv import DeadlineReached, train_claimed
from competition.train.executor import LocalExecutor
from competition.utils.errors import UserError
from competition.utils.validation import parse_duration

SPEEDS = {"fusion": 1e-4, "image": 5e-5, "audio": 5e-5}  # seconds per row-epoch, one worker


def profile(shifted: bool, **kw) -> Profile:
    base = dict(n_train=24000, n_test=6000, folds=5, models=("fusion", "image", "audio"), epochs=6, max_epochs=60,
                workers=2, audio_auc=0.95 if shifted else 0.55, image_auc=0.6)  # fmt: skip
    return Profile(**(base | kw))


def by(plan, kind):
    return {s.name: s for s in plan.stages if s.kind == kind}


# --- the planner, pure ---------------------------------------------------------------------------------------


def test_best_on_shifted_data_plans_the_base_early_stopping_a_pseudo_round_and_the_blend():
    plan = make_plan(profile(True), SPEEDS, 3600, "best")
    cv = by(plan, "cv")
    assert cv["auto-base"].chosen and "first" in cv["auto-base"].why  # a submission early, whatever comes later
    assert cv["auto-es"].chosen and cv["auto-es"].overrides == {"early_stop": True, "erase": 0.3, "erase_p": 0.5}
    assert cv["auto-pseudo"].chosen and cv["auto-pseudo"].pseudo_from == "auto-es"
    # one round further on the source's recipe, each unit starting from the source's model of its fold, each fold
    # leaving its test fold out (the estimate's clean rows)
    warm = cv["auto-es"].overrides | {"pseudo_init": "source", "pseudo_test_folds": True}
    assert cv["auto-pseudo"].overrides == warm
    assert cv["auto-pseudo2"].chosen and cv["auto-pseudo2"].pseudo_from == "auto-pseudo"  # a second round on the first
    assert cv["auto-pseudo4"].chosen and cv["auto-pseudo4"].pseudo_from == "auto-pseudo3"  # and so on, ROUNDS at most
    rounds = ("auto-pseudo", *(f"auto-pseudo{r}" for r in range(2, ROUNDS + 1)))
    assert all(cv[r].chosen and cv[r].overrides == warm for r in rounds) and f"auto-pseudo{ROUNDS + 1}" not in cv
    assert by(plan, "submit")[BLEND].runs == ("auto-base", "auto-es", *rounds)
    assert plan.seconds <= 3600
    # the time factor: early stopping's epochs for this size (~2.2x at 24,000 rows), the pseudo round more (its
    # extra rows); the fewer the rows, the more epochs early stopping trains (3x and 4x measured at ~1,700 rows)
    ratio = cv["auto-es"].seconds / cv["auto-base"].seconds
    assert abs(ratio - es_factor(profile(True))) < 0.1 and 2.0 < ratio < 2.3
    # a round starts from its source's fold models: max(1, 0.4 x early stopping's) epochs, on more rows
    rows = 24000 * 4 / 5
    assert cv["auto-pseudo"].seconds - 5 == pytest.approx((cv["auto-base"].seconds - 5) * (rows + 4800) / rows)
    assert cv["auto-pseudo"].seconds < cv["auto-es"].seconds
    small = by(make_plan(profile(True, n_train=1689, n_test=900), SPEEDS, 3600, "best"), "cv")
    rows = 1689 * 4 / 5  # there 0.4 x early stopping's 3.7x the base epochs
    assert small["auto-pseudo"].seconds - 5 == pytest.approx((small["auto-es"].seconds - 5) * 0.4 * (rows + 720) / rows)
    assert 3.5 < es_factor(profile(True, n_train=1689)) < 3.9 and es_factor(profile(True, n_train=10**7)) == 1.5
    assert es_factor(profile(True, n_train=10, max_epochs=12)) == 2.0  # at most max_epochs


def test_a_stage_that_would_not_fit_is_skipped_and_said_so():
    SLOW = {m: v * 10 for m, v in SPEEDS.items()}  # noqa: N806  (training, not the submissions, sets the time)
    full = make_plan(profile(True), SLOW, 3600, "best")
    cost = {s.name: s.seconds for s in full.stages if s.kind == "cv"}
    sub = {s.name: s.seconds for s in full.stages if s.kind == "submit"}
    # the base run, early stopping and the blend of the two: the pseudo round does not fit, the blend does
    blend_s = submit_seconds(profile(True), 6)  # two runs of three models
    assert cost["auto-pseudo"] > blend_s + 1
    limit = cost["auto-base"] + sub["auto-base"] + cost["auto-es"] + sub["auto-es"] + blend_s + 1
    cv = by(plan := make_plan(profile(True), SLOW, limit, "best"), "cv")
    assert cv["auto-base"].chosen and cv["auto-es"].chosen and not cv["auto-pseudo"].chosen
    assert cv["auto-pseudo"].why.startswith("would not fit:")
    assert not cv["auto-pseudo2"].chosen and "no pseudo-label round before it" in cv["auto-pseudo2"].why
    assert by(plan, "submit")[BLEND].runs == ("auto-base", "auto-es")
    # time for one round, not two: the second is skipped and said so
    limit += cost["auto-pseudo"] + sub["auto-pseudo"] + submit_seconds(profile(True), 9) - blend_s  # blend of three
    cv = by(plan := make_plan(profile(True), SLOW, limit, "best"), "cv")
    assert cv["auto-pseudo"].chosen and not cv["auto-pseudo2"].chosen
    assert cv["auto-pseudo2"].why.startswith("would not fit:")
    assert by(plan, "submit")[BLEND].runs == ("auto-base", "auto-es", "auto-pseudo")
    # the only round needs no time for a final blend (its own submission is the final one): it fits in its own time
    runs = ("auto-base", "auto-es", "auto-pseudo")
    plan = make_plan(profile(True), SLOW, sum(cost[r] + sub[r] for r in runs) + 1, "best")
    assert by(plan, "cv")["auto-pseudo"].chosen and by(plan, "submit")[BLEND].seconds == 0
    # less time: the base run only; early stopping would not fit, nor would a pseudo round on the base run
    cv = by(plan := make_plan(profile(True), SLOW, cost["auto-base"] + sub["auto-base"] + 5, "best"), "cv")
    assert cv["auto-base"].chosen
    assert not cv["auto-es"].chosen and cv["auto-es"].why.startswith("would not fit:")
    assert not cv["auto-pseudo"].chosen and not by(plan, "submit")[BLEND].chosen
    # nothing fits: every stage skipped, each with its reason
    plan = make_plan(profile(True), SLOW, 1.0, "best")
    assert not plan.chosen and all(s.why for s in plan.stages)
    assert any("would not fit" in line for line in plan.lines())


def test_a_stage_joins_only_with_time_left_for_the_final_blend_and_runs_until_then():
    SLOW = {m: v * 10 for m, v in SPEEDS.items()}  # noqa: N806
    full = make_plan(profile(False), SLOW, 3600, "best")
    upto = [s.name for s in full.stages].index("auto-pseudo")  # test rows like the training rows: no round follows
    runs = sum(s.seconds for s in full.stages[:upto])  # the base run and early stopping with their submissions
    blend = submit_seconds(profile(False), 6)
    # the two runs fit, the final blend of the two does not: early stopping joins as a part, its first model's folds
    # and the blend fit; it trains until the deadline (the blend's seconds before the limit), and nothing after it
    cv = by(plan := make_plan(profile(False), SLOW, runs + blend / 2, "best"), "cv")
    es = cv["auto-es"]
    assert cv["auto-base"].chosen and es.chosen and es.part_seconds > 0 and es.part_seconds < es.seconds
    assert es.why.startswith("only part fits:") and "(and the final blend)" in es.why
    assert plan.seconds <= runs + blend / 2 and by(plan, "submit")[BLEND].chosen
    # one model: its part is the whole stage; early stopping is skipped and said so
    one = profile(False, models=("fusion",))
    full1 = make_plan(one, SLOW, 3600, "best")
    runs1 = sum(s.seconds for s in full1.stages[: [s.name for s in full1.stages].index("auto-pseudo")])
    cv = by(plan := make_plan(one, SLOW, runs1 + submit_seconds(one, 2) / 2, "best"), "cv")
    assert cv["auto-base"].chosen and not cv["auto-es"].chosen and cv["auto-es"].part_seconds == 0
    assert cv["auto-es"].why.startswith("would not fit:") and "needed with the final blend" in cv["auto-es"].why
    # on shifted test rows the final blend leaves the base recipe out: early stopping's own submission is the final one,
    # so early stopping needs no time for a blend
    shifted = make_plan(profile(True), SLOW, runs + blend / 2, "best")
    assert by(shifted, "cv")["auto-es"].chosen and by(shifted, "submit")[BLEND].seconds == 0
    # the two and their blend fit: the stages before the blend must end its seconds before the deadline
    plan = make_plan(profile(False), SLOW, runs + blend + 1, "best")
    final = plan.stages[-1]
    assert final.name == BLEND and final.chosen and final.seconds == pytest.approx(blend)
    own = submit_seconds(profile(False), 3)  # a cv stage also leaves its own submission's seconds
    assert plan.stages[0].kind == "cv" and plan.stages[1].kind == "submit"
    assert auto_run.stage_deadline(plan, plan.stages[0], 1000.0, 2.0) == pytest.approx(1000.0 - 2 * blend - 2 * own)
    assert auto_run.stage_deadline(plan, plan.stages[1], 1000.0, 2.0) == pytest.approx(1000.0 - 2 * blend)
    assert auto_run.stage_deadline(plan, final, 1000.0, 2.0) == 1000.0
    nothing = make_plan(profile(False), SLOW, 1.0, "best")  # no final blend chosen
    assert auto_run.stage_deadline(nothing, plan.stages[0], 1000.0, 2.0) == pytest.approx(1000.0 - 2 * own)
    assert auto_run.stage_deadline(nothing, plan.stages[1], 1000.0, 2.0) == 1000.0


def test_a_pseudo_round_is_priced_by_the_rows_its_written_source_labels():
    p = profile(True)
    assumed = make_plan(p, SPEEDS, 3600, "best")
    cv = by(assumed, "cv")
    assert "~80% of the test rows assumed" in cv["auto-pseudo"].why  # before auto-es's submission is written
    rows = {"auto-es": 600.0, "auto-pseudo": 6000.0}  # written: 10 % of the test rows, then all of them
    measured = by(make_plan(p, SPEEDS, 3600, "best", pseudo_rows=rows), "cv")
    assert "600 pseudo-labelled rows per fold" in measured["auto-pseudo"].why
    training = lambda s: s.seconds - STAGE_OVERHEAD_S  # noqa: E731  (fusion's units set the stage: x rows)
    fold_rows = p.n_train * (p.folds - 1) / p.folds  # 19,200
    assert training(measured["auto-pseudo"]) / training(cv["auto-pseudo"]) == pytest.approx(
        (fold_rows + 600) / (fold_rows + 0.8 * p.n_test)
    )
    assert training(measured["auto-pseudo2"]) / training(cv["auto-pseudo2"]) == pytest.approx(
        (fold_rows + 6000) / (fold_rows + 0.8 * p.n_test)
    )
    # time for the assumed plan's stages up to the second round and the final blend of the two rounds: priced by its
    # measured rows, the second round no longer fits
    upto = [s.name for s in assumed.stages].index("auto-pseudo3")
    limit = sum(s.seconds for s in assumed.stages[:upto]) + submit_seconds(p, 6) + 1
    assert by(make_plan(p, SPEEDS, limit, "best"), "cv")["auto-pseudo2"].chosen
    tight = make_plan(p, SPEEDS, limit, "best", pseudo_rows={"auto-pseudo": 6000.0})
    second = by(tight, "cv")["auto-pseudo2"]
    assert second.why.startswith("only part fits:") and "6000 pseudo-labelled" in second.why  # no longer all of it
    assert second.part_seconds > 0 and not by(tight, "cv")["auto-pseudo3"].chosen


def test_fast_is_the_base_recipe_and_best_unshifted_skips_the_pseudo_round():
    fast = make_plan(profile(True), SPEEDS, 3600, "fast")
    assert [s.name for s in fast.chosen] == ["auto-base", "auto-base"]  # its cv run and its submission
    assert "preset fast" in by(fast, "cv")["auto-es"].why
    best = make_plan(profile(False), SPEEDS, 3600, "best")
    cv = by(best, "cv")
    assert cv["auto-base"].chosen and cv["auto-es"].chosen and not cv["auto-pseudo"].chosen
    assert "not shifted" in cv["auto-pseudo"].why and not cv["auto-pseudo2"].chosen
    assert cv["auto-es"].overrides == {"early_stop": True}  # random erasing only on shifted test rows
    with pytest.raises(UserError, match="fix:"):
        make_plan(profile(False), SPEEDS, 60, "fastest")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("1h", 3600), ("600", 600), (45, 45)])
def test_time_limit_parses(text, seconds):
    assert parse_duration(text, "--time-limit") == seconds


@pytest.mark.parametrize("text", ["0", "-5m", "10x", "", "1d"])
def test_bad_time_limit_is_one_error_line(text, capsys):
    assert main(["auto", f"--time-limit={text}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --time-limit") and "fix:" in err and err.count("\n") == 1


# --- the deadline in cv, at unit boundaries ------------------------------------------------------------------


class FakeExecutor(LocalExecutor):
    """Trains nothing; each batch moves the clock on by 10 s."""

    def __init__(self, clock):
        self.batches, self.clock = [], clock

    def execute(self, job, todo, quiet):
        self.batches.append(list(todo))
        self.clock[0] += 10


def test_cv_claims_no_unit_batch_that_would_end_after_its_deadline(tmp_path, monkeypatch):
    from competition.train import cv as cv_module
    from competition.train.unit import CVJob

    clock = [1000.0]
    monkeypatch.setattr(cv_module.time, "time", lambda: clock[0])
    cfg, _ = resolve_config(None, {"workers": 2, "device": "cpu"}, "image")
    job = CVJob(None, None, cfg, tmp_path / "run", "cpu")
    (tmp_path / "run").mkdir()
    todo = [("image", k) for k in range(5)]
    # priced at 5 s a batch: at 1010 the next (measured: 10 s) would end at 1020 > 1015, so it is not claimed
    ex = FakeExecutor(clock)
    with pytest.raises(DeadlineReached) as e:
        train_claimed(job, todo, ex, True, deadline=1015.0, batch_seconds=5.0)
    assert [len(b) for b in ex.batches] == [2] and e.value.left == 3
    # priced right: two batches of two workers end by 1020, the third would not
    clock[0], ex = 1000.0, FakeExecutor(clock)
    with pytest.raises(DeadlineReached) as e:
        train_claimed(job, todo, ex, True, deadline=1025.0, batch_seconds=10.0)
    assert [len(b) for b in ex.batches] == [2, 2] and e.value.left == 1


# --- the command on a tiny copy ------------------------------------------------------------------------------

TINY = {"epochs": 1, "folds": 2, "max_epochs": 2, "device": "cpu", "workers": 1}
FAKE = {"image": 2e-4}  # generous: a 240-row unit is priced ~0.1 s


def tiny_auto(data, tmp_path, limit, preset="best", speeds=FAKE, **kw):
    import competition

    return competition.auto(
        data, limit, preset, tmp_path / "w", tmp_path / "subs", overrides=TINY, models=["image"], speeds=speeds, **kw
    )


def test_the_budget_is_kept_and_the_manifest_names_every_stage(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(auto_run, "MIN_PACE", 1.0)  # the fake figures stand: the remade plans skip the same stages
    t0 = time.time()
    # the base stage is priced to fit, early stopping is priced (fake figures) far beyond the limit
    # (base: 2 units of 120 rows x 1 epoch x 0.05 s ~ 14 s + overheads ~ 22 s; early stopping twice the epochs)
    res = tiny_auto(tiny_data, tmp_path, 40, speeds={"image": 0.05})
    elapsed = time.time() - t0
    assert elapsed <= 40 * 1.05
    status = {(o.stage.kind, o.stage.name): o.status for o in res.outcomes}
    assert status[("cv", "auto-base")] == "done" and status[("submit", "auto-base")] == "done"
    assert status[("cv", "auto-es")] == "skipped" and "would not fit" in res.plan.stages[2].why
    assert res.path == tmp_path / "subs" / "auto.csv" and res.path.is_file()
    manifest = json.loads((tmp_path / "subs" / "auto.json").read_text())
    auto = manifest["auto"]
    assert {(s["kind"], s["name"]) for s in auto["stages"]} == {(s.kind, s.name) for s in res.plan.stages}
    assert all(s["why"] and s["status"] for s in auto["stages"])
    assert auto["runs_used"] == ["auto-base"] and auto["source_submission"] == "auto-base"
    assert manifest["estimated_test_macro_f1"] == res.estimated_test_macro_f1 is not None
    assert "out-of-fold" in auto["estimate"] and "re-weighted to the test rows" in auto["estimate"]
    # the estimate: the written out-of-fold rows (kept in the probabilities file), re-weighted to test-like rows
    detail = auto["estimate_details"]
    assert detail["weights_from"] == "auto-base/image" and 0 < detail["effective_rows"] <= 240
    # ... averaged with what the calibrated fold models expect of the written labels
    low, high = detail["estimate_range"]
    assert sorted([detail["reweighted_oof_macro_f1"], detail["confidence_macro_f1"]]) == [low, high]
    assert abs(res.estimated_test_macro_f1 - (low + high) / 2) < 1e-12 and 0 <= low <= high <= 1
    with np.load(tmp_path / "subs" / "auto.probs.npz") as f:
        assert f["oof_probs"].shape == (240, 10) and f["probs"].shape[1] == 10
    assert abs(detail["plain_oof_macro_f1"] - auto_run.honest_oof(manifest)) < 1e-9
    assert (tmp_path / "w" / "auto-base" / "summary.json").is_file()  # an ordinary run: runs/report/submit read it


def test_a_rerun_resumes_after_an_interrupted_stage(tiny_data, tmp_path, monkeypatch):
    shifted = auto_run.measure_profile

    def as_shifted(*a, **kw):  # the tiny cut is not shifted: make the plan take the shifted path
        import dataclasses

        return dataclasses.replace(shifted(*a, **kw), audio_auc=0.9)

    monkeypatch.setattr(auto_run, "measure_profile", as_shifted)
    trained = []
    real = LocalExecutor.execute

    def interrupt_in_pseudo(self, job, todo, quiet):
        if job.run_dir.name == "auto-pseudo" and trained.count("auto-pseudo") >= 1:
            raise KeyboardInterrupt
        trained.extend(job.run_dir.name for _ in todo)
        real(self, job, todo, quiet)

    monkeypatch.setattr(LocalExecutor, "execute", interrupt_in_pseudo)
    with pytest.raises(KeyboardInterrupt):
        tiny_auto(tiny_data, tmp_path, 300)
    assert trained == ["auto-base"] * 2 + ["auto-es"] * 2 + ["auto-pseudo"]  # one worker: one unit a batch
    # Ctrl-C kept every finished stage: auto.csv is the early-stopping submission so far
    first = json.loads((tmp_path / "subs" / "auto.json").read_text())["auto"]
    assert first["source_submission"] == "auto-es"
    trained.clear()
    res = tiny_auto(tiny_data, tmp_path, 300)
    # the unit left, then the further rounds
    later = [f"auto-pseudo{r}" for r in range(2, ROUNDS + 1)]
    assert trained == ["auto-pseudo"] + [r for r in later for _ in range(2)]
    status = {(o.stage.kind, o.stage.name): (o.status, o.note) for o in res.outcomes}
    assert status[("cv", "auto-es")][0] == "resumed" and status[("submit", "auto-es")][0] == "resumed"
    assert status[("cv", "auto-pseudo")] == ("done", "resumed: 1 unit(s) were finished earlier")
    assert status[("cv", "auto-pseudo2")][0] == "done"
    # with pseudo-label rounds the final blend blends the rounds only, not the runs before them
    assert status[("submit", BLEND)] == ("done", "without auto-base, auto-es (the runs before the pseudo-label rounds)")
    manifest = json.loads(res.path.with_suffix(".json").read_text())
    auto = manifest["auto"]
    assert auto["source_submission"] == BLEND and auto["runs_used"] == ["auto-pseudo", *later]
    assert manifest["blend"] == "equal"  # across rounds: equal weights
    assert "pseudo-labelled" in auto["estimate"]


def test_a_stage_stopped_at_a_unit_boundary_submits_the_models_it_finished(tiny_data, tmp_path, monkeypatch):
    import competition

    real = auto_run.run_cv

    def stopped_after_image(cfg, comp, workdir, name, *a):  # the image folds trained, then the deadline
        real(cfg, comp, workdir, name, *a)
        for f in (workdir / name / "audio").glob("fold1*"):
            f.unlink()
        raise DeadlineReached(1)

    def run(**kw):
        return competition.auto(tiny_data, 300, "fast", tmp_path / "w", tmp_path / "subs", overrides=TINY,
                                models=["image", "audio"], speeds={"image": 2e-4, "audio": 2e-4}, **kw)  # fmt: skip

    monkeypatch.setattr(auto_run, "run_cv", stopped_after_image)
    res = run()
    status = {(o.stage.kind, o.stage.name): (o.status, o.note) for o in res.outcomes}
    assert status[("cv", "auto-base")][0] == "stopped"
    assert status[("submit", "auto-base")] == (
        "done", "auto-base: image only (stopped at a unit boundary before its other models)"
    )  # fmt: skip
    manifest = json.loads(res.path.with_suffix(".json").read_text())
    assert manifest["auto"]["source_submission"] == "auto-base" and manifest["models"] == ["auto-base/image"]
    assert res.estimated_test_macro_f1 is not None
    # a rerun trains the unit left and writes the submission again, of both models
    monkeypatch.setattr(auto_run, "run_cv", real)
    res = run()
    status = {(o.stage.kind, o.stage.name): (o.status, o.note) for o in res.outcomes}
    assert status[("cv", "auto-base")] == ("done", "resumed: 3 unit(s) were finished earlier")
    assert status[("submit", "auto-base")] == ("done", "")
    manifest = json.loads(res.path.with_suffix(".json").read_text())
    assert sorted(manifest["models"] + manifest["left_out"]) == ["auto-base/audio", "auto-base/image"]
    # and a third finds it written
    res = run()
    assert {(o.stage.kind, o.stage.name): o.status for o in res.outcomes}[("submit", "auto-base")] == "resumed"


# --- pacing: a stage slower than planned re-prices the later ones --------------------------------------------


def test_a_later_stage_priced_at_the_measured_pace_is_not_started(tmp_path):
    from competition.pipeline.plan import Stage

    stage = Stage("auto-es", "cv", "why", True, 10.0, {"early_stop": True}, unit_seconds=2.0)
    cfg, _ = resolve_config(None, {"folds": 2, "device": "cpu"}, "image")
    deadline = time.time() + 30
    o = auto_run._run_stage(stage, cfg, None, tmp_path / "w", tmp_path, None, deadline, set(), True, pace=5.0)
    assert o.status == "not started" and "would not finish in time: ~50s" in o.note


def test_a_part_stage_starts_when_its_first_models_folds_fit(tmp_path, monkeypatch):
    from competition.pipeline.plan import Stage

    started = []
    monkeypatch.setattr(auto_run, "run_cv", lambda cfg, comp, workdir, name, *a: started.append((name, a[-2])))
    cfg, _ = resolve_config(None, {"folds": 2, "device": "cpu"}, "image")
    part = Stage("auto-es", "cv", "why", True, 100.0, {"early_stop": True}, unit_seconds=2.0, part_seconds=20.0)
    deadline = time.time() + 50  # the whole stage (~200 s at pace 2) would not end by then, its part (~40 s) does
    o = auto_run._run_stage(part, cfg, None, tmp_path / "w", tmp_path, None, deadline, set(), True, pace=2.0)
    assert o.status == "done" and started == [("auto-es", deadline)]  # trained until the deadline
    o = auto_run._run_stage(part, cfg, None, tmp_path / "w", tmp_path, None, time.time() + 30, set(), True, pace=2.0)
    assert o.status == "not started" and "~40s" in o.note and len(started) == 1


def test_each_cv_stage_sets_the_pace_of_the_next(tiny_data, tmp_path, monkeypatch):
    paces = []

    def fake_stage(stage, pace):
        paces.append((stage.kind, stage.name, pace))
        if stage.kind == "cv" and stage.chosen:  # every cv stage takes 3x its plan
            return auto_run.StageOutcome(stage, "done", "", 3 * stage.seconds, stage.seconds)
        return auto_run.StageOutcome(stage, "skipped")

    monkeypatch.setattr(auto_run, "_run_stage", lambda st, *a: fake_stage(st, pace=a[8]))
    tiny_auto(tiny_data, tmp_path, 300, preset="best")
    assert paces[0] == ("cv", "auto-base", 1.0) and paces[1] == ("submit", "auto-base", 3.0)
    assert all(p == 3.0 for _, _, p in paces[1:])


def test_a_stage_skipped_for_time_joins_when_the_stages_before_it_ran_faster(tiny_data, tmp_path, monkeypatch):
    ran = []

    def fake_stage(stage, *a):
        ran.append((stage.kind, stage.name))
        finished = a[6]
        if not stage.chosen:
            return auto_run.StageOutcome(stage, "skipped", stage.why)
        finished.add(f"{stage.kind}:{stage.name}")
        if stage.kind == "cv":  # every cv stage takes a quarter of its plan (the pace is held at 0.5 at least)
            return auto_run.StageOutcome(stage, "done", "", stage.seconds / 4, stage.seconds)
        return auto_run.StageOutcome(stage, "done")

    monkeypatch.setattr(auto_run, "_run_stage", fake_stage)
    written = {}  # nothing is trained or written: what auto.json would say
    monkeypatch.setattr(auto_run, "_write_auto", lambda plan, *a: written.update(plan=plan, replans=a[-1]))
    monkeypatch.setattr(auto_run, "_summary_lines", lambda r: [])
    speeds = {"image": 0.05}  # base ~22 s, early stopping ~39 s, its submission ~6 s: 40 s fit only the base
    first = make_plan(auto_run.measure_profile(*_profile_args(tiny_data, tmp_path)), speeds, 40 - 2, "best")
    assert by(first, "cv")["auto-base"].chosen and not by(first, "cv")["auto-es"].chosen
    tiny_auto(tiny_data, tmp_path, 40, speeds=speeds)
    assert ("cv", "auto-es") in ran and by(written["plan"], "cv")["auto-es"].chosen
    assert "cv auto-es now fits" in written["replans"][0] and "0.50x the estimates" in written["replans"][0]


def _profile_args(data, tmp_path):
    from competition.data.load import load_competition

    cfg, _ = resolve_config(None, TINY, "image")
    return load_competition(data), cfg, tmp_path / "probe-w", 1


def test_the_final_blend_blends_the_runs_that_finished(tmp_path, monkeypatch):
    from competition.pipeline.plan import Stage

    blended = []

    class FakeSubmission:
        def write(self, out, name, overwrite=False):
            blended.append((name, overwrite))

    monkeypatch.setattr(auto_run, "load_runs", lambda workdir, runs, comp, _: runs)
    monkeypatch.setattr(
        auto_run, "make_submission", lambda runs, comp, blend: blended.append((runs, blend)) or FakeSubmission()
    )
    # planned as a round's own submission (no blend: 0 s); the round did not finish, so it blends the two runs before
    stage = Stage(BLEND, "submit", "why", True, 0.0, runs=("auto-base", "auto-es", "auto-pseudo"))
    base, comp = SimpleNamespace(models=("fusion", "image", "audio")), SimpleNamespace(n_train=100_000)
    finished = {"cv:auto-base", "cv:auto-es"}
    two = blend_seconds(100_000, 6)  # two runs of three models: priced as what it blends, not as planned
    o = auto_run._run_stage(stage, base, comp, tmp_path, tmp_path, None, time.time() + two - 5, finished, True)
    assert o.status == "not started" and o.note.startswith("would not finish in time") and not blended
    o = auto_run._run_stage(stage, base, comp, tmp_path, tmp_path, None, time.time() + two + 5, finished, True)
    assert o.status == "done" and o.note == "without auto-pseudo (not finished)"
    assert blended == [(["auto-base", "auto-es"], "auto"), (BLEND, True)]  # no round: submit's own choice
    # one run finished: its own submission is the final one, no blend of one
    o = auto_run._run_stage(stage, base, comp, tmp_path, tmp_path, None, time.time() + 60, {"cv:auto-base"}, True)
    assert o.status == "not started" and "auto-es, auto-pseudo" in o.note


def test_the_final_blend_takes_a_stopped_round_with_the_models_it_finished(tmp_path, monkeypatch):
    from competition.pipeline.plan import Stage

    blended = []

    class FakeSubmission:
        def write(self, out, name, overwrite=False):
            blended.append(name)

    three = ["fusion", "image", "audio"]
    monkeypatch.setattr(auto_run, "complete_models", lambda d: ["fusion"] if d.name == "auto-pseudo2" else three)
    monkeypatch.setattr(auto_run, "load_runs", lambda workdir, runs, comp, models: (runs, models))
    monkeypatch.setattr(
        auto_run, "make_submission", lambda loaded, comp, blend: blended.append((loaded, blend)) or FakeSubmission()
    )
    stage = Stage(BLEND, "submit", "why", True, 1.0, runs=("auto-base", "auto-es", "auto-pseudo", "auto-pseudo2"))
    base, comp = SimpleNamespace(models=tuple(three)), SimpleNamespace(n_train=1000)
    finished = {"cv:auto-base", "cv:auto-es", "cv:auto-pseudo", "submit:auto-pseudo", "partial:auto-pseudo2"}
    sources = {"auto-pseudo": "auto-es", "auto-pseudo2": "auto-pseudo"}
    o = auto_run._run_stage(
        stage, base, comp, tmp_path, tmp_path, None, time.time() + 60, finished, True, 1.0, sources, True
    )
    assert o.status == "done" and o.note.startswith("auto-pseudo2: fusion only (stopped at a unit boundary")
    runs, models = blended[0][0]
    assert runs == ["auto-pseudo", "auto-pseudo2"] and blended[0][1] == "equal"
    assert models == ["auto-pseudo/fusion", "auto-pseudo/image", "auto-pseudo/audio", "auto-pseudo2/fusion"]
    assert "partial:auto-blend" in finished and auto_run.written(finished, BLEND)
    # a stopped run is no source: the round after it waits for its full submission
    nxt = Stage("auto-pseudo3", "cv", "why", True, 1.0, pseudo_from="auto-pseudo2")
    o = auto_run._run_stage(nxt, base, comp, tmp_path, tmp_path, None, time.time() + 60, finished, True)
    assert o.status == "not started" and "auto-pseudo2" in o.note


def test_a_rounds_own_submission_keeps_submits_choice_the_blend_of_rounds_takes_equal_weights(tmp_path, monkeypatch):
    from competition.pipeline.plan import Stage

    blends = []

    class FakeSubmission:
        def write(self, out, name, overwrite=False):
            pass

    monkeypatch.setattr(auto_run, "load_runs", lambda workdir, runs, comp, models: runs)
    monkeypatch.setattr(auto_run, "make_submission", lambda runs, comp, blend: blends.append(blend) or FakeSubmission())
    base, comp = SimpleNamespace(models=("fusion", "image", "audio")), SimpleNamespace(n_train=1000)
    finished = {"cv:auto-es", "cv:auto-pseudo", "cv:auto-pseudo2"}
    sources = {"auto-pseudo": "auto-es", "auto-pseudo2": "auto-pseudo"}
    for stage in (
        Stage("auto-pseudo", "submit", "why", True, 1.0, runs=("auto-pseudo",)),
        Stage(BLEND, "submit", "why", True, 1.0, runs=("auto-es", "auto-pseudo", "auto-pseudo2")),
    ):
        auto_run._run_stage(stage, base, comp, tmp_path, tmp_path, None, time.time() + 60, finished, True, 1.0, sources)
    assert blends == ["auto", "equal"]


def test_with_pseudo_rounds_the_final_blend_blends_the_rounds_only():
    from competition.pipeline.plan import blend_runs

    sources = {"auto-pseudo": "auto-es"}
    for shifted in (True, False):
        assert blend_runs(["auto-base", "auto-es", "auto-pseudo"], sources, shifted) == ["auto-pseudo"]
        two = {"auto-pseudo": "auto-es", "auto-pseudo2": "auto-pseudo"}
        rounds = ["auto-pseudo", "auto-pseudo2"]
        assert blend_runs(["auto-base", "auto-es", *rounds], two, shifted) == rounds
        assert blend_runs(["auto-base"], sources, shifted) == ["auto-base"]
    # no round finished: on test rows like the training rows the runs blended, on shifted ones the base recipe left out
    assert blend_runs(["auto-base", "auto-es"], sources, False) == ["auto-base", "auto-es"]
    assert blend_runs(["auto-base", "auto-es"], sources, True) == ["auto-es"]


def test_one_round_finished_the_blend_is_skipped_for_its_own_submission(tmp_path, monkeypatch):
    from competition.pipeline.plan import Stage

    monkeypatch.setattr(auto_run, "make_submission", lambda *a: pytest.fail("no blend of one run"))
    stage = Stage(BLEND, "submit", "why", True, 1.0, runs=("auto-base", "auto-es", "auto-pseudo"))
    finished = {"cv:auto-base", "cv:auto-es", "cv:auto-pseudo", "submit:auto-pseudo"}
    sources = {"auto-pseudo": "auto-es"}
    o = auto_run._run_stage(stage, None, None, tmp_path, tmp_path, None, time.time() + 60, finished, True, 1.0, sources)
    assert o.status == "skipped" and o.note.startswith("auto-pseudo's own submission is the final one")
