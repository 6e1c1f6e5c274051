"""The Optuna RDB storage a study lives in: opened once per process, safe for racing workers.

SQLite, PostgreSQL and MySQL URLs. Workers that start together on a new database race to create
its tables; the losers retry. SQLite transactions take the write lock when they begin, so that
an enqueued trial is popped by one worker only.
"""
from __future__ import annotations

import functools
import random
import time
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from fmnist.errors import UsageError, first_line

from .reclaim import retry

DEFAULT_STORAGE = "sqlite:///studies/fmnist.db"
HEARTBEAT_S = 30
SCHEMA_ATTEMPTS = 8


# What a worker meets when others create the same new database at the same moment (optuna#4621):
# "table already exists" (OperationalError, ProgrammingError), a duplicate alembic_version row or
# PostgreSQL type (IntegrityError), Optuna's wrapper of those, or its version check reading a
# revision not stamped yet (AssertionError). Told apart by type, not by message: each is retried,
# and the next attempt checks what the winner has made. A bad URL or a missing driver is not.
SCHEMA_RACE = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError,
               optuna.exceptions.StorageInternalError, AssertionError)  # not DatabaseError: a corrupt file


OUTAGE_S = 180  # how long a worker waits for a database server that went away before it gives up
# A trial whose heartbeat is older than this is failed as stale by other workers. Longer than the
# longest outage a worker rides out plus a beat and a retry's wait: a live worker's heartbeat
# resumes before then, so a trial is never failed under a worker that is still training it.
GRACE_S = OUTAGE_S + HEARTBEAT_S + 30


def _connection_lost(e: BaseException | None) -> bool:
    """The server could not be reached or dropped the connection (not a bad query, not a conflict)."""
    while e is not None:
        if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
                isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated):
            return True
        e = e.__cause__ or e.__context__
    return False


def patient(method):
    """``method`` (or any function) retried with backoff while the server is unreachable, up to OUTAGE_S."""
    @functools.wraps(method)
    def call(*args, **kwargs):
        deadline, delay = time.monotonic() + OUTAGE_S, 0.5
        while True:
            try:
                return method(*args, **kwargs)
            except Exception as e:
                if not _connection_lost(e) or time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(10.0, delay * 2)
    return call


class PatientStorage(RDBStorage):
    """An RDB storage on a database server that rides out an outage: each call waits for the
    server to come back (connections are checked before use, so a dead pooled one is replaced).
    The heartbeat goes through it too, so its thread survives; a trial that finished during the
    outage is recorded when the server is back. Not for SQLite: a file does not go away, and its
    errors (a full disk, a locked file) must be said at once. A write whose answer was lost with
    the connection is sent again, which for a new trial can leave one extra trial behind."""


# Every call a worker or the dashboard makes, the heartbeat's and the stale-trial check's included.
for _name in ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
              "get_study_id_from_name", "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
              "get_study_system_attrs", "get_all_studies", "create_new_trial", "set_trial_param",
              "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id", "get_trial_param",
              "get_trial_params", "get_trial_user_attrs", "get_trial_system_attrs", "set_trial_state_values",
              "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr", "get_trial",
              "get_all_trials", "get_n_trials", "get_best_trial", "record_heartbeat",
              # and those Optuna's cache in front of an RDB storage calls
              "_get_stale_trial_ids", "_create_new_trial", "_get_best_trial_id", "_get_trials", "_set_trial_param"):
    setattr(PatientStorage, _name, patient(getattr(RDBStorage, _name)))


def open_storage(url: str) -> RDBStorage:
    """An RDB storage with heartbeats; a bad or unreachable URL is one line naming it."""
    engine_kwargs, kind = {"pool_pre_ping": True}, PatientStorage  # a server: check connections before use
    if url.startswith("sqlite"):
        kind = RDBStorage
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
            storage = kind(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S,
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
