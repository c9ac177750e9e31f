"""Property-based tests (Hypothesis) of every reader of a read-back file, and of `score`: valid files and
arguments, mutated (a key dropped, a value retyped or out of range, the text truncated, rows reordered or
duplicated), are read, or refused with one UserError / one `error:` line and exit 2; never a traceback, and
nothing is written beside them. No training: each example takes milliseconds."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_submit import fake_run

from competition.cli import main
from competition.config import Config, load_config, to_toml
from competition.data.load import load_competition
from competition.splits.folds import load_or_make_folds
from competition.store.atomic import write_json, write_npz
from competition.store.claims import claim_dead
from competition.store.readers import (
    read_claim,
    read_folds,
    read_manifest,
    read_pseudo_record,
    read_pseudo_sets,
    read_run_config,
    read_summary,
)
from competition.utils.errors import UserError

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,  # no replay across processes: some valid files hold this process's pid
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ODD = [None, "", "x", 0, -1, 1, 2**40, 1.5, -0.5, math.nan, math.inf, True, False, [], {}, [1], {"a": 1}]


def paths_of(obj, prefix=()):
    """Every key path into a JSON value."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths_of(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):
            yield from paths_of(v, (*prefix, i))


@st.composite
def mutated_json(draw, valid: dict) -> str:
    """The text of ``valid`` with one or two mutations: a value dropped or retyped, keys reordered, or the text
    truncated; most results still parse, so the schema is what is tested."""
    obj = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 2))):
        paths = [p for p in paths_of(obj) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        how = draw(st.sampled_from(["drop", "retype", "retype", "scale"]))
        if how == "drop":
            del parent[path[-1]]
        elif how == "retype":
            # a copy: ODD's lists and dicts are shared, and a later mutation into one would change ODD itself
            # (a value that holds itself, and examples that differ from run to run)
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(ODD)))
        elif isinstance(parent[path[-1]], (int, float)) and not isinstance(parent[path[-1]], bool):
            parent[path[-1]] = parent[path[-1]] * draw(st.sampled_from([-1, 0, 1000, 1e300]))
    if isinstance(obj, dict) and draw(st.booleans()):
        obj = dict(reversed(list(obj.items())))  # reordered: still valid
    text = json.dumps(obj)
    if draw(st.integers(0, 4)) == 0:
        text = text[: draw(st.integers(0, len(text)))]
    return text


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def refused_or_read(read, *args):
    """``read(*args)``, or None when it refuses with a one-line UserError naming a file and a fix."""
    try:
        return read(*args)
    except UserError as e:
        assert "\n" not in str(e) and "fix" in str(e), str(e)
        return None


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:  # argparse: a flag's value of the wrong type (its usage line, then its error)
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def assert_clean(rc: int, err: str, ok: tuple[int, ...] = (0,)) -> None:
    assert "Traceback" not in err
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "fix" in lines[0], err
    else:
        assert rc in ok, err


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_src):
    """A workdir with a fake finished run and its saved split, and a written submission of it."""
    root = tmp_path_factory.mktemp("world")
    comp = load_competition(tiny_src)
    wd = root / "wd"
    fold_of = load_or_make_folds(comp, wd, 2, 0, True, "grouped")["fold"].to_numpy()
    run = fake_run(wd, "r", tiny_src, fold_of=fold_of)
    write_json(run / "summary.json", {"oof": {"image": {"macro_f1": 0.5, "accuracy": 0.6}}, "per_fold": [
        {"model": "image", "fold": 0, "macro_f1": 0.5, "accuracy": 0.6, "seconds": 1.0, "epochs": 1}]})  # fmt: skip
    rc, _, err = cli("submit", "--workdir", str(wd), "--data", str(tiny_src), "--out", str(root / "sub"), "--blend",
                     "fitted", "--consensus", "off", "--name", "s")  # fmt: skip
    assert rc == 0, err
    return {"root": root, "wd": wd, "run": run, "comp": comp, "sub": root / "sub", "data": tiny_src}


# --- the JSON files --------------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_a_mutated_manifest_is_read_or_refused_and_runs_lists_it(world, data):
    valid = json.loads((world["sub"] / "s.json").read_text())
    folder = world["root"] / "msubs"
    folder.mkdir(exist_ok=True)
    path = folder / "m.json"
    path.write_text(data.draw(mutated_json(valid)))
    before = snapshot(world["root"])
    refused_or_read(read_manifest, path)
    rc, _, err = cli("runs", "--workdir", str(world["wd"]), "--submissions", str(folder), "--json")
    assert_clean(rc, err)
    assert all(line.startswith("warning: ") for line in err.strip().splitlines() if line)
    assert snapshot(world["root"]) == before


@SETTINGS
@given(data=st.data(), file=st.sampled_from(["config.json", "summary.json"]))
def test_a_mutated_run_config_or_summary_is_read_or_refused_and_runs_lists_the_run(world, data, file):
    run = world["wd"] / "m"
    if not run.exists():
        fake_run(world["wd"], "m", world["data"])
        (run / "summary.json").write_text((world["run"] / "summary.json").read_text())
    valid = json.loads((world["run"] / file).read_text())
    (run / file).write_text(data.draw(mutated_json(valid)))
    before = snapshot(world["root"])
    refused_or_read(read_run_config if file == "config.json" else read_summary, run)
    rc, out, err = cli("runs", "--workdir", str(world["wd"]), "--submissions", str(world["sub"]), "--json")
    assert_clean(rc, err)
    assert "m" in {r["run"] for r in json.loads(out)["runs"]}
    rc, _, err = cli("submit", "--workdir", str(world["wd"]), "--data", str(world["data"]), "--run", "m",
                     "--out", str(world["root"] / "out"), "--blend", "equal", "--consensus", "off")  # fmt: skip
    assert_clean(rc, err)
    shutil.rmtree(world["root"] / "out", ignore_errors=True)  # submit's own folder
    assert snapshot(world["root"]) == before


@SETTINGS
@given(data=st.data())
def test_a_mutated_pseudo_record_or_sets_are_read_or_refused(world, data):
    run = world["root"] / "p"
    valid = {"submission": "/x/s.json", "fingerprint": "ab" * 8, "precision": 0.98, "folds": [{"rows": 3}]}
    (run).mkdir(exist_ok=True)
    (run / "pseudo.json").write_text(data.draw(mutated_json(valid)))
    arrays = {"thresholds": np.array([0.9, 0.8]), "idx0": np.array([0, 5]), "labels0": np.array([1, 9]),
              "idx1": np.array([3]), "labels1": np.array([2])}  # fmt: skip
    key = data.draw(st.sampled_from(sorted(arrays)))
    how = data.draw(st.sampled_from(["drop", "float", "negative", "big", "2d", "keep"]))
    bad = dict(arrays)
    if how == "drop":
        del bad[key]
    elif how != "keep":
        v = bad[key]
        bad[key] = {"float": v + 0.5, "negative": -v - 1, "big": v + 1000, "2d": v[None]}[how]
    write_npz(run / "pseudo.npz", **bad)
    if data.draw(st.integers(0, 4)) == 0:
        blob = (run / "pseudo.npz").read_bytes()
        (run / "pseudo.npz").write_bytes(blob[: data.draw(st.integers(0, len(blob)))])
    before = snapshot(world["root"])
    refused_or_read(read_pseudo_record, run)
    sets = refused_or_read(read_pseudo_sets, run, 2, 60)
    if sets is not None:
        assert all(len(i) == len(y) and (y >= 0).all() and (y <= 9).all() and (i < 60).all() for i, y, _ in sets)
    assert snapshot(world["root"]) == before


@SETTINGS
@given(data=st.data())
def test_a_mutated_claim_is_judged_by_its_age_never_an_error(world, data):
    path = world["root"] / "c" / "fold0.claim"
    path.parent.mkdir(exist_ok=True)
    valid = {"host": "h", "pid": os.getpid(), "start_ticks": "1", "claimed_at": "2024-01-01T00:00:00+00:00"}
    path.write_text(data.draw(mutated_json(valid)))
    info, age = read_claim(path)
    assert isinstance(claim_dead(info, age), bool)


# --- the saved split --------------------------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_a_mutated_saved_split_is_used_or_refused_never_resplit(world, data):
    wd = world["root"] / "fw"
    wd.mkdir(exist_ok=True)
    csv = (world["wd"] / "folds.csv").read_text()
    meta = json.loads((world["wd"] / "folds.json").read_text())
    lines = csv.splitlines()
    how = data.draw(st.sampled_from(["meta", "reorder", "drop", "cell", "truncate", "header"]))
    if how == "reorder":
        lines = [lines[0], *data.draw(st.permutations(lines[1:]))]
    elif how == "drop":
        del lines[data.draw(st.integers(1, len(lines) - 1))]
    elif how == "cell":
        i, j = data.draw(st.integers(1, len(lines) - 1)), data.draw(st.integers(0, 3))
        cells = lines[i].split(",")
        cells[j] = str(data.draw(st.sampled_from(["", "x", "-1", "7", "1.5", "99", "nan"])))
        lines[i] = ",".join(cells)
    elif how == "header":
        lines[0] = data.draw(st.sampled_from(["row_id,label,fold", "a,b,c,d", ""]))
    text = "\n".join(lines) + "\n"
    if how == "truncate":
        text = text[: data.draw(st.integers(0, len(text)))]
    (wd / "folds.csv").write_text(text)
    (wd / "folds.json").write_text(data.draw(mutated_json(meta)) if how == "meta" else json.dumps(meta))
    before = snapshot(world["root"])
    refused_or_read(read_folds, wd)
    df = refused_or_read(load_or_make_folds, world["comp"], wd, 2, 0, True, "grouped")
    if df is not None:
        assert set(df["fold"]) <= {0, 1} and len(df) == world["comp"].n_train
    assert snapshot(world["root"]) == before


# --- a config file and the command line's seed -----------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_a_mutated_config_file_is_loaded_or_refused(world, data, tmp_path_factory):
    folder = world["root"] / "cfg"
    folder.mkdir(exist_ok=True)
    valid = {k: v for k, v in Config().to_dict().items() if k != "per_model"} | {"per_model": {"audio": {"lr": 1e-3}}}
    try:
        obj = json.loads(data.draw(mutated_json(valid)))
    except ValueError:
        return  # a truncated JSON text: the TOML text is truncated below instead
    try:
        text = to_toml(obj)
    except (TypeError, ValueError, AttributeError):
        return  # not expressible as TOML by the writer; a truncated text is tested below
    if data.draw(st.integers(0, 4)) == 0:
        text = text[: data.draw(st.integers(0, len(text)))]
    (folder / "c.toml").write_text(text)
    cfg = refused_or_read(load_config, folder / "c.toml")
    if cfg is not None:
        assert 0 <= cfg.seed <= 2**32 - 1 and cfg.epochs >= 1 and not isinstance(cfg.epochs, bool)


@SETTINGS
@given(seed=st.one_of(st.integers(-(2**70), 2**70), st.sampled_from(["-1", "1e3", "x", "", "4294967296"])))
def test_any_seed_is_taken_or_refused_before_anything_is_written(world, seed):
    wd = world["root"] / "seedwd"
    rc, _, err = cli("cv", "--data", str(world["data"]), "--workdir", str(wd), "--seed", str(seed), "--epochs", "0")
    assert rc == 2 and "Traceback" not in err and not wd.exists()  # epochs 0 stops every valid seed too
    assert err.strip().splitlines()[-1].startswith(("error: ", "usage:", "run.py cv: error:"))


# --- score ---------------------------------------------------------------------------------------------------


@st.composite
def mutated_csv(draw, rows: list[tuple[str, str]]) -> str:
    rows = list(rows)
    how = draw(st.sampled_from(["reorder", "drop", "dup", "label", "id", "header", "truncate", "keep"]))
    header = "row_id,label"
    if how == "reorder":
        rows = draw(st.permutations(rows))
    elif how == "drop" and rows:
        del rows[draw(st.integers(0, len(rows) - 1))]
    elif how == "dup" and rows:
        rows.append(rows[draw(st.integers(0, len(rows) - 1))])
    elif how in ("label", "id"):
        i = draw(st.integers(0, len(rows) - 1))
        value = draw(st.sampled_from(["", "9.0", "9.5", "-1", "10", "x", "nan", "1e1", " 3", "3,4", '"']))
        rows[i] = (rows[i][0], value) if how == "label" else (value, rows[i][1])
    elif how == "header":
        header = draw(st.sampled_from(["label,row_id", "row_id", "id,label", "", "row_id,label,extra"]))
    text = header + "\n" + "".join(f"{a},{b}\n" for a, b in rows)
    return text[: draw(st.integers(0, len(text)))] if how == "truncate" else text


@SETTINGS
@given(data=st.data())
def test_score_of_mutated_files_is_a_score_or_one_error_line(world, data):
    folder = world["root"] / "score"
    folder.mkdir(exist_ok=True)
    rows = [(f"r{i}", str(i % 10)) for i in range(12)]
    (folder / "sub.csv").write_text(data.draw(mutated_csv(rows)))
    (folder / "labels.csv").write_text(data.draw(mutated_csv(rows)))
    before = snapshot(world["root"])
    rc, out, err = cli("score", str(folder / "sub.csv"), str(folder / "labels.csv"))
    assert_clean(rc, err)
    if rc == 0:
        assert "macro-F1" in out
    assert snapshot(world["root"]) == before


def test_score_reads_what_submit_writes(world):
    sub = pd.read_csv(world["sub"] / "s.csv")
    rc, _, err = cli("score", str(world["sub"] / "s.csv"), str(world["sub"] / "s.csv"))
    assert rc == 0 and len(sub) == world["comp"].n_test, err
