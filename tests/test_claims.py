"""Unit claims and the run lock: one claimer wins, dead owners' claims are taken over, config.json updates
from concurrent commands all land, and a cv run waits for a unit another command trains."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import threading
import time

from competition.config import load_config
from competition.data.load import load_competition
from competition.store.claims import UnitClaims, read_claim, start_ticks
from competition.store.runs import add_to_run_config, claim_path, read_run_config, unit_path
from competition.train import cv

FORK = multiprocessing.get_context("fork")


def write_claim(run_dir, model, fold, host, pid, ticks):
    path = claim_path(run_dir, model, fold)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "start_ticks": ticks}))
    return path


def _claim_once(run_dir, barrier, results):
    barrier.wait()
    results.put(UnitClaims(run_dir).claim("image", 0))  # never released: the winner keeps it


def test_of_concurrent_claimers_one_wins(tmp_path):
    for attempt in range(3):
        run_dir = tmp_path / f"r{attempt}"
        barrier, results = FORK.Barrier(4), FORK.Queue()
        procs = [FORK.Process(target=_claim_once, args=(run_dir, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=30)
        assert sorted(results.get(timeout=5) for _ in procs) == [False, False, False, True]


def test_claim_of_a_live_owner_is_kept_and_a_dead_owners_is_taken_over(tmp_path):
    host = socket.gethostname()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        write_claim(tmp_path, "image", 0, host, sleeper.pid, start_ticks(sleeper.pid))
        assert not UnitClaims(tmp_path).claim("image", 0)
        # the same pid with another start time is a reused pid: its owner is dead
        write_claim(tmp_path, "image", 1, host, sleeper.pid, "1")
        assert UnitClaims(tmp_path).claim("image", 1)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert UnitClaims(tmp_path).claim("image", 0)  # its owner has exited
    info, _ = read_claim(claim_path(tmp_path, "image", 0))
    assert (info["host"], info["pid"]) == (host, os.getpid())


def test_claim_of_another_host_is_judged_by_its_heartbeat(tmp_path):
    path = write_claim(tmp_path, "audio", 0, "elsewhere", 1, "5")
    claims = UnitClaims(tmp_path, stale_after=60)
    assert not claims.claim("audio", 0)
    os.utime(path, (time.time() - 120, time.time() - 120))  # no heartbeat for 2 minutes
    assert claims.claim("audio", 0)


def test_held_claims_are_touched_and_released_on_exit(tmp_path):
    with UnitClaims(tmp_path, heartbeat=0.05) as claims:
        assert claims.take([("image", 0), ("image", 1)], lambda m, k: k == 1) == ([("image", 0)], [])
        path = claim_path(tmp_path, "image", 0)
        os.utime(path, (0, 0))
        time.sleep(0.5)
        assert path.stat().st_mtime > time.time() - 5
        other = UnitClaims(tmp_path)
        assert other.take([("image", 0)], lambda m, k: False) == ([], [("image", 0)])
    assert not path.exists()


def _add_model(run_dir, comp, model, barrier):
    barrier.wait()
    add_to_run_config(run_dir, load_config(None, {"models": model, "folds": 2}), comp, "split")


def test_concurrent_commands_adding_models_keep_every_model(tiny_data, tmp_path):
    comp = load_competition(tiny_data)
    models = ["fusion", "image", "audio"]
    for attempt in range(4):
        run_dir = tmp_path / f"r{attempt}"
        barrier = FORK.Barrier(len(models))
        procs = [FORK.Process(target=_add_model, args=(run_dir, comp, m, barrier)) for m in models]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        assert read_run_config(run_dir)["config"]["models"] == sorted(models)


def test_cv_waits_for_a_unit_another_command_trains_and_takes_it_when_that_dies(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(cv, "CLAIM_POLL", 0.1)
    run_dir = tmp_path / "r"
    sleeper = subprocess.Popen(["sleep", "60"])
    write_claim(run_dir, "image", 1, socket.gethostname(), sleeper.pid, start_ticks(sleeper.pid))
    cfg = load_config(None, {"epochs": 1, "folds": 2, "batch_size": 32, "workers": 1, "models": "image"})
    done = []
    thread = threading.Thread(target=lambda: done.append(cv.run_cv(cfg, tiny_data, tmp_path, "r", quiet=True)))
    thread.start()
    try:
        deadline = time.time() + 60
        while not unit_path(run_dir, "image", 0).exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        assert thread.is_alive() and not unit_path(run_dir, "image", 1).exists()  # waiting, not training it
    finally:
        sleeper.kill()
        sleeper.wait()
    thread.join(timeout=60)
    assert done and len(done[0].per_fold) == 2 and unit_path(run_dir, "image", 1).exists()
    assert not list(run_dir.rglob("*.claim"))
