"""Issue 14: what a hostile user found. Each case is one `error:` line and exit 2 (or the documented recovery),
never a traceback, a silent wrong result or a lost file."""

from __future__ import annotations

import io
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from competition.cli import main
from competition.data.load import write_subset
from competition.splits.folds import make_folds

ROOT = Path(__file__).resolve().parent.parent


def one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --- item 2: a run name is one folder name, never a path -------------------------------------------------


@pytest.mark.parametrize("name", ["..", ".", "", "/tmp/elsewhere", "a/b", "../x", ".hidden"])
@pytest.mark.parametrize("command", ["cv", "submit", "report"])
def test_run_names_that_are_not_one_folder_name_are_refused(tiny_data, tmp_path, capsys, command, name):
    wd = tmp_path / "runs" / "wd"
    extra = ["--data", str(tiny_data)] if command != "report" else []
    assert main([command, "--workdir", str(wd), "--run", name, *extra]) == 2
    one_error_line(capsys, f"--run {name!r}", "fix")
    assert not (tmp_path / "runs").exists()  # refused before anything was written, in the workdir or its parent


# --- item 4: a corrupt or truncated fold file ------------------------------------------------------------


def tiny_cv(tiny_data: Path, wd: Path, *extra: str) -> int:
    args = ["cv", "--data", str(tiny_data), "--workdir", str(wd), "--run", "r", "--folds", "2", "--epochs", "1"]
    return main([*args, "--models", "image", "--workers", "1", "--set", "batch_size=64", *extra])


def test_a_corrupt_fold_file_is_retrained_by_cv_and_named_by_submit_and_report(tiny_data, tmp_path, capsys):
    wd = tmp_path / "wd"
    assert tiny_cv(tiny_data, wd) == 0
    fold0 = wd / "r" / "image" / "fold0.npz"
    good = fold0.read_bytes()
    fold0.write_bytes(good[: len(good) // 2])  # truncated: BadZipFile
    capsys.readouterr()
    assert tiny_cv(tiny_data, wd) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"{fold0}: unreadable or incomplete fold file; training that unit again" in out
    assert "1 units already finished, 1 to train" in out
    np.testing.assert_array_equal(np.load(fold0)["oof_logits"], np.load(io.BytesIO(good))["oof_logits"])

    middle = len(good) // 2
    fold0.write_bytes(good[:middle] + bytes(b ^ 0xFF for b in good[middle : middle + 64]) + good[middle + 64 :])
    for command in (["submit", "--data", str(tiny_data), "--out", str(tmp_path / "sub")], ["report"]):
        assert main([*command, "--workdir", str(wd), "--run", "r"]) == 2
        one_error_line(capsys, f"{fold0}: unreadable or incomplete fold file", "fix: delete it and rerun")


def test_a_corrupt_model_checkpoint_is_one_error_in_report(tiny_data, tmp_path, capsys):
    wd = tmp_path / "wd"
    assert tiny_cv(tiny_data, wd, "--models", "fusion") == 0  # report encodes the fusion model's checkpoints
    pt = wd / "r" / "fusion" / "fold0.pt"
    pt.write_bytes(pt.read_bytes()[:200])  # truncated
    capsys.readouterr()
    assert main(["report", "--workdir", str(wd), "--run", "r", "--data", str(tiny_data)]) == 2
    one_error_line(capsys, f"{pt}: unreadable or incomplete model checkpoint", "fix: delete it")


# --- item 6: an `error:` line where a traceback was ------------------------------------------------------


def test_an_out_or_workdir_that_cannot_hold_files_is_one_error(tiny_data, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    assert main(["submit", "--workdir", str(tmp_path / "wd"), "--data", str(tiny_data), "--out", str(a_file)]) == 2
    one_error_line(capsys, f"{a_file}: cannot write there", "fix")
    out = a_file / "best.toml"  # checked before any trial runs
    assert main(["tune", "--data", str(tiny_data), "--workdir", str(tmp_path / "wd"), "--out", str(out)]) == 2
    one_error_line(capsys, f"{a_file}: cannot write there", "fix")
    assert tiny_cv(tiny_data, a_file / "wd") == 2
    one_error_line(capsys, "cannot write", "fix")


def test_too_few_rows_per_class_for_the_folds_is_one_error(tmp_path, capsys):
    data = write_subset(tmp_path / "three", 3, 2)  # labels 5, 0, 4: one row per class
    assert tiny_cv(data, tmp_path / "wd") == 2
    one_error_line(capsys, "y_train.csv: no class has --folds 2 rows", "fix")


def test_the_least_populated_class_warning_is_our_own_line(capsys):
    y = np.array([0] * 6 + [1] * 6 + [2])  # class 2 has one row, fewer than 2 folds
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a raw scikit-learn warning fails the test
        fold = make_folds(y, 2, 0, groups=np.arange(len(y)))
    assert sorted(np.unique(fold)) == [0, 1]
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: y_train.csv: a class has only 1 rows, fewer than --folds 2" in out


def test_a_model_named_twice_is_one_error(tiny_data, tmp_path, capsys):
    assert tiny_cv(tiny_data, tmp_path / "wd", "--models", "image,image") == 2
    one_error_line(capsys, "models must name each model once", "fix")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"config": 3}', '{"something": "else"}'])
def test_a_corrupt_or_foreign_run_config_is_one_error(tiny_data, tmp_path, capsys, content):
    config = tmp_path / "wd" / "r" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text(content)
    assert tiny_cv(tiny_data, tmp_path / "wd") == 2
    one_error_line(capsys, f"{config}: unreadable run config", "fix: restore it")
    assert config.read_text() == content  # not overwritten
    for command in (["report"], ["submit", "--data", str(tiny_data), "--out", str(tmp_path / "sub")]):
        assert main([*command, "--workdir", str(tmp_path / "wd"), "--run", "r"]) == 2
        one_error_line(capsys, f"{config}: unreadable run config")


# --- item 7: a diverged model is an error, not a result ---------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_config_floats_are_refused(tiny_data, tmp_path, capsys, value):
    assert tiny_cv(tiny_data, tmp_path / "wd", "--set", f"lr={value}") == 2
    one_error_line(capsys, "lr must be a finite number", "fix")
    assert not (tmp_path / "wd").exists()


def test_a_diverging_unit_stops_with_an_error_and_writes_no_result(tiny_data, tmp_path, capsys):
    assert tiny_cv(tiny_data, tmp_path / "wd", "--set", "lr=1e30") == 2
    one_error_line(capsys, "image: training diverged (NaN/inf loss or logits at epoch 1, lr 1e+30)", "fix")
    assert not list((tmp_path / "wd").rglob("fold*.npz"))
    assert not (tmp_path / "wd" / "r" / "summary.json").exists()


# --- item 8: a rerun with a subset of the run's models keeps every model in the summary --------------------


def test_a_rerun_with_a_subset_of_the_models_keeps_every_model_in_the_summary(tiny_data, tmp_path):
    wd = tmp_path / "wd"
    assert tiny_cv(tiny_data, wd, "--models", "image,audio") == 0
    run = wd / "r"
    summary, scores = (run / "summary.json").read_text(), (run / "scores.csv").read_text()
    assert set(json.loads(summary)["oof"]) == {"image", "audio"}
    assert tiny_cv(tiny_data, wd, "--models", "image") == 0  # trains nothing: every image fold is finished
    assert set(json.loads((run / "summary.json").read_text())["oof"]) == {"image", "audio"}
    assert sorted(pd.read_csv(run / "scores.csv")["model"]) == sorted(pd.read_csv(io.StringIO(scores))["model"])


# --- item 10: the small ones ----------------------------------------------------------------------------


def test_a_seed_other_than_the_saved_splits_says_the_split_is_kept(tiny_data, tmp_path, capsys):
    wd = tmp_path / "wd"
    assert tiny_cv(tiny_data, wd) == 0
    split = (wd / "folds.csv").read_bytes()
    assert "saved split" not in capsys.readouterr().out
    assert tiny_cv(tiny_data, wd, "--seed", "5", "--run", "s5") == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "warning:" in out and "made with seed 0, not --seed 5; it is kept" in out
    assert (wd / "folds.csv").read_bytes() == split


def test_report_on_an_unfinished_run_names_the_missing_folds(tiny_data, tmp_path, capsys):
    wd = tmp_path / "wd"
    assert tiny_cv(tiny_data, wd, "--models", "image,audio") == 0
    (wd / "r" / "audio" / "fold1.npz").unlink()
    capsys.readouterr()
    assert main(["report", "--workdir", str(wd), "--run", "r", "--max-rows", "60"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "run 'r' is unfinished: audio fold(s) 1 of 2 missing" in out
    assert json.loads((wd / "r" / "report" / "report.json").read_text())["missing"] == {"audio": [1]}


@pytest.mark.parametrize(
    "lines, needle",
    [
        (["0,1", "7,2", "7,3"], "(first 7)"),  # a duplicate row_id
        (["0,1", "1,12", "2,3"], "(first at row_id 1: 12)"),  # a label out of range
    ],
)
def test_error_messages_print_plain_numbers_not_numpy_reprs(tiny_data, capsys, lines, needle):
    ids = np.loadtxt(tiny_data / "y_train.csv", delimiter=",", skiprows=1, dtype=np.int64)
    body = "\n".join(lines + [f"{i},{label}" for i, label in ids[len(lines) :]])
    (tiny_data / "y_train.csv").write_text("row_id,label\n" + body + "\n")
    assert main(["cv", "--data", str(tiny_data), "--workdir", str(tiny_data.parent / "wd")]) == 2
    line = one_error_line(capsys, needle)
    assert "np." not in line


def test_temp_files_left_by_a_killed_command_are_removed_and_fresh_ones_kept(tmp_path):

    from competition.store.atomic import remove_stale_temp_files

    run = tmp_path / "run"
    (run / "fusion").mkdir(parents=True)
    stale, fresh = run / "fusion" / ".fold0.npz.abc123.tmp", run / ".config.json.def456.tmp"
    keep = run / "fusion" / "fold0.npz"  # a finished artifact: never touched, however old
    for f in (stale, fresh, keep):
        f.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(keep, (old, old))
    assert remove_stale_temp_files(run) == 1
    assert not stale.exists() and fresh.exists() and keep.exists()  # fresh: maybe a concurrent command's write
