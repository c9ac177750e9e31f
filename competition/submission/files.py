"""Files: a submission CSV in the sample submission's exact format (header, row_id text and order, line endings,
byte order mark), validated after writing, with its probabilities (``.probs.npz``) and manifest (``.json``)."""

from __future__ import annotations

import codecs
import dataclasses
from pathlib import Path

import numpy as np

from competition.data.load import Competition
from competition.ensemble.blend import Agreement, BlendResult
from competition.store.atomic import environment, write_json, write_npz, write_text
from competition.store.loading import Run
from competition.store.readers import read_manifest
from competition.utils.errors import UserError
from competition.utils.validation import check_columns, check_labels, check_same_ids, read_csv


def render_submission(sample_path: Path, labels: np.ndarray) -> bytes:
    """The sample submission's bytes with its label column replaced: same header, row_id text and order,
    same line endings, the same UTF-8 byte order mark if it has one."""
    sample = read_csv(sample_path, as_text=True)
    if len(labels) != len(sample):
        raise UserError(f"{sample_path}: {len(sample)} rows but {len(labels)} predictions; fix: pass the run's --data")
    head = sample_path.read_bytes()[:4096]
    bom = codecs.BOM_UTF8 if head.startswith(codecs.BOM_UTF8) else b""  # pandas drops it on reading: put it back
    out = sample.copy()
    out[out.columns[-1]] = np.asarray(labels).astype(np.int64).astype(str)
    return bom + out.to_csv(index=False, lineterminator="\r\n" if b"\r\n" in head else "\n").encode()


def validate_submission(path: Path, sample_path: Path) -> None:
    """The written file has the sample's header, its row_ids in its order, and integer labels 0-9."""
    sub, sample = read_csv(path, as_text=True), read_csv(sample_path, as_text=True)
    check_columns(sub, path, list(map(str, sample.columns)))
    check_same_ids(sub[sub.columns[0]], sample[sample.columns[0]], path, sample_path)
    if not (sub[sub.columns[0]].to_numpy() == sample[sample.columns[0]].to_numpy()).all():
        raise UserError(f"{path}: row_ids are not in the order of {sample_path}; fix: keep the sample's order")
    check_labels(sub[sub.columns[-1]], sub[sub.columns[0]], path)


def check_replaceable(out_dir: Path, name: str, runs: list[Run]) -> None:
    """Refuse to replace a submission ``name`` in ``out_dir`` made from other runs (or of unknown origin): a
    pseudo-label round built on it could no longer resume. One made from the same runs is a rerun: replaced."""
    csv, manifest = out_dir / f"{name}.csv", out_dir / f"{name}.json"
    if not csv.exists() and not manifest.exists():
        return
    try:
        old = {(r["name"], Path(r["dir"]).resolve()) for r in read_manifest(manifest)["runs"]}
    except UserError:
        old = None  # a CSV without a readable manifest: not ours to replace silently
    if old != {(r.name, r.dir.resolve()) for r in runs}:
        made = "other runs (" + ", ".join(sorted(f"{d}" for _, d in old)) + ")" if old else "an unknown origin"
        raise UserError(
            f"{csv}: a submission of that name, made from {made}, already exists; fix: pass another --name, or "
            "--overwrite to replace it"
        )


def write_submission(
    out_dir: Path, name: str, comp: Competition, result: BlendResult, runs: list[Run], rounds: int,
    agreement: list[Agreement] = (), left_out: list[str] = (), extra: dict | None = None,
    oof_probs: np.ndarray | None = None,
) -> Path:  # fmt: skip
    """Write ``<name>.csv``, validate it (removing it if invalid), then ``<name>.probs.npz`` (the test rows'
    probabilities, and the training rows' honest out-of-fold ones of what is written) and ``<name>.json``."""
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
        oof_probs=(result.chosen.oof_probs if oof_probs is None else oof_probs).astype(np.float32),
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
