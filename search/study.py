"""Opening Optuna studies in an RDB storage, checked against what the user asked for.

One retry mechanism serves three ways a trial can die mid-training: Ctrl-C in this process, a
killed process on this machine (found at start-up by its dead pid), and a worker elsewhere that
stopped sending heartbeats (Optuna's stale-trial check). Each time the trial is marked FAIL and a
WAITING copy with the same parameters is queued, so its configuration is tried again.
"""
from __future__ import annotations

import os
import random
import socket
import time
from pathlib import Path
from typing import Sequence

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from fmnist.errors import UsageError, first_line


DEFAULT_STORAGE = "sqlite:///studies/fmnist.db"
DEFAULT_STUDY = "fmnist"

# name -> (direction, what it measures)
OBJECTIVES = {
    "acc": ("maximize", "validation accuracy"),
    "params": ("minimize", "trainable parameters"),
    "flops": ("minimize", "FLOPs per image, forward"),
    "latency": ("minimize", "measured inference ms per image"),
}
SAMPLERS = ("tpe", "nsga2", "random")
HEARTBEAT_S, GRACE_S, MAX_RETRY = 30, 120, 3
SCHEMA_ATTEMPTS = 8


def parse_objectives(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    valid = ", ".join(OBJECTIVES)
    if not names:
        raise UsageError(f"--objective: name at least one of {valid}")
    for n in names:
        if n not in OBJECTIVES:
            raise UsageError(f"--objective: unknown objective {n!r} (valid: {valid})")
    if len(set(names)) != len(names):
        raise UsageError(f"--objective: {text!r} names an objective twice")
    return names


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue the failed ``trial``'s configuration again (at most MAX_RETRY times per configuration).

    Like Optuna's RetryHeartbeatStaleTrialCallback, but carrying over only what identifies the
    candidate (its parameters, and the preset name of an enqueued seed), not the measurements of
    the attempt that died.
    """
    history = list(trial.system_attrs.get("retry_history", [])) + [trial.number]
    if len(history) > MAX_RETRY:
        return
    study.add_trial(optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k == "preset"},
        system_attrs={"failed_trial": history[0], "retry_history": history}))


# What a worker meets when others create the same new database at the same moment (optuna#4621):
# "table already exists" (OperationalError, ProgrammingError), a duplicate alembic_version row or
# PostgreSQL type (IntegrityError), Optuna's wrapper of those, or its version check reading a
# revision not stamped yet (AssertionError). Told apart by type, not by message: each is retried,
# and the next attempt checks what the winner has made. A bad URL or a missing driver is not.
SCHEMA_RACE = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError,
               optuna.exceptions.StorageInternalError, AssertionError)  # not DatabaseError: a corrupt file


def open_storage(url: str) -> RDBStorage:
    """An RDB storage with heartbeats; a bad or unreachable URL is one line naming it."""
    engine_kwargs = {}
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is None:
            raise UsageError(f"--storage {url}: an in-memory SQLite database would lose the study when "
                              f"the process ends; give a file, e.g. {DEFAULT_STORAGE}")
        if url == DEFAULT_STORAGE:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.parent.is_dir():
            raise UsageError(f"--storage {url}: folder {path.parent} does not exist")
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for other workers' writes
    rng = random.Random()  # jitter, so that racing workers do not retry in lockstep
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
                                 grace_period=GRACE_S, heartbeat_stale_trial_callback=retry)
            if url.startswith("sqlite"):
                _lock_on_begin(storage.engine)
            return storage
        except SCHEMA_RACE as e:
            if attempt + 1 < SCHEMA_ATTEMPTS:
                time.sleep(min(2.0, 0.1 * 2 ** attempt) * (0.5 + rng.random()))
                continue
            raise UsageError(f"--storage {url}: cannot open ({first_line(e)})") from None
        except Exception as e:  # sqlalchemy's URL and driver errors, Optuna's version check: cannot open
            raise UsageError(f"--storage {url}: cannot open ({first_line(e)})") from None
    raise AssertionError("unreachable")


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory one or another database."""
    if not url.startswith("sqlite"):
        return None
    rest = url.split(":///", 1)[1] if ":///" in url else ""
    rest = rest.split("?", 1)[0]
    return None if rest in ("", ":memory:") else Path(rest)


def sqlite_files(url: str) -> list[Path]:
    """The files a SQLite storage lives in (none for another database): what must never be replaced."""
    path = sqlite_path(url)
    return [] if path is None else [path, path.with_name(path.name + "-journal"),
                                    path.with_name(path.name + "-wal")]


MAX_NAME = 128


def check_name(name: str) -> str:
    """A study name a person can type and see: not empty, printable, at most MAX_NAME characters."""
    if not name.strip():
        raise UsageError("--study: the name is empty")
    if len(name) > MAX_NAME:
        raise UsageError(f"--study: the name is {len(name):,} characters long; at most {MAX_NAME}")
    if not name.isprintable():
        raise UsageError(f"--study {name!r}: the name holds control characters")
    return name


def folder_safe(name: str) -> str:
    """``name`` as one folder name (the default export folder is exports/NAME)."""
    if name in (".", "..") or "/" in name or "\\" in name:
        raise UsageError(f"--study {name!r}: not usable as a folder name under exports/; give --out")
    return name


def _lock_on_begin(engine: sqlalchemy.engine.Engine) -> None:
    """Every SQLite transaction takes the write lock when it begins (BEGIN IMMEDIATE).

    Optuna pops an enqueued trial by reading it as WAITING and then setting it RUNNING under
    SELECT ... FOR UPDATE, which SQLite ignores: two workers could both read WAITING and both run
    the trial (optuna#4621). Holding the lock from the read on makes the pop atomic. Transactions
    are short, and other workers wait for the lock (the connection's timeout), so this costs little.
    """
    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # pysqlite would otherwise BEGIN (deferred) itself

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners would still begin deferred


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # Multi-objective TPE is univariate by default; multivariate with groups models the
        # conditional space (block i's parameters exist only in deeper nets) jointly.
        return optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UsageError(f"--sampler: must be one of {', '.join(SAMPLERS)}, got {name!r}")


def check_study(storage: RDBStorage, name: str, objectives: Sequence[str],
                sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study | None:
    """The existing study ``name`` (None if there is none); refuses one with other objectives."""
    if name not in set(optuna.get_all_study_names(storage)):
        return None
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    for _ in range(SCHEMA_ATTEMPTS - 1):
        if study.metric_names:
            break
        time.sleep(0.2)  # a worker that has just created it names the objectives a moment later
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    found = tuple(study.metric_names or ())
    if found != tuple(objectives):
        raise UsageError(
            f"study {name!r} optimizes {','.join(found) or 'unnamed objectives'}, not "
            f"{','.join(objectives)}; use another --study (e.g. --study {name}-{'-'.join(objectives)})")
    return study


def open_study(storage: RDBStorage, name: str, objectives: Sequence[str],
               sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """Load the study ``name`` or create it; refuse one that optimizes other objectives."""
    study = check_study(storage, name, objectives, sampler)
    if study is not None:
        return study
    try:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    directions=[OBJECTIVES[o][0] for o in objectives])
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it since the check
        return check_study(storage, name, objectives, sampler)
    study.set_metric_names(list(objectives))
    return study


def load_existing(storage: RDBStorage, name: str) -> optuna.Study:
    """A study that must exist already (for show and export)."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(optuna.get_all_study_names(storage))
        raise UsageError(f"--study {name!r}: no such study in this storage "
                          f"(studies: {', '.join(names) or 'none'})") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_worker(trial: optuna.Trial) -> None:
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")


def reclaim_orphans(study: optuna.Study, storage: RDBStorage) -> list[int]:
    """Fail and retry RUNNING trials whose worker process on this machine is gone."""
    host = socket.gethostname()
    reclaimed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                retry(study, storage.get_trial(t._trial_id))
                reclaimed.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker got there first
    return reclaimed
