"""cv on a real distributed.LocalCluster (2 worker processes, 1 thread each): the same out-of-fold logits as local
processes, with the files written by the workers (shared) or returned to the client with a worker killed mid-run."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from competition.cli import main
from competition.config import load_config, to_toml
from competition.data.load import load_competition
from competition.store.loading import load_run
from competition.train import dask as cluster_module
from competition.train.cv import _parameter_count, run_cv
from competition.train.dask import DaskExecutor
from competition.train.unit import CVJob, train_unit
from competition.utils.errors import UserError

distributed = pytest.importorskip("distributed")

TINY = {"epochs": 1, "folds": 2, "batch_size": 32, "workers": 2, "device": "cpu", "models": "image,audio"}


@pytest.fixture(scope="module")
def local_cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as lc:
        yield lc


@pytest.fixture(scope="module")
def local_oof(tiny_src, tmp_path_factory):
    """The tiny run through today's local processes: the reference."""
    wd = tmp_path_factory.mktemp("local")
    run_cv(load_config(None, TINY | {"workers": 1}), tiny_src, wd, "r", quiet=True)  # workers: no change in the OOF
    return load_run(wd / "r", 240).oof


def assert_same_oof(run_dir: Path, reference: dict[str, np.ndarray]) -> None:
    oof = load_run(run_dir, 240).oof
    assert sorted(oof) == sorted(reference)
    for m in reference:
        assert np.array_equal(oof[m], reference[m]), m


def test_cli_with_shared_artifacts_gives_the_local_oof(local_cluster, local_oof, tiny_src, tmp_path, capsys):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(to_toml(load_config(None, TINY).to_dict()))  # the local reference's recipe
    args = ["--data", str(tiny_src), "--workdir", str(tmp_path), "--config", str(recipe), "--run", "r"]
    assert main(["cv", *args, "--scheduler", local_cluster.scheduler_address, "--artifacts", "shared"]) == 0
    out = capsys.readouterr().out
    assert "the Dask cluster at tcp://" in out and "OOF F1" in out
    assert_same_oof(tmp_path / "r", local_oof)


class Progress:
    """Records what the live display would show."""

    def __init__(self):
        self.epochs, self.trained = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def epoch(self, event):
        self.epochs.append((event.model, event.fold, event.planned, event.row))

    def unit_trained(self, result):
        self.trained.append((result.model, result.fold))


def _dies_once(marker: str, log: str, run_dir: str, target: tuple[str, int], job, model, fold, *rest):
    """unit_task, but the first time through ``target`` it notes the finished fold files and kills its worker."""
    with open(log, "a") as f:
        f.write(f"{model} {fold}\n")
    if (model, fold) == target and not os.path.exists(marker):
        finished = {str(p): p.stat().st_mtime_ns for p in Path(run_dir).rglob("fold*.npz")}
        Path(marker).write_text(json.dumps(finished))
        os.kill(os.getpid(), signal.SIGKILL)
    from competition.train import dask as cluster  # on the worker: the real one

    return cluster.unit_task(job, model, fold, *rest)


def test_cluster_run_with_a_worker_killed_mid_run_gives_the_local_oof(
    local_cluster, local_oof, tiny_src, tmp_path, monkeypatch
):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import this test module
    marker, log = tmp_path / "killed.json", tmp_path / "calls.log"
    killer = functools.partial(_dies_once, str(marker), str(log), str(tmp_path / "r"), ("image", 1))  # the last unit
    monkeypatch.setattr(cluster_module, "unit_task", killer)
    progress = Progress()
    monkeypatch.setattr(cluster_module, "CVProgress", lambda total, planned: progress)
    with DaskExecutor(local_cluster.scheduler_address) as cl:
        result = run_cv(load_config(None, TINY), tiny_src, tmp_path, "r", executor=cl)
    assert sorted(progress.trained) == [("audio", 0), ("audio", 1), ("image", 0), ("image", 1)]
    assert progress.epochs and all(e[2] == 1 and "val_macro_f1" in e[3] for e in progress.epochs)  # worker events
    finished_before = json.loads(marker.read_text())  # a worker did die
    calls = log.read_text().splitlines()
    assert calls.count("image 1") == 2  # killed, then trained again
    assert set(calls) == {f"{m} {k}" for m in ("image", "audio") for k in (0, 1)}
    for path, mtime in finished_before.items():  # units written before the death are not trained again
        assert Path(path).stat().st_mtime_ns == mtime, path
    assert_same_oof(result.run_dir, local_oof)
    assert not list(tmp_path.rglob("*.claim")) and not list(tmp_path.rglob("*.tmp"))
    assert all((result.run_dir / m / f"fold{k}.pt").is_file() for m in ("image", "audio") for k in (0, 1))


def unit_settings() -> dict:
    """What a unit's training thread runs with: torch's per-thread state and the process's malloc behaviour."""
    import resource

    import torch

    def touch_8mib() -> None:
        x = torch.empty(2 << 20)  # 8 MiB: 2048 pages
        x.fill_(1.0)
        del x

    touch_8mib()  # where glibc's sliding mmap threshold is on, this raises it: the next blocks are reused
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    for _ in range(10):
        touch_8mib()
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before
    return {
        "intra-op threads": torch.get_num_threads(),  # OpenMP's count is per thread
        "inter-op threads": torch.get_num_interop_threads(),
        "denormals kept": torch.tensor([1e-39]).mul(1.0).item() != 0,  # set_flush_denormal is per thread
        "grad enabled": torch.is_grad_enabled(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "mkldnn": torch.backends.mkldnn.enabled,
        "matmul precision": torch.get_float32_matmul_precision(),
        "default dtype": str(torch.get_default_dtype()),
        "cpu affinity": sorted(os.sched_getaffinity(0)),
        "8 MiB blocks faulted in afresh": faults > 10 * 2048 // 2,  # mmap/munmap per block (2x slower units)
        "stack sampled by a profiler": _profiler_sampling(),  # a worker's, 100 times a second (1.2x slower units)
    }


def _profiler_sampling() -> bool:
    """Whether a Dask worker's statistical profiler samples this thread now (never in a local unit)."""
    try:
        pc = distributed.get_worker().periodic_callbacks.get("profile")
    except ValueError:  # not inside a worker
        return False
    return pc is not None and pc.is_running()


class SettingsProbe:
    """A unit's event sink that records ``unit_settings()`` from inside its first epoch, in its training thread."""

    def __init__(self, path: str):
        self.path = path

    def put(self, event) -> None:
        if not os.path.exists(self.path):
            Path(self.path).write_text(json.dumps(unit_settings()))


def test_a_worker_trains_a_unit_with_the_settings_of_a_local_unit(local_cluster, tiny_src, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    comp, cfg = load_competition(tiny_src), load_config(None, TINY)
    fold_of = np.arange(comp.n_train) % 2
    job = CVJob(comp, fold_of, cfg, tmp_path / "local", "cpu")
    train_unit(job, "audio", 0, 1, SettingsProbe(str(tmp_path / "l.json")))
    with distributed.Client(local_cluster.scheduler_address, set_as_default=False) as client:
        task = cluster_module.unit_task, dataclasses.replace(job, run_dir=tmp_path / "worker"), "audio", 0, False
        client.submit(*task, SettingsProbe(str(tmp_path / "w.json")), pure=False).result()
        profiling = client.run(lambda dask_worker: dask_worker.periodic_callbacks["profile"].is_running())
    local, worker = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("l", "w"))
    assert worker == local
    assert local["intra-op threads"] == 1 and not local["8 MiB blocks faulted in afresh"]
    assert all(profiling.values()), profiling  # paused for the unit only


def test_the_costliest_units_start_first_one_on_each_worker(local_cluster, tiny_src, tmp_path):
    """As in local processes: every worker holds the data before the units are submitted, so the first units go one
    to each worker in cost order (with one holder they all queued there and work stealing reordered them)."""
    cfg = load_config(None, TINY)
    with DaskExecutor(local_cluster.scheduler_address) as cl, distributed.get_task_stream(cl.client) as stream:
        run_cv(cfg, tiny_src, tmp_path, "r", quiet=True, executor=cl)
    units = [t for t in stream.data if "-fold" in str(t["key"])]
    assert len(units) == 4
    units.sort(key=lambda t: min(s["start"] for s in t["startstops"] if s["action"] == "compute"))
    costliest = max(cfg.models, key=_parameter_count)  # cv's own cost order
    # each worker's first unit, not the first two to start: a worker slow to start its first unit (loading torch on a
    # loaded machine) may see the other finish a tiny unit and start its next one before it
    first: dict[str, dict] = {}
    for t in units:
        first.setdefault(t["worker"], t)
    assert len(first) == 2
    assert all(str(t["key"]).startswith(f"cv-{costliest}-fold") for t in first.values()), [t["key"] for t in units]


def test_bad_scheduler_address_is_one_line_exit_2(tiny_data, tmp_path, capsys):
    for address, problem in [("nosuchproto://host:1", "unknown address scheme"), ("tcp://127.0.0.1:9", "refused")]:
        args = ["--data", str(tiny_data), "--workdir", str(tmp_path / "wd"), "--scheduler", address]
        assert main(["cv", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --scheduler {address}: cannot connect") and problem in err, err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "wd").exists()  # refused before any file is written


def test_missing_dask_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(UserError, match=r"pip install -e '\.\[dask\]'"), DaskExecutor("tcp://127.0.0.1:8786"):
        pass


class FakeLibc:
    """Records the allocator calls of ``local_malloc``."""

    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))

    def malloc_trim(self, pad):
        self.calls.append(("trim", pad))


def test_back_to_back_units_keep_their_heap_and_an_idle_worker_gets_its_malloc_settings_back(monkeypatch):
    from competition.train import malloc

    libc = FakeLibc()
    monkeypatch.setattr(malloc, "_glibc", lambda: libc)
    monkeypatch.setattr(malloc, "_start_environ", lambda: {"MALLOC_TRIM_THRESHOLD_": "65536"})  # a nanny's worker
    monkeypatch.setattr(malloc, "RESTORE_AFTER", 0.3)
    mmap, trim = malloc.M_MMAP_THRESHOLD, malloc.M_TRIM_THRESHOLD
    local = [("mallopt", mmap, malloc.MMAP_MAX), ("mallopt", trim, malloc.TRIM_MAX)]
    for _ in range(2):  # two units in turn: the heap stays (no trim between them)
        with malloc.local_malloc():
            pass
    assert libc.calls == local * 2
    deadline = time.time() + 10
    while ("trim", 0) not in libc.calls and time.time() < deadline:
        time.sleep(0.05)
    assert libc.calls[4:] == [("mallopt", trim, 65536), ("mallopt", mmap, 128 << 10), ("trim", 0)]
