"""Pseudo-labels (``cv --pseudo SUBMISSION``): choose, per fold, the test rows a submission's blend labels
confidently, and keep them with their labels in the run folder, so that cv adds them to that fold's training rows.

Honest by construction: fold k's set is read from the fold-k test logits of the submission's models (each
trained on fold k's training rows only), blended with the weights fitted without fold k (``fold_weights[k]`` of
a fitted blend; an equal blend's weights; a stack falls back to the equal blend), and its confidence threshold
is set on the out-of-fold rows outside fold k: the lowest confidence whose rows there reach ``pseudo_precision``
accuracy. Fold k's validation labels reach neither. With ``pseudo_test_folds`` the test rows are split too (a
seeded K-way split, ``test_folds``) and fold k's set leaves out test fold k: with every round of a chain on the
same split (``held_out_test_folds``), fold k's models never trained on those rows, directly or through a source,
so their outputs there are predictions, not fits, for an estimate to read. Files: ``<run>/pseudo.npz`` (per fold
the test rows, their labels, the threshold) and ``<run>/pseudo.json`` (the submission, a fingerprint of it and of
the fold files it reads, and per fold figures), written in that order: the JSON marks the sets done.
"""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from competition.config import Config
from competition.data.load import N_CLASSES, Competition
from competition.ensemble.blend import combine, fold_blend, to_space
from competition.models import SHAPE_HPARAMS, get_factory
from competition.store.atomic import write_json, write_npz
from competition.store.loading import load_finished_run
from competition.store.readers import PSEUDO_JSON, PSEUDO_NPZ, read_manifest, read_pseudo_record, read_pseudo_sets
from competition.store.runs import CONFIG_FILE, checkpoint_path, load_checkpoint, model_seeds, unit_path
from competition.utils.errors import UserError
from competition.utils.paths import default_submissions


@dataclass
class FoldPseudo:
    """One fold's pseudo-labelled test rows and how they were chosen."""

    idx: np.ndarray  # test row indices
    labels: np.ndarray  # their blended argmax labels
    threshold: float  # the blend's max-probability they reach (inf: none qualified)
    calib_rows: int  # out-of-fold rows outside the fold the threshold was set on
    calib_precision: float  # accuracy of those of them at or above the threshold (nan when none)


def resolve_submission(value: str | Path, default_dir: Path | None = None) -> Path:
    """The absolute path of a submission's manifest: ``NAME`` (in ``default_dir``, default ``submissions/``) or
    the path of its ``.csv`` or ``.json``."""
    if default_dir is None:
        default_dir = default_submissions()
    p = Path(value)
    if p.suffix == ".csv":
        p = p.with_suffix(".json")
    elif p.suffix != ".json":
        p = default_dir / f"{p.name}.json" if p.parent == Path(".") else p.with_name(p.name + ".json")
    p = p.resolve()
    if not p.is_file():
        raise UserError(
            f"{p}: submission manifest not found; fix: pass --pseudo with a name in submissions/ or the path of a "
            "<name>.csv / <name>.json written by `run.py submit`"
        )
    return p


def confidence_threshold(conf: np.ndarray, correct: np.ndarray, precision: float) -> float:
    """The lowest confidence t such that the rows with ``conf >= t`` are correct in at least ``precision`` of
    cases (rows of equal confidence go together); inf when no t reaches it."""
    order = np.argsort(-conf, kind="stable")
    c, ok = conf[order], correct[order]
    acc = np.cumsum(ok) / np.arange(1, len(c) + 1)
    last_of_tie = np.append(c[1:] != c[:-1], True)  # a threshold takes every row of its confidence
    good = np.flatnonzero(last_of_tie & (acc >= precision))
    return float(c[good[-1]]) if len(good) else float("inf")


def test_folds(n_test: int, folds: int, seed: int) -> np.ndarray:
    """(M,) the test fold of each test row with ``pseudo_test_folds``: a seeded, balanced K-way split (a pure
    function of its arguments, so every round of a chain with the same seed and K gets the same one)."""
    return np.random.default_rng([seed, folds, 0x7E57]).permutation(n_test) % folds


def held_out_test_folds(submission: Path, depth: int = 0) -> tuple[int, int] | None:
    """(seed, K) of the test split every pseudo-label round behind ``submission`` left out fold by fold, when that
    makes fold k's models of every run blended there clean of test fold k: each round of the chain (its source's
    rounds, and theirs) split the test rows with the same seed and K. (-1, -1) when no run trained on test rows;
    None when some round did without a held-out split, or on another, or a manifest of the chain does not read."""
    try:
        runs = read_manifest(submission)["runs"]
    except (UserError, KeyError, TypeError):
        return None
    found: set[tuple[int, int]] = set()
    for r in runs:
        cfg = r.get("config", {})
        if not cfg.get("pseudo"):
            continue
        if not cfg.get("pseudo_test_folds") or depth > 20:
            return None
        behind = held_out_test_folds(Path(cfg["pseudo"]), depth + 1)
        key = (int(cfg["seed"]), int(cfg["folds"]))
        if behind is None or behind not in {key, (-1, -1)}:
            return None
        found.add(key)
    if not found:
        return (-1, -1)
    return found.pop() if len(found) == 1 else None


def fold_pseudo_labels(
    oof: list[np.ndarray], test: list[np.ndarray], y: np.ndarray, fold_of: np.ndarray, weights: np.ndarray,
    space: str, precision: float, test_fold: np.ndarray | None = None,
) -> list[FoldPseudo]:  # fmt: skip
    """Per fold k: the test rows whose fold-k blend is confident, with its labels. ``oof``: per model (N, 10)
    out-of-fold logits; ``test``: per model (K, M, 10) fold test logits; ``weights``: (K, n_models) the blend
    weights of each fold (fit without its rows); ``space``: the averaging space (blend.py); ``test_fold``: (M,)
    the test rows' folds (``test_folds``), fold k's left out of its set (None: no row left out)."""
    out = []
    for k in range(weights.shape[0]):
        outside = fold_of != k  # rows whose labels fold k may use
        calib = combine(np.stack([to_space(o[outside], space) for o in oof]), weights[k], space)
        correct = calib.argmax(1) == y[outside]
        t = confidence_threshold(calib.max(1), correct, precision)
        kept = calib.max(1) >= t
        probs = fold_blend(test, weights, k, space)
        idx = np.flatnonzero((probs.max(1) >= t) & (True if test_fold is None else test_fold != k))
        cal_prec = float(correct[kept].mean()) if kept.any() else float("nan")
        out.append(FoldPseudo(idx, probs[idx].argmax(1).astype(np.int64), t, int(outside.sum()), cal_prec))
    return out


# --- the submission: its manifest, runs and per-fold weights ---------------------------------------------


@dataclass
class Source:
    """A submission as pseudo-labels read it: its blend's models' fold predictions and per-fold weights."""

    path: Path
    blend: str  # the blend used here (a stack's: equal)
    space: str
    models: list[str]  # run/model
    oof: list[np.ndarray]
    test: list[np.ndarray]
    weights: np.ndarray  # (K, n_models)
    fingerprint: str  # of the manifest and every fold file it reads
    note: str  # one line about a stand-in blend, or ""


def _fold_weights(m: dict, models: list[str], folds: int) -> tuple[str, str, np.ndarray, str]:
    """The blend, its space, its (K, n_models) per-fold weights and a note, from a submission's manifest."""
    blend, space = m["blend"], m["average"]
    if blend == "stack":
        note = (
            "the submission's blend is a stack, whose per-fold stackers are not saved: pseudo-labels use the "
            f"equal {space} blend of its models"
        )
        return "equal", space, np.full((folds, len(models)), 1 / len(models)), note
    weights = np.tile(np.array([float(m["weights"][key]) for key in models]), (folds, 1))
    fitted = [c for c in m.get("candidates", []) if c.get("blend") == "fitted" and c.get("space") == space]
    if blend == "fitted" and fitted and "fold_weights" in fitted[0]:
        weights = np.array([[float(w[key]) for key in models] for w in fitted[0]["fold_weights"]])
        if weights.shape != (folds, len(models)):
            raise ValueError(f"fold_weights of shape {weights.shape}, expected ({folds}, {len(models)})")
    return blend, space, weights, ""


def load_source(path: Path, comp: Competition, split_fp: str, folds: int, run_dir: Path) -> Source:
    """Read and check the submission ``path`` for a run in ``run_dir`` on ``comp`` with split ``split_fp``."""
    m = read_manifest(path)
    if m["data_fingerprint"] != comp.fingerprint:
        raise UserError(
            f"{path}: submission made on data {m.get('data')} ({m['data_fingerprint']}), not --data {comp.root} "
            f"({comp.fingerprint}); fix: pass a submission of this data folder"
        )
    if m["split_fingerprint"] != split_fp:
        raise UserError(
            f"{path}: its runs' fold split ({m['split_fingerprint']}) is not this workdir's ({split_fp}); fix: run "
            "`cv --pseudo` in the workdir of the submission's runs"
        )
    dirs = {r["name"]: Path(r["dir"]).resolve() for r in m["runs"]}
    models = list(m["models"])
    by_run: dict[str, list[str]] = {}  # run -> its blended models: each run's files read once
    for key in models:
        run, _, model = key.rpartition("/")
        by_run.setdefault(run, []).append(model)
    runs = {}
    for run, names in by_run.items():
        d = dirs.get(run)
        if d is None or not (d / CONFIG_FILE).is_file():
            raise UserError(
                f"{path}: run {run!r} of model {run}/{names[0]} not found ({d}); fix: restore the run, or pass a "
                "submission whose runs are in place"
            )
        if d == run_dir.resolve():
            raise UserError(f"{path}: blends this run itself ({d}); fix: pass --run NEW_NAME")
        fix = f"fix: finish that run with `run.py cv --run {run}` (its flags), then rerun `run.py submit` on it"
        runs[run] = load_finished_run(d, comp, names, fix=fix)
        meta = runs[run].meta
        if (meta.get("data_fingerprint"), meta.get("split_fingerprint")) != (comp.fingerprint, split_fp):
            raise UserError(
                f"{d / CONFIG_FILE}: run {run!r} is now of other data or another split than {path}; fix: rerun "
                "`run.py submit` on the runs as they are"
            )
        missing = [n for n in names if n not in runs[run].oof]
        if missing:
            raise UserError(
                f"{path}: model {run}/{missing[0]} is not in run {d}; fix: pass a submission whose runs are in place"
            )
    h = hashlib.sha256(path.read_bytes())
    oof, test = [], []
    for key in models:
        run, _, model = key.rpartition("/")
        oof.append(runs[run].oof[model])
        test.append(runs[run].test[model])
        for k in range(folds):  # every seed's fold file, with seed bagging
            for s in range(model_seeds(runs[run].meta["config"], model)):
                h.update(unit_path(dirs[run], model, k, s).read_bytes())
    try:
        blend, space, weights, note = _fold_weights(m, models, folds)
    except ValueError as e:
        raise UserError(f"{path}: unusable blend weights ({e}); fix: rerun `run.py submit`") from None
    return Source(path, blend, space, models, oof, test, weights, h.hexdigest()[:16], note)


def source_checkpoint(submission: Path, model: str, fold: int, seed: int = 0) -> Path:
    """The checkpoint a round's (``model``, ``fold``) unit starts from with ``pseudo_init=source``: that unit of the
    latest run of ``submission`` that blends ``model``, else of its latest run that trained it (a blend may leave a
    model out); fold k's source model trained on fold k's training rows only, so the round's fold-k model still
    never sees fold k's labels."""
    m = read_manifest(submission)
    latest = m["runs"][::-1]
    for r in [r for r in latest if f"{r['name']}/{model}" in m["models"]] + latest:
        path = checkpoint_path(Path(r["dir"]), model, fold, seed)
        if path.is_file():
            return path
    raise UserError(
        f"{submission}: none of its runs has a {model} fold {fold} checkpoint to start the round's unit from; fix: "
        "set pseudo_init=scratch, or pass a submission whose runs trained that model"
    )


def check_source_model(checkpoint: Path, model: str, hparams: dict) -> None:
    """A round's ``model`` unit with arguments ``hparams`` can start from ``checkpoint`` (``source_checkpoint``):
    the arguments that shape its weights (``models.SHAPE_HPARAMS``) are the source's; else a UserError saying
    which differs."""
    saved = load_checkpoint(checkpoint)["hparams"]
    defaults = inspect.signature(get_factory(model)).parameters  # for a checkpoint written before a key existed
    for key in [k for k in SHAPE_HPARAMS if k in hparams]:
        theirs = saved.get(key, defaults[key].default)
        if theirs != hparams[key]:
            raise UserError(
                f"{checkpoint}: the round's {model} model has {key}={hparams[key]}, the source's it would start from "
                f"{key}={theirs}; fix: pass --set {key}={theirs} (the source's recipe), or set pseudo_init=scratch"
            )


def _finite(x: float) -> float | None:
    return x if np.isfinite(x) else None


# --- the run's saved sets -----------------------------------------------------------------------------------


@dataclass
class Round:
    """A pseudo-label round's sets as computed from its submission (not yet saved)."""

    source: Source
    precision: float
    sets: list[FoldPseudo]
    held_out: bool = False  # pseudo_test_folds: fold k's set leaves out test fold k


def compute(run_dir: Path, comp: Competition, fold_of: np.ndarray, split_fp: str, cfg: Config) -> Round:
    """The per-fold pseudo sets of the run in ``run_dir`` with config ``cfg`` (its ``pseudo`` submission and
    ``pseudo_precision``); reads and checks the submission, writes nothing."""
    src = load_source(Path(cfg.pseudo), comp, split_fp, cfg.folds, run_dir)
    held = test_folds(comp.n_test, cfg.folds, cfg.seed) if cfg.pseudo_test_folds else None
    sets = fold_pseudo_labels(src.oof, src.test, comp.y, fold_of, src.weights, src.space, cfg.pseudo_precision, held)
    return Round(src, cfg.pseudo_precision, sets, held is not None)


def save_or_check(run_dir: Path, rnd: Round, n_test: int) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Save the round's sets in the run folder, or on a resume check that its submission and the fold files it
    reads are unchanged and read the saved sets back. A deleted or damaged ``pseudo.npz`` / ``pseudo.json`` is
    rebuilt from the submission when its fingerprint shows it unchanged (the sets are a pure function of it).
    Returns {fold: (test rows, labels)} and the lines that describe them."""
    src, sets, saved_path = rnd.source, rnd.sets, run_dir / PSEUDO_JSON
    lines = [src.note] if src.note else []
    if saved_path.exists() or (run_dir / PSEUDO_NPZ).exists() or any(run_dir.glob("*/fold*.npz")):
        saved, rebuild = _saved_round(run_dir, rnd, n_test)
        if saved.get("fingerprint") != src.fingerprint or saved.get("submission") != str(src.path):
            raise UserError(
                f"{saved_path}: run {run_dir.name!r} was trained with the pseudo-labels of {saved.get('submission')} "
                f"(fingerprint {saved.get('fingerprint')}), but {src.path} now reads as {src.fingerprint} (the "
                f"submission or its runs changed); fix: pass --run NEW_NAME, or delete {run_dir} to start it over"
            )
        if rebuild:
            lines.append(f"{rebuild}: rebuilt from {src.path.name}, unchanged since the run began (same fingerprint)")
            _write_round(run_dir, rnd)
        else:
            for s, (idx, labels, threshold) in zip(sets, saved["sets"], strict=True):
                s.idx, s.labels, s.threshold = idx, labels, threshold
    else:
        _write_round(run_dir, rnd)
    per_fold, left_out = [], ", each fold's test fold left out" if rnd.held_out else ""
    for k, s in enumerate(sets):
        counts = np.bincount(s.labels, minlength=N_CLASSES)
        per_fold.append(f"fold {k}: t={s.threshold:.3f}, {len(s.idx)} rows ({counts.min()}-{counts.max()} a class)")
    lines.append(
        f"pseudo-labels of {src.path.name} ({src.blend} {src.space} blend of {len(src.models)} models' fold test "
        f"logits, precision >= {rnd.precision} out of fold{left_out}): " + "; ".join(per_fold)
    )
    return {k: (s.idx, s.labels) for k, s in enumerate(sets)}, lines


def _saved_round(run_dir: Path, rnd: Round, n_test: int) -> tuple[dict, str]:
    """The saved round (``submission``, ``fingerprint`` and, when they read, the ``sets``) and the file to rebuild
    ("" when none). A damaged ``pseudo.json`` loses the fingerprint: the saved sets stand in for it (equal to the
    submission's sets now only when it is unchanged), and before any unit trained nothing depends on either."""
    sets, src = rnd.sets, rnd.source
    try:
        record = read_pseudo_record(run_dir)
    except UserError:
        record = None
    try:
        saved = read_pseudo_sets(run_dir, len(sets), n_test)
    except UserError:
        saved = None
    if record is not None:
        return (record | {"sets": saved}, "") if saved is not None else (record, PSEUDO_NPZ)
    same = saved is not None and all(
        np.array_equal(idx, s.idx) and np.array_equal(labels, s.labels)
        for (idx, labels, _), s in zip(saved, sets, strict=True)
    )
    if same or not any(run_dir.glob("*/fold*.npz")):
        return {"submission": str(src.path), "fingerprint": src.fingerprint}, PSEUDO_JSON
    raise UserError(
        f"{run_dir / PSEUDO_JSON}: missing or damaged, and {PSEUDO_NPZ} does not show that the run's trained folds "
        f"used the pseudo-labels {src.path.name} gives now; fix: restore both files, or pass --run NEW_NAME, or "
        f"delete {run_dir} to start it over"
    )


def _write_round(run_dir: Path, rnd: Round) -> None:
    """``pseudo.npz`` then ``pseudo.json`` (which marks the sets done)."""
    src, sets = rnd.source, rnd.sets
    arrays = {f"idx{k}": s.idx for k, s in enumerate(sets)} | {f"labels{k}": s.labels for k, s in enumerate(sets)}
    write_npz(run_dir / PSEUDO_NPZ, thresholds=np.array([s.threshold for s in sets]), **arrays)
    write_json(
        run_dir / PSEUDO_JSON,
        {
            "submission": str(src.path),
            "fingerprint": src.fingerprint,
            "blend": src.blend,
            "average": src.space,
            "models": src.models,
            "fold_weights": np.round(src.weights, 6).tolist(),
            "precision": rnd.precision,
            "test_folds_held_out": rnd.held_out,
            "folds": [
                {"threshold": _finite(s.threshold), "rows": len(s.idx), "calibration_rows": s.calib_rows,
                 "calibration_precision": _finite(s.calib_precision),
                 "per_class": np.bincount(s.labels, minlength=N_CLASSES).tolist()}
                for s in sets
            ],
            "note": src.note,
        },
    )  # fmt: skip
