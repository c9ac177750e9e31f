"""Tune's study: its storage (a journal file or an RDB URL), its identity (what it was made for, checked on every
start), and the trials of dead workers (found through /proc on this machine) marked FAIL.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from competition.config import Config, load_config
from competition.data.load import Competition
from competition.store.claims import owner_alive, start_ticks
from competition.tuning.search_space import SearchSpace
from competition.utils.errors import UserError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A RUNNING trial without an owner is one whose worker died between asking for it and claiming it.
UNCLAIMED_GRACE = timedelta(minutes=2)


# --------------------------------------------------------------------------- the study's settings


@dataclass
class Tuning:
    """Everything a worker process needs to run trials of one study (picklable)."""

    data_dir: Path
    workdir: Path
    cfg: Config  # the base recipe; each trial overrides the sampled keys
    model: str
    study: str
    storage: str | None  # None: the journal file under the study folder
    search_space: SearchSpace
    trial_folds: int  # trials evaluate folds 0..trial_folds-1 of the saved split
    trials: int  # the study's target number of finished (complete or pruned) trials
    timeout: float | None = None
    prune: bool = True
    processes: int = 1  # trial processes on this machine (the --workers flag of tune)
    threads: int = 1  # torch threads per worker: 1, as in cv, so a trial's scores are those cv gets

    @property
    def study_dir(self) -> Path:
        return self.workdir / "tune" / self.study

    @property
    def journal(self) -> Path:
        return self.study_dir / "study.journal"

    def trial_config(self, params: dict[str, Any]) -> Config:
        """The recipe a trial with ``params`` trains (and, for the best trial, the one written out)."""
        return load_config(None, self.cfg.to_dict() | params | {"models": [self.model]})


def identity(t: Tuning, comp: Competition, split_fp: str) -> dict[str, Any]:
    """What a study was made for; a rerun must match it (stored as the study's user attribute ``tune``)."""
    values = {
        "model": t.model,
        "data_fingerprint": comp.fingerprint,
        "split_fingerprint": split_fp,
        "config": t.cfg.result_dict(),
        "space": t.search_space.params,
        "trial_folds": t.trial_folds,
        "data": str(comp.root),
    }
    return json.loads(json.dumps(values))  # as it reads back from the storage (tuples become lists)


def claim_study(study: optuna.Study, mine: dict[str, Any], where: str) -> None:
    """Check that an existing study was made for these settings; stamp a new one with them.

    The settings are one user attribute, written in one storage call, so a worker starting at the same time
    sees all of them or none; the re-read after stamping catches a concurrent start with other settings.
    """
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise UserError(f"{where}: study {study.study_name!r} minimises; fix: pass --study NEW_NAME")
    saved = study.user_attrs.get("tune")
    if saved is None:
        if study.trials:
            raise UserError(f"{where}: study {study.study_name!r} was not made by run.py tune; fix: --study NEW_NAME")
        study.set_user_attr("tune", mine)
        saved = study.user_attrs["tune"]
    diffs = []
    for k, v in mine.items():
        old = saved.get(k)
        if k == "config" and isinstance(old, dict):  # a key added to Config later defaults to what it computed
            old = json.loads(json.dumps(Config().result_dict())) | old
        if k == "data" or old == v:  # the folder's path may differ (another machine); its fingerprint may not
            continue
        if isinstance(v, dict) and isinstance(old, dict):  # name the config keys / parameters that differ
            diffs.append(f"{k} differs in {', '.join(sorted(x for x in set(v) | set(old) if old.get(x) != v.get(x)))}")
        else:
            diffs.append(f"{k}: {old!r} -> {v!r}")
    if diffs:
        raise UserError(
            f"{where}: study {study.study_name!r} was made for other settings ({'; '.join(diffs)}; "
            f"its data: {saved.get('data')}); fix: pass --study NEW_NAME, or the study's --data/--model/--config"
        )


# --------------------------------------------------------------------------- storage


def redact(url: str) -> str:
    """The URL without its password, for error messages."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _driver_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg 3, the
    ``postgres`` extra installs psycopg2."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    for module, scheme in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return scheme + url[len("postgresql") :]
    raise UserError(
        "--storage: no PostgreSQL driver installed; fix: python3 -m pip install -e '.[postgres]' (psycopg2-binary)"
    )


def open_storage(url: str | None, journal: Path) -> BaseStorage:
    """The default journal file (``journal``), or the RDB at ``url`` (sqlite:///..., postgresql://...)."""
    if url is None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        # The journal file is append-only under a file lock: safe for concurrent workers on one machine,
        # where SQLite raises "database is locked" once several processes write at once.
        return JournalStorage(JournalFileBackend(str(journal)))
    if "://" not in url:
        raise UserError(f"--storage {url}: not a database URL; fix: use sqlite:///path.db or postgresql://user@host/db")
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    connect = {"connect_timeout": 10} if url.startswith("postgresql") else {"timeout": 60} if "sqlite" in url else {}
    driver_url = _driver_url(url)
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # The heartbeat marks trials of workers that died (killed, machine lost) FAIL after the grace period.
                return RDBStorage(
                    driver_url, engine_kwargs={"connect_args": connect}, heartbeat_interval=60, grace_period=180
                )
        except Exception as e:  # sqlalchemy's connection, URL and driver errors, raised from deep inside optuna
            if isinstance(e, (IntegrityError, ProgrammingError)) and attempt < 2:
                # Workers starting together on an empty database race in CREATE TABLE IF NOT EXISTS, which
                # PostgreSQL does not make atomic ("duplicate key ... pg_type_typname_nsp_index"): retry.
                time.sleep(1 + attempt)
                continue
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"--storage {redact(url)}: cannot open the study storage ({reason}); "
                "fix: check the URL, that the server is running and reachable, and the database exists"
            ) from None


# --------------------------------------------------------------------------- stale trials


def owner() -> str:
    """This process as a trial's worker: host, pid and process start time."""
    return f"{socket.gethostname()}:{os.getpid()}:{start_ticks(os.getpid())}"


def _owner_alive(owner: str) -> bool | None:
    """True or False for a worker of this machine; None when the worker ran on another machine."""
    host, pid, ticks = owner.rsplit(":", 2)
    if host == socket.gethostname() and int(pid) == os.getpid():
        return False  # this process is starting up, so it runs no trial yet: a pid reused after a restart
    return owner_alive(host, int(pid), ticks)


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker is dead (this machine's), so no trial stays RUNNING forever.

    Each trial records its worker (host, pid, process start time) when it starts; a worker of another
    machine is left to the RDB storage's heartbeat.
    """
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("worker")
        if owner is None:
            dead = t.datetime_start is not None and datetime.now() - t.datetime_start > UNCLAIMED_GRACE
        else:
            dead = _owner_alive(owner) is False
        if dead:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    return failed
