"""The Optuna RDB storage a study lives in: opened once per process, safe for racing workers.

SQLite, PostgreSQL and MySQL URLs. Workers that start together on a new database race to create
its tables; the losers retry. SQLite transactions take the write lock when they begin, so that
an enqueued trial is popped by one worker only.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage

from fmnist.errors import UsageError, first_line

from .reclaim import retry

DEFAULT_STORAGE = "sqlite:///studies/fmnist.db"
HEARTBEAT_S, GRACE_S = 30, 120
SCHEMA_ATTEMPTS = 8


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
