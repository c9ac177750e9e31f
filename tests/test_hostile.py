"""Issue 14: what a hostile user found. Each case is one `error:` line and exit 2 (or the documented recovery),
never a traceback, a silent wrong result or a lost file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from run import main

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
