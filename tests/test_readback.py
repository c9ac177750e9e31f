"""What a hostile sweep of the newer features found: each case is one `error:` line and exit 2 before anything is
written (or a documented recovery, or one `warning:` line with the work kept), never a traceback."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from test_pseudo import CV, base, pseudo_cv  # noqa: F401 (base: a fixture)
from test_submit import fake_run, submit, write_csv

from competition.cli import main
from competition.config import load_config
from competition.store.atomic import write_json
from competition.store.readers import read_manifest
from competition.utils.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


def one_line(capsys, stream: str, prefix: str, *needles: str) -> str:
    out = capsys.readouterr()
    text = getattr(out, stream)
    assert "Traceback" not in out.err + out.out
    lines = [line for line in text.strip().splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, text
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def one_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "fix" in lines[0], err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def cv_args(data: Path, wd: Path, *extra: str) -> list[str]:
    return ["cv", "--data", str(data), "--workdir", str(wd), "--run", "r", *CV, *extra]


# --- 1. --track mlflow: the store is checked before the work; a failure after it is a warning ---------------


@pytest.mark.parametrize(
    "uri, needle",
    [
        ("sqlite:///{tmp}/afile/mlflow.db", "afile is not a folder"),
        ("file:///{tmp}/store", "sqlite:///"),
        ("{tmp}/store", "sqlite:///"),
        ("http://127.0.0.1:9/", "does not answer"),
    ],
)
@pytest.mark.parametrize("command", ["cv", "submit"])
def test_an_unusable_tracking_store_is_one_error_before_any_work(
    tiny_data, tmp_path, capsys, monkeypatch, uri, needle, command
):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(tmp=tmp_path))
    wd, out = tmp_path / "wd", tmp_path / "sub"
    if command == "submit":
        fake_run(wd, "r", tiny_data)
    before = {p for p in tmp_path.rglob("*") if "data" not in p.parts}
    t0 = time.perf_counter()
    if command == "cv":
        assert main([*cv_args(tiny_data, wd), "--track", "mlflow"]) == 2
    else:
        assert submit(wd, tiny_data, out, "--track", "mlflow", "--blend", "equal") == 2
    assert time.perf_counter() - t0 < 20  # retries bounded (MLflow's own defaults retry for minutes)
    one_error(capsys, "MLFLOW_TRACKING_URI", needle)
    after = {p for p in tmp_path.rglob("*") if "data" not in p.parts}
    assert after - before <= {out} and before <= after  # submit checks --out is writable first: an empty folder


def test_a_file_named_mlruns_in_the_workdir_is_one_error_before_training(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "mlruns").write_text("")
    assert main([*cv_args(tiny_data, wd), "--track", "mlflow"]) == 2
    one_error(capsys, "mlruns: cannot hold the MLflow store")
    assert sorted(p.name for p in wd.iterdir()) == ["mlruns"]


def test_a_tracking_failure_after_the_work_is_a_warning_and_the_submission_is_kept(
    tiny_data, tmp_path, capsys, monkeypatch
):
    from competition.cli import commands

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    wd, out = tmp_path / "wd", tmp_path / "sub"
    fake_run(wd, "r", tiny_data)

    def broken(*args):
        raise FileExistsError(17, "File exists")

    monkeypatch.setattr(commands, "log_submission", broken)
    assert submit(wd, tiny_data, out, "--track", "mlflow", "--blend", "equal", "--consensus", "off") == 0
    one_line(capsys, "err", "warning: ", "--track mlflow: not logged (FileExistsError", "results are kept")
    assert sorted(p.suffix for p in out.iterdir()) == [".csv", ".json", ".npz"]


# --- 2. the seed is validated with the config, before anything is written ----------------------------------


@pytest.mark.parametrize("how", [["--seed", "-1"], ["--seed", "99999999999"], ["--set", "seed=4294967296"], "toml"])
def test_a_seed_outside_numpys_range_is_refused_before_anything_is_written(tiny_data, tmp_path, capsys, how):
    if how == "toml":
        (tmp_path / "c.toml").write_text("seed = -5\n")
        how = ["--config", str(tmp_path / "c.toml")]
    assert main(cv_args(tiny_data, tmp_path / "wd", *how)) == 2
    one_error(capsys, "seed must be in 0..4294967295")
    assert not (tmp_path / "wd").exists()


# --- 3. a pseudo-label round's damaged files ---------------------------------------------------------------


def test_damaged_pseudo_files_are_rebuilt_while_the_submission_is_unchanged(base, tiny_data, capsys):  # noqa: F811
    wd, sub = base
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p") == 0
    run = wd / "p"
    saved = {k: v.copy() for k, v in np.load(run / "pseudo.npz").items()}
    record = json.loads((run / "pseudo.json").read_text())
    (run / "pseudo.npz").unlink()
    capsys.readouterr()
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p") == 0
    assert "pseudo.npz: rebuilt from base.json" in " ".join(capsys.readouterr().out.split())
    assert all(np.array_equal(v, np.load(run / "pseudo.npz")[k]) for k, v in saved.items())
    text = (run / "pseudo.json").read_text()
    (run / "pseudo.json").write_text(text[: len(text) // 2])  # truncated
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p") == 0
    assert "pseudo.json: rebuilt" in " ".join(capsys.readouterr().out.split())
    assert json.loads((run / "pseudo.json").read_text()) == record
    # the submission changed (its manifest rewritten): a lost pseudo.npz is no longer rebuilt silently
    (run / "pseudo.npz").unlink()
    edit = json.loads(sub.with_suffix(".json").read_text()) | {"rounds": 7}
    write_json(sub.with_suffix(".json"), edit)
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p") == 2
    one_error(capsys, "p/pseudo.json", "changed", "--run NEW_NAME")
    # both files lost after training: nothing says which sets the trained folds used
    (run / "pseudo.json").unlink()
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p") == 2
    one_error(capsys, "p/pseudo.json: missing or damaged", "--run NEW_NAME")


# --- 4. every manifest is checked against one schema --------------------------------------------------------


def _edit(m: dict, path: str, value) -> dict:
    *head, last = path.split(".")
    node = m
    for key in head:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value
    return m


@pytest.mark.parametrize(
    "path, value, needle",
    [
        ("average", "geometric", "average 'geometric'"),
        ("runs.0.dir", 5, "runs[0].'dir' is int"),
        ("weights.base/image", -1, "'weights'['base/image'] is -1"),
        ("weights.base/image", math.nan, "expected a finite number"),
        ("models", "base/image", "'models' is 'base/image'"),
        ("models", ["base/image"], "one weight for each of ['base/image']"),
        ("blend", None, "'blend' is NoneType"),
    ],
)
def test_a_hand_edited_manifest_is_one_error_naming_the_key(base, tiny_data, capsys, path, value, needle):  # noqa: F811
    wd, sub = base
    manifest = sub.with_suffix(".json")
    write_json(manifest, _edit(json.loads(manifest.read_text()), path, value))
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p") == 2
    one_error(capsys, f"{manifest}: not a valid submission manifest", needle, "fix: rerun `run.py submit`")
    assert not (wd / "p").exists()


def test_negative_or_nan_fold_weights_are_refused(base):  # noqa: F811
    _, sub = base
    manifest = sub.with_suffix(".json")
    m = json.loads(manifest.read_text())
    fitted = next(i for i, c in enumerate(m["candidates"]) if "fold_weights" in c)
    for bad in (-1, math.nan):
        write_json(manifest, _edit(json.loads(json.dumps(m)), f"candidates.{fitted}.fold_weights.0.base/image", bad))
        with pytest.raises(UserError, match=r"fold_weights\[0\]"):
            read_manifest(manifest)


# --- 5. submit --name: never silently replaces another runs' submission; never an empty name ----------------


def test_submit_name_refuses_to_replace_a_submission_of_other_runs(tiny_data, tmp_path, capsys):
    wd, out = tmp_path / "wd", tmp_path / "sub"
    fake_run(wd, "a", tiny_data)
    fake_run(wd, "b", tiny_data)
    fast = ["--blend", "equal", "--consensus", "off", "--name", "X"]
    assert submit(wd, tiny_data, out, "--run", "a", *fast) == 0
    first = (out / "X.json").read_bytes()
    assert submit(wd, tiny_data, out, "--run", "a", *fast) == 0  # the same runs: a rerun, replaced
    capsys.readouterr()
    assert submit(wd, tiny_data, out, "--run", "b", *fast) == 2
    one_error(capsys, f"{out / 'X.csv'}: a submission of that name, made from other runs", "--overwrite")
    assert json.loads((out / "X.json").read_text())["runs"][0]["name"] == "a" and first
    assert submit(wd, tiny_data, out, "--run", "b", *fast, "--overwrite") == 0
    assert json.loads((out / "X.json").read_text())["runs"][0]["name"] == "b"


def test_submit_empty_name_is_refused(tiny_data, tmp_path, capsys):
    wd, out = tmp_path / "wd", tmp_path / "sub"
    fake_run(wd, "a", tiny_data)
    assert submit(wd, tiny_data, out, "--name", "") == 2
    one_error(capsys, "--name ''")
    assert not list(out.glob("*")) if out.exists() else True


# --- 6. no silent coercion in configs -----------------------------------------------------------------------


@pytest.mark.parametrize("line", ["epochs = true", "lr = false", "seed = true", "schedule = 5", "pseudo = 1"])
def test_a_bool_or_number_of_the_wrong_type_in_a_config_is_refused(tmp_path, line):
    (tmp_path / "c.toml").write_text(line + "\n")
    with pytest.raises(UserError, match=r"c.toml: .* is not a valid"):
        load_config(tmp_path / "c.toml")


# --- 7. runs: a damaged run keeps its row and says which file ------------------------------------------------


@pytest.mark.parametrize("file", ["config.json", "summary.json"])
def test_runs_lists_a_damaged_run_with_one_warning_naming_the_file(tiny_data, tmp_path, capsys, file):
    wd = tmp_path / "wd"
    fake_run(wd, "ok", tiny_data)
    run = fake_run(wd, "bad", tiny_data)
    (run / "summary.json").write_text(json.dumps({"oof": {}, "per_fold": []}))
    (run / file).write_text("{ truncated")
    assert main(["runs", "--workdir", str(wd), "--submissions", str(tmp_path / "none"), "--json"]) == 0
    out = capsys.readouterr()
    warnings = [line for line in out.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"{run / file}" in warnings[0] and "fix" in warnings[0], out.err
    rows = json.loads(out.out)["runs"]
    assert {r["run"] for r in rows} == {"ok", "bad"}
    assert all(r["warning"] for r in rows if r["run"] == "bad")
    assert main(["runs", "--workdir", str(wd), "--submissions", str(tmp_path / "none")]) == 0
    assert "bad" in capsys.readouterr().out


# --- 8. the docs say what works -------------------------------------------------------------------------------


def test_submit_docs_do_not_call_full_unimplemented():
    text = (ROOT / "docs" / "howto" / "submit.md").read_text()
    assert "not implemented" not in text and "--full" in text and "--overwrite" in text


# --- 9. messages name the file and the fix --------------------------------------------------------------------


def test_too_many_folds_and_all_identical_audio_name_the_fix(tiny_data, tmp_path, capsys):
    assert main(cv_args(tiny_data, tmp_path / "wd", "--folds", "1000")) == 2
    one_error(capsys, "fewer than --folds 1000", "fix: pass --folds")
    for name in ("x_train_sp.npy", "x_test_sp.npy"):
        a = np.load(tiny_data / name)
        a[:] = a[0]
        np.save(tiny_data / name, a)
    assert main(cv_args(tiny_data, tmp_path / "wd2")) == 2
    one_error(capsys, "fewer than --folds 2", "fix:")


def test_a_bad_config_value_names_the_config_file(tiny_data, tmp_path, capsys):
    (tmp_path / "c.toml").write_text("epochs = 0\n")
    assert main(cv_args(tiny_data, tmp_path / "wd", "--config", str(tmp_path / "c.toml"))) == 2
    one_error(capsys, f"{tmp_path / 'c.toml'}", "epochs must be >= 1")


def test_score_on_a_folder_and_integral_float_labels(tmp_path, capsys):
    assert main(["score", str(tmp_path), str(tmp_path)]) == 2
    one_error(capsys, "a folder, not a file")
    sub = write_csv(tmp_path / "s.csv", ["a", "b"], [9, 5])
    labels = write_csv(tmp_path / "l.csv", ["a", "b"], ["9.0", "5.0"])
    assert main(["score", str(sub), str(labels)]) == 0
    assert main(["score", str(labels), str(sub)]) == 0


def test_a_missing_fold_under_pseudo_does_not_suggest_models(base, tiny_data, capsys):  # noqa: F811
    wd, sub = base
    (wd / "base" / "image" / "fold1.npz").unlink()
    assert pseudo_cv(tiny_data, wd, sub, "--run", "p") == 2
    line = one_error(capsys, "fold(s) 1 of 2 missing", "`run.py cv --run base`")
    assert "--models" not in line
