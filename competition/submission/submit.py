"""Submit: blend the models of finished cv runs (optionally with full-data refits for the test rows) into one
``Submission``: the shift check, the blend candidates scored nested out of fold, duplicate-aware consensus after
the blend, and ``Submission.write``, the validated CSV with its probabilities and manifest (``files.py``)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table

from competition.data.load import Competition
from competition.ensemble.blend import (
    BLENDS,
    SPACES,
    Agreement,
    BlendResult,
    agreement_shift,
    blend_models,
    candidate_fold_probs,
    shifted_blocks,
)
from competition.ensemble.consensus import ConsensusReport, decide_consensus, joint_groups
from competition.ensemble.decisions import Decisions, decide
from competition.ensemble.priors import fold_members
from competition.ensemble.stack import MIN_FOLDS
from competition.store.loading import Run
from competition.submission.files import check_replaceable, write_submission
from competition.train.refit import refit_run
from competition.utils.console import console
from competition.utils.errors import UserError
from competition.utils.paths import default_submissions
from competition.utils.validation import check_name

AVERAGES = ("auto", *SPACES)
CHOICES = ("auto", *BLENDS)
CONSENSUS = ("auto", "on", "off")
OFFSETS = ("auto", "on", "off")


@dataclass
class Submission:
    """A blended submission, not yet written: the chosen blend's test probabilities and everything its manifest
    records. ``write`` makes the files."""

    comp: Competition
    runs: list[Run]
    blend: BlendResult  # every candidate; ``blend.chosen`` the one written
    consensus: ConsensusReport
    decisions: Decisions  # label-shift correction and macro-F1 offsets, applied before consensus
    agreement: list[Agreement]
    left_out: list[str]  # models left out of the blend by the shift check
    sources: dict[str, str]  # model -> where its test predictions come from (fold models or refits)
    seconds: dict[str, float]
    rounds: int
    full: bool

    @property
    def name(self) -> str:
        """The default file name: ``<runs>-<blend>[+consensus]``."""
        runs = "+".join(r.name for r in self.runs)
        return f"{runs}-{self.blend.chosen.name}" + ("+consensus" if self.consensus.applied else "")

    @property
    def test_probs(self) -> np.ndarray:
        """(M, 10) probabilities of the test rows, in the sample submission's row order."""
        return self.blend.test_probs

    @property
    def labels(self) -> np.ndarray:
        """(M,) the predicted digit of each test row."""
        return self.test_probs.argmax(axis=1)

    @property
    def oof_probs(self) -> np.ndarray:
        """(N, 10) honest out-of-fold probabilities of what is written (nested where fitted; after the decision
        steps and consensus where applied): ``oof_macro_f1`` is their macro-F1."""
        if self.consensus.applied:
            return self.consensus.oof_probs
        return self.decisions.oof_probs if self.decisions.changed else self.blend.chosen.oof_probs

    @property
    def oof_macro_f1(self) -> float:
        """The honest out-of-fold macro-F1 of what is written (nested where the blend was fitted)."""
        if self.consensus.applied:
            return self.consensus.oof_after
        return self.decisions.oof_f1 if self.decisions.changed else self.blend.chosen.honest_f1

    @property
    def scores(self) -> pd.DataFrame:
        """Out-of-fold scores of every model and blend candidate (nested where fitted)."""
        rows = [
            {"candidate": c.name, "kind": "model", "average": "-", "macro_f1": c.macro_f1, "accuracy": c.accuracy}
            for c in self.blend.singles
        ]
        for c in self.blend.blends:
            rows.append(
                {"candidate": c.name, "kind": "blend", "average": c.space, "macro_f1": c.macro_f1,
                 "accuracy": c.accuracy, "nested_macro_f1": c.nested_f1, "nested_accuracy": c.nested_accuracy,
                 "written": c is self.blend.chosen}
            )  # fmt: skip
        return pd.DataFrame(rows)

    def write(self, out: str | Path | None = None, name: str | None = None, overwrite: bool = False) -> Path:
        """Write ``<out>/<name>.csv`` (validated), ``.probs.npz`` and ``.json``; returns the CSV's path. A submission
        of the same name made from other runs is replaced only with ``overwrite``."""
        out = default_submissions() if out is None else Path(out)
        name = self.name if name is None else check_name(name, "--name", "submission", plus=True).removesuffix(".csv")
        if not overwrite:
            check_replaceable(out, name, self.runs)
        extra = {
            "consensus": self.consensus.manifest(),
            "decisions": self.decisions.manifest(),
            "test_predictions": self.sources,
            "seconds": self.seconds,
        }
        return write_submission(
            out,
            name,
            self.comp,
            self.blend,
            self.runs,
            self.rounds,
            self.agreement,
            self.left_out,
            extra,
            self.oof_probs,
        )


def make_submission(
    runs: list[Run], comp: Competition, average: str = "auto", blend: str = "auto", consensus: str = "auto",
    full: bool = False, seeds: int = 3, keep_shifted: bool = False, rounds: int = 25,
    label_shift: str = "off", offsets: str = "auto",
) -> Submission:  # fmt: skip
    """Blend every model of ``runs`` (loaded with ``store.runs.load_runs``) into a ``Submission``."""
    if rounds < 1:
        raise UserError(f"--rounds {rounds}: must be >= 1; fix the value")
    oof = {f"{r.name}/{m}": r.oof[m] for r in runs for m in r.oof}
    test = {f"{r.name}/{m}": r.test[m] for r in runs for m in r.test}
    spaces = SPACES if average == "auto" else (average,)
    blends = BLENDS if blend == "auto" else (blend,)
    if blend == "stack" and len(np.unique(runs[0].fold_of)) < MIN_FOLDS:
        raise UserError(
            f"--blend stack: the runs have {len(np.unique(runs[0].fold_of))} folds; the stack's nested score needs "
            f"{MIN_FOLDS} or more; fix: cv with --folds 3 or more, or pass --blend auto"
        )
    names = [r.name for r in runs]
    seconds: dict[str, float] = {}
    sources = {f"{r.name}/{m}": f"fold models ({len(r.test[m])})" for r in runs for m in r.test}
    if full:
        t0 = time.perf_counter()
        for r in runs:
            refits = refit_run(r.dir, r.meta, comp, list(r.oof), seeds)
            for m, logits in refits.items():
                test[f"{r.name}/{m}"] = logits
                sources[f"{r.name}/{m}"] = f"full-data refits ({seeds} seeds: {r.name}/{m}/refit*.npz)"
        seconds["refits"] = round(time.perf_counter() - t0, 1)
    agreement = agreement_shift(oof, test)
    shifted = [f"{a.a} / {a.b} {a.oof:.0%} -> {a.test:.0%}" for a in agreement if a.shifted]
    if shifted:
        console.print(
            "[yellow]warning:[/] the test rows are not like the training rows: pairs of models agree far less on "
            f"them than out of fold ({', '.join(shifted)}). Out-of-fold scores and fitted weights cannot see this; "
            "prefer models trained for it (--config robust)"
        )
    left_out = [] if keep_shifted else shifted_blocks(agreement, {m: _modalities(m) for m in oof})
    if left_out:
        oof = {m: v for m, v in oof.items() if m not in left_out}
        test = {m: v for m, v in test.items() if m not in left_out}
        console.print(
            f"[yellow]leaving {', '.join(left_out)} out of the blend:[/] their test predictions part from every "
            "model outside their modality group (or from every other model) while those agree as out of fold, "
            "so their out-of-fold weight would overrate them (--keep-shifted keeps them)"
        )
    console.print(f"blending {len(oof)} models of run(s) {', '.join(names)} on {comp.n_train} out-of-fold rows")
    t0 = time.perf_counter()
    result = blend_models(oof, test, comp.y, runs[0].fold_of, spaces, blends, rounds)
    seconds["blend"] = round(time.perf_counter() - t0, 1)
    for stack in (x for x in result.blends if x.name == "stack"):
        seconds["stack"] = stack.details["seconds"]  # part of the blend's time
    c = result.chosen
    t0 = time.perf_counter()
    members = None if label_shift == "off" else fold_members(oof, test, comp.y, runs[0].fold_of, refits=full)
    offsets = _offsets_mode(offsets, bool(shifted))
    fold_probs = None if label_shift == "off" else candidate_fold_probs({m: test[m] for m in result.models}, c)
    decisions = decide(
        c.oof_probs, result.test_probs, comp.y, runs[0].fold_of, label_shift, offsets, members, fold_probs
    )
    seconds["decisions"] = round(time.perf_counter() - t0, 1)
    for line in decisions.lines:
        console.print(line)
    if decisions.changed:
        result = dataclasses.replace(result, test_probs=decisions.test_probs)
    t0 = time.perf_counter()
    off = consensus == "off"  # the grouping reads every row: not for a step that is off
    groups = None if off else joint_groups([comp.image, comp.audio], [comp.test_image, comp.test_audio])
    report = decide_consensus(consensus, groups, comp.y, runs[0].fold_of, decisions.oof_probs, result.test_probs)
    seconds["consensus"] = round(time.perf_counter() - t0, 1)
    console.print(report.line)
    if report.applied:
        result = dataclasses.replace(result, test_probs=report.test.probs)
    sources = {m: sources[m] for m in result.models}
    return Submission(comp, runs, result, report, decisions, agreement, left_out, sources, seconds, rounds, full)


def _offsets_mode(offsets: str, shifted: bool) -> str:
    """The mode the offset step runs in: ``auto`` stands down where the agreement check found the test rows unlike
    the training rows. Offsets are fitted to the out-of-fold rows' confusions, which such test rows do not share: on
    a new-speaker testbed with noisier test rows, offsets with a nested gain of +0.0022 cost 0.0195 held-out
    macro-F1 (bench/results/label_shift.md). ``on`` fits them whatever the test rows."""
    if offsets not in OFFSETS:
        raise UserError(f"--offsets {offsets!r}: unknown; fix: pass one of {', '.join(OFFSETS)}")
    if offsets == "auto" and shifted:
        console.print(
            "macro-F1 offsets off: the test rows are not like the training rows (the agreement check), so offsets "
            "fitted on the out-of-fold rows' confusions would not carry over to them (--offsets on fits them anyway)"
        )
        return "off"
    return "off" if offsets == "off" else "auto"


def _modalities(key: str) -> tuple[str, ...]:
    """The modalities a blended model (``run/model``) reads, e.g. ``("audio",)``."""
    from competition.models import model_modalities

    return model_modalities(key.rpartition("/")[2])


def submit_tables(result: BlendResult, consensus: ConsensusReport | None = None) -> tuple[Table, Table]:
    """The out-of-fold scores of every model and blend (and of the chosen one after consensus), and each
    blend's weights (the written one marked; the stack's: each model's share of its coefficients)."""
    scores = Table(title="out-of-fold scores (nested: blend weights or stacker fit without the scored fold)")
    for col in ("model / blend", "average", "OOF F1", "OOF acc", "nested F1", "nested acc"):
        scores.add_column(col, justify="left" if col in ("model / blend", "average") else "right")
    for c in result.singles:
        scores.add_row(c.name, "-", f"{c.macro_f1:.4f}", f"{c.accuracy:.4f}", "", "")
    written = " [bold green](written)[/]"
    applied = consensus is not None and consensus.applied
    for c in result.blends:
        nested = ["", ""] if c.nested_f1 is None else [f"{c.nested_f1:.4f}", f"{c.nested_accuracy:.4f}"]
        name = f"{c.name} blend" + (written if c is result.chosen and not applied else "")
        scores.add_row(name, c.space, f"{c.macro_f1:.4f}", f"{c.accuracy:.4f}", *nested)
    if consensus is not None and consensus.oof_after is not None:
        c = result.chosen
        f1 = [f"{consensus.oof_after:.4f}", ""]
        name = f"{c.name} blend + consensus" + (written if applied else "")
        scores.add_row(name, c.space, *(["", "", *f1] if c.nested_f1 is not None else [*f1, "", ""]))
    weights = Table(title="blend weights")
    weights.add_column("model")
    for c in result.blends:
        head = f"{c.name} {c.space}"
        weights.add_column(f"[bold green]{head} (written)[/]" if c is result.chosen else head, justify="right")
    for i, m in enumerate(result.models):
        weights.add_row(m, *(f"{c.weights[i]:.2f}" for c in result.blends))
    return scores, weights
