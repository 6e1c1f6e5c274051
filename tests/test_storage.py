"""Opening a storage as racing workers do, and a storage that fails under a study: a full or read-only disk."""
from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from search.cli import main
from search.study import storage as storages
from search.testing.support import OPENER, FAST, load_study as load, run_search as run


def test_a_lost_race_to_create_the_tables_is_retried(tmp_path, monkeypatch):
    real, calls = storages.TrackedStorage, []

    def lose_first_race(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {}, "table studies already exists")
        return real(*args, **kwargs)

    monkeypatch.setattr(storages, "TrackedStorage", lose_first_race)
    storage = storages.open_storage(f"sqlite:///{tmp_path / 'race.db'}")
    assert len(calls) == 2 and optuna.get_all_study_names(storage) == []


def test_workers_opening_a_new_database_at_once_all_succeed(tmp_path):
    """The start-up race of issue 12 (UNIQUE constraint failed: alembic_version.version_num, or
    'table already exists'): six processes, three rounds, each on a database that does not exist yet."""
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / f'new{round_}.db'}"
        ready = tmp_path / f"ready{round_}"
        ready.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, url, str(ready), "6"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err


def test_a_storage_that_keeps_failing_is_one_line(tmp_path, monkeypatch):
    def always_locked(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("BEGIN", {}, "database is locked")

    monkeypatch.setattr(storages, "TrackedStorage", always_locked)
    monkeypatch.setattr(storages.time, "sleep", lambda s: None)
    with pytest.raises(storages.UsageError, match="cannot open .*database is locked"):
        storages.open_storage(f"sqlite:///{tmp_path / 'locked.db'}")


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (needs the right to mount, as root in CI's sandbox; skipped elsewhere)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root, or no mount in this sandbox)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk):
    """Take every byte left on ``disk`` with one file, disk/filler."""
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_full_disk_mid_study_is_one_line_and_keeps_what_was_finished(small_disk, synth_dir, capsys):
    db = small_disk / "full.db"
    assert run(synth_dir, db, "--trials", "1", "--no-enqueue-seeds") == 0
    before = {t.number: t.values for t in load(db).trials if t.state == TrialState.COMPLETE}
    assert before
    fill(small_disk)
    capsys.readouterr()
    assert run(synth_dir, db, "--trials", "4", "--no-enqueue-seeds") == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith("notice:")]
    assert len(err) == 1 and err[0].startswith("fmnist-search: error:"), err
    (small_disk / "filler").unlink()
    study = load(db)
    assert {t.number: t.values for t in study.trials if t.number in before} == before
    assert not [t for t in study.trials if t.state == TrialState.RUNNING] or run(
        synth_dir, db, "--trials", "2", "--no-enqueue-seeds") == 0  # a rerun reclaims what the fault left
    assert not [t for t in load(db).trials if t.state == TrialState.RUNNING]


def _rows(db):
    """The trials table, read with a connection closed at once (an open one keeps the disk busy)."""
    import sqlite3
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    finally:
        con.close()


def test_a_study_on_a_read_only_disk_is_one_line_and_unharmed(small_disk, synth_dir):
    db = small_disk / "ro.db"
    first = subprocess.run([sys.executable, "-m", "search.cli", "--data-dir", str(synth_dir), "--storage",
                            f"sqlite:///{db}", "--study", "s", *FAST, "--trials", "1", "--no-enqueue-seeds"],
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    before = _rows(db)
    assert subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True).returncode == 0
    try:
        again = subprocess.run([sys.executable, "-m", "search.cli", "--data-dir", str(synth_dir), "--storage",
                                f"sqlite:///{db}", "--study", "s", *FAST, "--trials", "3", "--no-enqueue-seeds"],
                               capture_output=True, text=True)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], capture_output=True)
    err = [e for e in again.stderr.strip().splitlines() if not e.startswith("notice:")]
    assert again.returncode == 2 and len(err) == 1 and err[0].startswith("fmnist-search: error:"), again.stderr
    assert "read" in err[0].lower() and "Traceback" not in again.stderr
    assert _rows(db) == before


def test_an_export_onto_a_full_disk_is_one_line_and_leaves_nothing(small_disk, small_study, synth_dir, capsys):
    fill(small_disk)
    capsys.readouterr()
    assert main(["export-best", "--storage", f"sqlite:///{small_study}", "--study", "s", "--data-dir", str(synth_dir),
                 "--out", str(small_disk / "export")]) == 2
    err = [e for e in capsys.readouterr().err.strip().splitlines() if not e.startswith("notice:")]
    assert len(err) == 1 and "--out" in err[0] and "nothing was replaced" in err[0], err
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_a_connection_the_server_lost_is_one_line_not_a_traceback(capsys):
    """Seen in a fresh-clone run: during the MariaDB outage SQLAlchemy's pool logged a failed
    rollback of a dead connection with its traceback on stderr, though the search rode it out."""
    import logging
    storages._quiet_pool("mysql+pymysql://u:s3cret@127.0.0.1/x")
    try:
        raise ConnectionError("(2013, 'Lost connection to MySQL server during query') s3cret")
    except ConnectionError:
        logging.getLogger("sqlalchemy.pool").error("Exception during reset or similar", exc_info=True)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines() == ["notice: the storage dropped a database connection the server had lost "
                                "((2013, 'Lost connection to MySQL server during query') ***)"]
