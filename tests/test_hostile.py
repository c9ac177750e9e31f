"""Issue 14: what a hostile user found. Each case is one `error:` line and exit 2 (or the documented recovery),
never a traceback, a silent wrong result or a lost file."""

from __future__ import annotations

from pathlib import Path

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
