"""A trial to kill or stop, for the fault tests and bench/workers.py: one in training."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import optuna
import sqlalchemy
from optuna.trial import TrialState

from search.study import record
from search.study.reclaim import process_state
from search.study.storage import sqlite_path


def trial_in_training(url: str, proc: subprocess.Popen, max_flops: int, not_pid: int | None = None,
                      every: float = 0.2, within: float = 180) -> tuple[int, int, int] | None:
    """(pid of its worker, number, study id) of a trial of the search ``proc`` that is training:
    past the free checks (a candidate over ``max_flops`` is skipped, PRUNED, a moment later) and
    still running when looked at. None if there was none within ``within`` seconds."""
    storage, deadline = optuna.storages.RDBStorage(url), time.monotonic() + within
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            for s in storage.get_all_studies():
                for t in storage.get_all_trials(s._study_id, states=(TrialState.RUNNING,)):
                    pid = record.worker_of(t)[1]
                    if (pid and pid != not_pid and t.user_attrs.get(record.FLOPS, max_flops + 1) <= max_flops
                            and storage.get_trial(t._trial_id).state == TrialState.RUNNING):
                        return pid, t.number, s._study_id
            time.sleep(every)
    finally:
        storage.engine.dispose()
    return None


# Write locks that other connections hold, on a database server: a transaction that has written or
# locked rows for update (in PostgreSQL it holds its transaction id's lock from then on). A
# transaction that has only read blocks nobody there. Counted in this database only: the server
# may hold other tests' databases.
_LOCKS_HELD = {
    "postgresql": "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                  "WHERE a.datname = current_database() AND l.pid <> pg_backend_pid() "
                  "AND l.locktype = 'transactionid' AND l.granted",
    "mysql": "SELECT count(*) FROM information_schema.innodb_trx t JOIN information_schema.processlist p "
             "ON p.id = t.trx_mysql_thread_id WHERE p.db = DATABASE() AND p.id <> CONNECTION_ID() "
             "AND (t.trx_rows_locked > 0 OR t.trx_tables_locked > 0 OR t.trx_rows_modified > 0)",
}


def _holding_locks(url: str) -> bool:
    """Whether some other connection holds a lock that a write to the database at ``url`` would wait on."""
    path = sqlite_path(url)
    if path is not None:  # any lock on the file, a reader's included, refuses this at once
        con = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            con.execute("BEGIN EXCLUSIVE")
            con.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            con.close()
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as con:
            return con.exec_driver_sql(_LOCKS_HELD[engine.dialect.name]).scalar() > 0
    finally:
        engine.dispose()


def pause_holding_no_lock(pid: int, url: str, within: float = 60) -> None:
    """Stop (SIGSTOP) the worker ``pid`` at a moment it holds no lock on the database at ``url``.

    Stopped inside a write, it would keep its locks for as long as it stays stopped, and every
    other connection would wait on them (a SQLite file's lock, for the connection's whole timeout):
    a test of what others do meanwhile would fail on where the signal happened to land."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        while process_state(pid) not in ("T", "t"):
            time.sleep(0.001)
        if not _holding_locks(url):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError(f"worker {pid} held a lock on the database on every try for {within} s")
