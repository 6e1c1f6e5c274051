"""The Optuna RDB storage a study lives in: opened once per process, safe for racing workers.

SQLite, PostgreSQL and MySQL URLs. Workers that start together on a new database race to create
its tables; the losers retry. SQLite transactions take the write lock when they begin, so that
an enqueued trial is popped by one worker only.
"""
from __future__ import annotations

import functools
import logging
import random
import re
import sys
import time
import urllib.parse
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from fmnist.errors import UsageError, first_line

from search import signals
from search.study import optuna_api, record
from search.study.reclaim import retry

DEFAULT_STORAGE = "sqlite:///studies/fmnist.db"
STORAGE_ENV = "FMNIST_STORAGE"  # a URL with a password stays off the command line (and out of ps)
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


class TrackedStorage(RDBStorage):
    """An RDB storage that knows which trials this process holds: created or taken from the queue
    as RUNNING, and not ended yet. Both happen inside ``signals.held()``, so that an interrupt
    never leaves a trial RUNNING that this process does not know it holds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.held: set[int] = set()

    def _create_new_trial(self, study_id, template_trial=None):
        with signals.held():
            trial = super()._create_new_trial(study_id, template_trial)
            if trial.state == TrialState.RUNNING:
                self.held.add(optuna_api.trial_id(trial))
        return trial

    def set_trial_state_values(self, trial_id, state, values=None):
        with signals.held():
            changed = super().set_trial_state_values(trial_id, state, values)
            if state == TrialState.RUNNING and changed:
                self.held.add(trial_id)
            elif state.is_finished():
                self.held.discard(trial_id)
        return changed


def held_trials(study: optuna.Study) -> set[int]:
    """Ids of the trials this process holds in the study's storage (empty for other storages)."""
    return getattr(optuna_api.backend(study), "held", set())


class PatientStorage(TrackedStorage):
    """An RDB storage on a database server that rides out an outage: each call waits for the
    server to come back (connections are checked before use, so a dead pooled one is replaced).
    The heartbeat goes through it too, so its thread survives; a trial that finished during the
    outage is recorded when the server is back. Not for SQLite: a file does not go away, and its
    errors (a full disk, a locked file) must be said at once. A write whose answer was lost with
    the connection is sent again, which for a new trial can leave one extra trial behind."""


for _name in optuna_api.STORAGE_METHODS:  # every call a worker or the dashboard makes
    setattr(PatientStorage, _name, patient(getattr(TrackedStorage, _name)))


def shown(url: str) -> str:
    """The URL as it may be printed or written: its password replaced by ***."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: hide whatever stands between user: and @
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def scrub(text: str, url: str) -> str:
    """``text`` with the URL's password (as given, and as SQLAlchemy escapes it) replaced by ***."""
    secrets = set()
    try:
        password = sqlalchemy.engine.make_url(url).password
        if password:
            secrets |= {str(password), urllib.parse.quote(str(password), safe="")}
    except Exception:
        pass
    # As typed: up to the first @, and (an @ left unescaped in it) up to the last @ before the host
    for pattern in (r"://[^:/@]*:([^@]*)@", r"://[^:/@]*:(.*)@[^@/]*(?:/|$)"):
        found = re.search(pattern, url)
        if found and found.group(1):
            secrets |= {found.group(1), urllib.parse.unquote(found.group(1))}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _cannot_open(url: str, e: BaseException) -> UsageError:
    return UsageError(f"--storage {shown(url)}: cannot open ({scrub(first_line(e), url)})")


# Optuna's own tables (and Alembic's, which stamps their version), and ours (search.study.claims).
def _known_tables() -> set[str]:
    return optuna_api.table_names() | {record.CLAIMS_TABLE}


def _table_names(url: str) -> set[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def tables(url: str, wait: bool = False) -> set[str]:
    """The tables the database at ``url`` holds (a SQLite file that does not exist holds none, and
    is not created). ``wait``: a server that cannot be reached is waited for, up to OUTAGE_S."""
    path = sqlite_path(url)
    if path is not None and not path.exists():
        return set()
    try:
        return (patient(_table_names) if wait and path is None else _table_names)(url)
    except Exception as e:
        raise _cannot_open(url, e) from None


def has_optuna_tables(found: set[str]) -> bool:
    return {"studies", "alembic_version"} <= found


def check_tables(url: str, found: set[str], create: bool) -> None:
    """Refuse a database that a study must not be written into, or (``create`` false) read from."""
    if create and sqlite_path(url) is not None and found - _known_tables():
        other = sorted(found - _known_tables())
        raise UsageError(f"--storage {shown(url)}: the database holds tables that are not Optuna's "
                         f"({', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); give studies a "
                         f"database of their own")
    if not create and not has_optuna_tables(found):
        raise UsageError(f"--storage {shown(url)}: holds no Optuna studies (no Optuna tables); nothing "
                         f"was changed")


def check_url(url: str) -> None:
    """Refuse, before anything is created, a URL that cannot hold a study."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is None:
            raise UsageError(f"--storage {url}: an in-memory SQLite database would lose the study when "
                             f"the process ends; give a file, e.g. {DEFAULT_STORAGE}")
        if url != DEFAULT_STORAGE and not path.parent.is_dir():
            raise UsageError(f"--storage {url}: folder {path.parent} does not exist")
        if path.exists() and not path.is_file():
            raise UsageError(f"--storage {url}: {path} is not a file")


class _PoolNotice(logging.Handler):
    """SQLAlchemy's pool logs a connection it could not reset or close (one the server lost in an
    outage the storage rides out) with a full traceback on stderr; a user needs one line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.urls: set[str] = set()  # whose passwords a driver's message might echo

    def emit(self, rec: logging.LogRecord) -> None:
        exc = rec.exc_info[1] if rec.exc_info else None
        why = first_line(str(exc)) if exc is not None else rec.getMessage()
        for url in self.urls:
            why = scrub(why, url)
        print(f"notice: the storage dropped a database connection the server had lost ({why})", file=sys.stderr)


@functools.cache
def _pool_notice() -> _PoolNotice | None:
    pool = logging.getLogger("sqlalchemy.pool")
    if pool.handlers:  # a program that configured logging for SQLAlchemy keeps its own
        return None
    notice = _PoolNotice()
    pool.addHandler(notice)
    pool.propagate = False
    return notice


def _quiet_pool(url: str) -> None:
    notice = _pool_notice()
    if notice is not None:
        notice.urls.add(url)


def open_storage(url: str, create: bool = True, wait: bool = False) -> RDBStorage:
    """An RDB storage with heartbeats; a bad or unreachable URL is one line naming it.

    ``create``: make Optuna's tables where the database has none (a search). A SQLite file holding
    tables of another application is refused: the study would be written among its data. Without
    ``create`` (show, export-best, the dashboard) nothing is created or migrated: a database
    without Optuna's tables is refused instead. ``wait``: a server that cannot be reached is waited
    for, up to OUTAGE_S, as a storage already open does (a worker of --workers, whose first worker
    reached the server a moment ago); without it, that is said at once (most likely a wrong URL)."""
    check_url(url)
    check_tables(url, tables(url, wait), create)
    engine_kwargs, kind = {"pool_pre_ping": True}, PatientStorage  # a server: check connections before use
    if url.startswith("sqlite"):
        kind = TrackedStorage
        if url == DEFAULT_STORAGE:
            sqlite_path(url).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for other workers' writes
    else:
        _quiet_pool(url)
    rng = random.Random()  # jitter, so that racing workers do not retry in lockstep
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            storage = (patient(kind) if wait and kind is PatientStorage else kind)(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                heartbeat_stale_trial_callback=retry, skip_table_creation=not create)
            if url.startswith("sqlite"):
                _lock_on_begin(storage.engine)
            return storage
        except SCHEMA_RACE as e:
            if attempt + 1 < SCHEMA_ATTEMPTS and not (wait and _connection_lost(e)):  # waited long enough
                time.sleep(min(2.0, 0.1 * 2 ** attempt) * (0.5 + rng.random()))
                continue
            raise _cannot_open(url, e) from None
        except Exception as e:  # sqlalchemy's URL and driver errors, Optuna's version check: cannot open
            raise _cannot_open(url, e) from None
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
