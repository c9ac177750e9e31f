"""Two ``run.py tune`` commands share one study on a real PostgreSQL server, as workers on two machines would.

``.ci/run`` installs the server from Debian's ``postgresql`` package; the fixture starts a throw-away cluster on
127.0.0.1 and a free port and stops it afterwards. Where the server cannot start the test fails, naming why.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import competition.tuning as tune


def _server_bin() -> Path:
    """The folder of the server binaries: Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH."""
    found = [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)]
    for pg_ctl in filter(None, found):
        if (Path(pg_ctl).resolve().parent / "initdb").exists():
            return Path(pg_ctl).resolve().parent
    pytest.fail("PostgreSQL server not found (no pg_ctl + initdb); fix: apt-get install postgresql (.ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """Start a PostgreSQL cluster in a temporary folder; yield the URL of an empty database; stop it."""
    bindir = _server_bin()
    as_user = []
    root = Path(tempfile.mkdtemp(prefix="tune-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the package's postgres user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(
                "running as root and there is no 'postgres' user to run the server as (Debian's package adds it)"
            )
        if shutil.which("runuser") is None:
            pytest.fail("running as root and runuser (util-linux) is missing: cannot start the server as postgres")
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    data, log = root / "data", root / "server.log"

    def run(*cmd) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *map(str, cmd)], capture_output=True, text=True, timeout=120)

    def fail(step: str, proc: subprocess.CompletedProcess) -> None:
        tail = log.read_text()[-2000:] if log.exists() else ""
        pytest.fail(f"PostgreSQL could not start ({step} failed): {proc.stderr.strip()[-2000:]}\n{tail}")

    try:
        proc = run(bindir / "initdb", "-D", data, "-U", "tune", "--auth=trust", "--no-sync")
        if proc.returncode:
            fail("initdb", proc)
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"  # socket in our folder, not /var/run
        proc = run(bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")
        if proc.returncode:
            fail("pg_ctl start", proc)
        proc = run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "tune", "optuna")
        if proc.returncode:
            fail("createdb", proc)
        yield f"postgresql://tune@127.0.0.1:{port}/optuna"
    finally:
        if data.exists():
            run(bindir / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.postgres
def test_two_workers_share_one_postgres_study(postgres_url, tiny_data, tmp_path, root):
    procs = []
    for machine in ("a", "b"):  # two commands, each with its own workdir, as on two machines
        argv = [
            sys.executable, "run.py", "tune", "--data", str(tiny_data), "--workdir", str(tmp_path / machine),
            "--folds", "2", "--epochs", "1", "--threads", "1", "--storage", postgres_url, "--study", "shared",
            "--trials", "6", "--out", str(tmp_path / machine / "best.toml"),
        ]  # fmt: skip
        procs.append(subprocess.Popen(argv, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]

    study = optuna.load_study(study_name="shared", storage=tune.open_storage(postgres_url, tmp_path / "unused"))
    trials = study.get_trials(deepcopy=False)
    # Every trial stored once: numbers 0..n-1 without gaps or repeats, one row each.
    assert [t.number for t in trials] == list(range(len(trials)))
    assert len({t._trial_id for t in trials}) == len(trials)
    # Exactly 6 finished trials (count and claim); a trial asked for in a race is FAIL with user attribute surplus.
    finished = {t.number for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert len(finished) == 6, [t.state for t in trials]
    assert all(t.user_attrs.get("surplus") for t in trials if t.number not in finished), [t.state for t in trials]
    # None lost: the trials the two commands report finishing are exactly the finished ones, each run by one of them.
    ran = [{int(n) for n in re.findall(r"^trial\s+(\d+)\s+(?:done|pruned)", out, re.M)} for out, _ in outputs]
    assert ran[0] and ran[1], "both commands should have run trials concurrently"
    assert not ran[0] & ran[1] and ran[0] | ran[1] == finished
