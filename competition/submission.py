"""Submission: blend finished cv runs (loaded and checked for one data folder, one split and every fold by
``runs.load_runs``; optionally with full-data refits for the test rows and duplicate-aware consensus after the
blend), write the submission CSV in the sample submission's exact format with its probabilities and manifest,
validate it, and score a submission against a labelled holdout. The ``submit`` and ``score`` commands.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.table import Table
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from .artifacts import check_writable, environment, write_json, write_npz, write_text
from .blend import BLENDS, SPACES, Agreement, BlendResult, agreement_shift, blend_models, shifted_blocks
from .consensus import ConsensusReport, decide_consensus, joint_groups
from .console import console
from .data import N_CLASSES, Competition, load_competition
from .errors import UserError, plain
from .metrics import accuracy, macro_f1
from .refit import refit_run
from .runs import DEFAULT_WORKDIR, Run, latest_run, load_runs
from .stack import MIN_FOLDS

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "submissions"


# --- writing and validating the submission ---------------------------------------------------------------


def _read_str_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"{path}: file not found; fix the path")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: unreadable CSV ({str(e).strip()}); fix the file") from None


def render_submission(sample_path: Path, labels: np.ndarray) -> bytes:
    """The sample submission's bytes with its label column replaced: same header, row_id text and order,
    same line endings, the same UTF-8 byte order mark if it has one."""
    sample = _read_str_csv(sample_path)
    if len(labels) != len(sample):
        raise UserError(f"{sample_path}: {len(sample)} rows but {len(labels)} predictions; fix: pass the run's --data")
    head = sample_path.read_bytes()[:4096]
    bom = codecs.BOM_UTF8 if head.startswith(codecs.BOM_UTF8) else b""  # pandas drops it on reading: put it back
    out = sample.copy()
    out[out.columns[-1]] = np.asarray(labels).astype(np.int64).astype(str)
    return bom + out.to_csv(index=False, lineterminator="\r\n" if b"\r\n" in head else "\n").encode()


def _check_unique(ids: pd.Series, path: Path) -> None:
    dup = ids[ids.duplicated()]
    if len(dup):
        first = plain(dup.iloc[0])
        raise UserError(f"{path}: {len(dup)} duplicate row_id(s) (first {first!r}); fix: one row per row_id")


def _check_ids(ids: pd.Series, ref: pd.Series, path: Path, ref_path: Path) -> None:
    """Duplicate, missing or extra row_ids of ``ids`` against the reference ids, as one UserError."""
    _check_unique(ids, path)
    missing, extra = ref[~ref.isin(ids)], ids[~ids.isin(ref)]
    if len(missing):
        raise UserError(
            f"{path}: {len(missing)} row_id(s) of {ref_path.name} missing (first {plain(missing.iloc[0])!r}); "
            "fix: predict every row"
        )
    if len(extra):
        raise UserError(
            f"{path}: {len(extra)} row_id(s) not in {ref_path.name} (first {plain(extra.iloc[0])!r}); "
            "fix: drop those rows"
        )


def _check_labels(labels: pd.Series, ids: pd.Series, path: Path) -> np.ndarray:
    ok = labels.str.fullmatch(r"[0-9]").to_numpy()  # an integer 0-9 written plainly, as in the sample
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise UserError(
            f"{path}: {int((~ok).sum())} label(s) not an integer 0-9 (first at row_id {plain(ids.iloc[i])!r}: "
            f"{plain(labels.iloc[i])!r}); fix the labels"
        )
    return labels.astype(np.int64).to_numpy()


def read_labelled(path: Path) -> pd.DataFrame:
    """A row_id,label CSV (a submission or a holdout's labels), checked: unique ids, integer labels 0-9."""
    df = _read_str_csv(path)
    if list(df.columns) != ["row_id", "label"]:
        raise UserError(f"{path}: expected the header row_id,label, got {','.join(df.columns)}; fix the header")
    if len(df) == 0:
        raise UserError(f"{path}: no rows; fix the file")
    _check_unique(df["row_id"], path)
    return df.assign(label=_check_labels(df["label"], df["row_id"], path))


def validate_submission(path: Path, sample_path: Path) -> None:
    """The written file has the sample's header, its row_ids in its order, and integer labels 0-9."""
    sub, sample = _read_str_csv(path), _read_str_csv(sample_path)
    if list(sub.columns) != list(sample.columns):
        raise UserError(f"{path}: header {','.join(sub.columns)} is not {','.join(sample.columns)} of {sample_path}")
    _check_ids(sub[sub.columns[0]], sample[sample.columns[0]], path, sample_path)
    if not (sub[sub.columns[0]].to_numpy() == sample[sample.columns[0]].to_numpy()).all():
        raise UserError(f"{path}: row_ids are not in the order of {sample_path}; fix: keep the sample's order")
    _check_labels(sub[sub.columns[-1]], sub[sub.columns[0]], path)


def _plain_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name):
        raise UserError(f"--name {name!r}: use letters, digits and . _ + - only; fix the name")
    return name.removesuffix(".csv")


def write_submission(
    out_dir: Path, name: str, comp: Competition, result: BlendResult, runs: list[Run], rounds: int,
    agreement: list[Agreement] = (), left_out: list[str] = (), extra: dict | None = None,
) -> Path:  # fmt: skip
    """Write ``<name>.csv``, validate it (removing it if invalid), then ``<name>.probs.npz`` and ``<name>.json``."""
    sample_path = comp.root / "sample_submission.csv"
    path = out_dir / f"{name}.csv"
    write_text(path, render_submission(sample_path, result.test_probs.argmax(axis=1)).decode())
    try:
        validate_submission(path, sample_path)
    except UserError:
        path.unlink(missing_ok=True)  # never leave an invalid submission behind
        raise
    write_npz(
        out_dir / f"{name}.probs.npz",
        row_id=comp.sample_submission["row_id"].to_numpy(),
        probs=result.test_probs.astype(np.float32),
    )
    c = result.chosen

    def cand(x) -> dict:
        d = {"blend": x.name, "space": x.space, "macro_f1": x.macro_f1, "accuracy": x.accuracy}
        d["weights"] = dict(zip(result.models, np.round(x.weights, 6).tolist(), strict=True))
        if x.nested_f1 is not None:
            d |= {"nested_macro_f1": x.nested_f1, "nested_accuracy": x.nested_accuracy}
        if x.fold_weights is not None:
            d["fold_weights"] = [dict(zip(result.models, np.round(w, 6).tolist(), strict=True)) for w in x.fold_weights]
        return d | x.details

    write_json(
        out_dir / f"{name}.json",
        {
            "submission": path.name,
            "probabilities": f"{name}.probs.npz",
            "runs": [{"name": r.name, "dir": str(r.dir), "config": r.meta["config"]} for r in runs],
            "models": result.models,
            "blend": c.name,
            "average": c.space,
            "weights": dict(zip(result.models, np.round(c.weights, 6).tolist(), strict=True)),
            "oof_macro_f1": c.macro_f1,
            "oof_nested_macro_f1": c.nested_f1,
            "oof_accuracy": c.accuracy,
            "rounds": rounds,
            "agreement": [dataclasses.asdict(a) for a in agreement],
            "left_out": list(left_out),
            "candidates": [cand(x) for x in result.singles + result.blends],
            "data": str(comp.root),
            "data_fingerprint": comp.fingerprint,
            "split_fingerprint": runs[0].meta.get("split_fingerprint"),
            "environment": environment("cpu", runs[0].meta["config"].get("seed", 0)),
        }
        | (extra or {}),
    )
    return path


# --- the commands ----------------------------------------------------------------------------------------


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


def _models_flag(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [s.strip() for s in value.split(",") if s.strip()]
    if not items:
        raise UserError("--models: empty list; fix: name models, e.g. --models fusion,image or default/fusion")
    return items


def _modalities(key: str) -> tuple[str, ...]:
    """The modalities a blended model (``run/model``) reads, e.g. ``("audio",)``."""
    from .models import model_modalities

    return model_modalities(key.rpartition("/")[2])


def submit_command(args) -> int:
    """``python run.py submit``: blend the runs' models and write a validated submission."""
    if args.rounds < 1:
        raise UserError(f"--rounds {args.rounds}: must be >= 1; fix the value")
    name = _plain_name(args.name) if args.name else None
    workdir = Path(args.workdir) if args.workdir else DEFAULT_WORKDIR
    out = Path(args.out) if args.out else DEFAULT_OUT
    check_writable(out)
    if args.track:
        from .tracking import import_mlflow

        import_mlflow()
    comp = load_competition(args.data)
    runs = load_runs(workdir, args.run or [latest_run(workdir)], comp, _models_flag(args.models))
    oof = {f"{r.name}/{m}": r.oof[m] for r in runs for m in r.oof}
    test = {f"{r.name}/{m}": r.test[m] for r in runs for m in r.test}
    spaces = SPACES if args.average == "auto" else (args.average,)
    blends = BLENDS if args.blend == "auto" else (args.blend,)
    if args.blend == "stack" and len(np.unique(runs[0].fold_of)) < MIN_FOLDS:
        raise UserError(
            f"--blend stack: the runs have {len(np.unique(runs[0].fold_of))} folds; the stack's nested score needs "
            f"{MIN_FOLDS} or more; fix: cv with --folds 3 or more, or pass --blend auto"
        )
    names = [r.name for r in runs]
    seconds: dict[str, float] = {}
    sources = {f"{r.name}/{m}": f"fold models ({len(r.test[m])})" for r in runs for m in r.test}
    if args.full:
        t0 = time.perf_counter()
        for r in runs:
            refits = refit_run(r.dir, r.meta, comp, list(r.oof), args.seeds)
            for m, logits in refits.items():
                test[f"{r.name}/{m}"] = logits
                sources[f"{r.name}/{m}"] = f"full-data refits ({args.seeds} seeds: {r.name}/{m}/refit*.npz)"
        seconds["refits"] = round(time.perf_counter() - t0, 1)
    agreement = agreement_shift(oof, test)
    shifted = [f"{a.a} / {a.b} {a.oof:.0%} -> {a.test:.0%}" for a in agreement if a.shifted]
    if shifted:
        console.print(
            "[yellow]warning:[/] the test rows are not like the training rows: pairs of models agree far less on "
            f"them than out of fold ({', '.join(shifted)}). Out-of-fold scores and fitted weights cannot see this; "
            "prefer models trained for it (configs/robust.toml)"
        )
    left_out = [] if args.keep_shifted else shifted_blocks(agreement, {m: _modalities(m) for m in oof})
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
    result = blend_models(oof, test, comp.y, runs[0].fold_of, spaces, blends, args.rounds)
    seconds["blend"] = round(time.perf_counter() - t0, 1)
    for stack in (x for x in result.blends if x.name == "stack"):
        seconds["stack"] = stack.details["seconds"]  # part of the blend's time
    t0 = time.perf_counter()
    off = args.consensus == "off"  # the grouping reads every row: not for a step that is off
    groups = None if off else joint_groups([comp.image, comp.audio], [comp.test_image, comp.test_audio])
    c = result.chosen
    consensus = decide_consensus(args.consensus, groups, comp.y, runs[0].fold_of, c.oof_probs, c.test_probs)
    seconds["consensus"] = round(time.perf_counter() - t0, 1)
    console.print(consensus.line)
    if consensus.applied:
        result = dataclasses.replace(result, test_probs=consensus.test.probs)
    name = name or f"{'+'.join(names)}-{c.name}" + ("+consensus" if consensus.applied else "")
    sources = {m: sources[m] for m in result.models}
    extra = {"consensus": consensus.manifest(), "test_predictions": sources, "seconds": seconds}
    path = write_submission(out, name, comp, result, runs, args.rounds, agreement, left_out, extra)
    console.print(*submit_tables(result, consensus))
    if consensus.applied:
        score = f"OOF macro-F1 {consensus.oof_after:.4f}" + (" (nested)" if c.nested_f1 is not None else "")
    else:
        score = f"OOF macro-F1 {c.honest_f1:.4f}" + (" (nested)" if c.nested_f1 is not None else "")
    what = f"{c.name} blend, {c.space} averaged" + (", consensus" if consensus.applied else "")
    what += ", test rows from full-data refits" if args.full else ""
    console.print(
        f"wrote {path} ({what}, {score}); validated against "
        f"{comp.root / 'sample_submission.csv'}; probabilities and manifest beside it"
    )
    if args.track:
        from .tracking import log_submission

        console.print(f"mlflow: logged as run {log_submission(path.with_suffix('.json'), workdir)}")
    return 0


def score_submission(submission: Path, labels: Path) -> dict:
    """Macro-F1, accuracy, per-class precision/recall/F1/support and the confusion matrix of a submission."""
    truth, sub = read_labelled(labels), read_labelled(submission)
    _check_ids(sub["row_id"], truth["row_id"], submission, labels)
    pred = truth[["row_id"]].merge(sub, on="row_id", how="left")["label"].to_numpy()  # in the labels' order
    y = truth["label"].to_numpy()
    classes = np.arange(N_CLASSES)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=classes, zero_division=0)
    return {
        "macro_f1": macro_f1(y, pred),
        "accuracy": accuracy(y, pred),
        "per_class": pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s}, index=classes),
        "confusion": confusion_matrix(y, pred, labels=classes),
    }


def score_command(args) -> int:
    """``python run.py score SUBMISSION LABELS_CSV``: print the submission's scores on a labelled holdout."""
    res = score_submission(Path(args.submission), Path(args.labels))
    console.print(f"{args.submission} against {args.labels} ({int(res['per_class']['support'].sum())} rows):")
    console.print(f"macro-F1 [bold]{res['macro_f1']:.4f}[/]  accuracy {res['accuracy']:.4f}")
    per_class = Table(title="per class")
    for col in ("class", "precision", "recall", "F1", "support"):
        per_class.add_column(col, justify="right")
    for k, row in res["per_class"].iterrows():
        per_class.add_row(str(k), *(f"{row[c]:.4f}" for c in ("precision", "recall", "f1")), str(int(row["support"])))
    console.print(per_class)
    cm = Table(title="confusion matrix (rows: true label, columns: predicted)")
    cm.add_column("true", justify="right")
    for k in range(N_CLASSES):
        cm.add_column(str(k), justify="right")
    for k, row in enumerate(res["confusion"]):
        cm.add_row(str(k), *(f"[bold]{v}[/]" if i == k else (str(v) if v else ".") for i, v in enumerate(row)))
    console.print(cm)
    return 0
