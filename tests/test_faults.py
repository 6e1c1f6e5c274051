"""Workers meeting faults, on SQLite and on real PostgreSQL 15 and MariaDB servers (search/testing/postgres.py,
search/testing/mariadb.py; those cases are skipped, with the reason, where a server cannot be started): a worker killed mid-trial,
a worker paused long enough for others to fail its trial as stale, a worker whose trial dies on
another machine while it trains."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

import fmnist
from search.study import reclaim, record, storage as storages
from search.cli import main
from search.testing.support import BEAT, GRACE, MAX_FLOPS, search_workers
from search.testing.victim import pause_holding_no_lock, trial_in_training

_names = itertools.count()


@pytest.fixture(params=["sqlite", "pg", "mariadb"])
def db_url(request, tmp_path) -> str:
    """A new, empty database: a SQLite file, or a database on one of the session's servers."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'faults.db'}"
    return request.getfixturevalue(request.param).create(f"faults{next(_names)}")


def training_trial(url: str, proc: subprocess.Popen, not_pid: int | None = None) -> tuple[int, int]:
    """(pid of its worker, number) of a trial of ``proc`` in training."""
    found = trial_in_training(url, proc, MAX_FLOPS, not_pid)
    assert found, f"no trial in training: {proc.communicate()}"
    return found[:2]


def nothing_left_running(study: optuna.Study) -> None:
    assert not [t.number for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_kill_9_of_a_worker_mid_trial_loses_nothing(db_url, synth_dir, tmp_path):
    """The killed worker's trial is failed and its configuration trained again by the other one,
    at once; nothing is left running."""
    # Trials of a few seconds: the victim is still training when the kill lands (checked just before).
    proc = search_workers(db_url, synth_dir, tmp_path, "k", trials=6, epochs=60)
    pid, number = training_trial(db_url, proc, not_pid=proc.pid)
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert f"worker {pid} was killed (signal 9)" in out
    study = optuna.load_study(study_name="k", storage=db_url)
    killed = study.trials[number]
    assert killed.state == TrialState.FAIL
    again = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
    assert again and again[0].params == killed.params and again[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    nothing_left_running(study)


def test_a_paused_worker_whose_trial_was_failed_as_stale_keeps_its_result(db_url, synth_dir, tmp_path, monkeypatch):
    """Issue 10: a trial failed as stale while its worker was alive lost its finished result
    (`Cannot tell a FAIL trial`). The worker is stopped (SIGSTOP) past the grace period, another
    worker's stale check fails its trial, and the worker is let go on: it finishes, keeps the
    result as a new trial with its weights, and goes on with the study."""
    proc = search_workers(db_url, synth_dir, tmp_path, "p", trials=3, epochs=60, workers=1, short_grace=True)
    pid, number = training_trial(db_url, proc)
    pause_holding_no_lock(pid, db_url)
    try:
        time.sleep(GRACE + 2 * BEAT)
        monkeypatch.setattr(storages, "HEARTBEAT_S", BEAT)
        monkeypatch.setattr(storages, "GRACE_S", GRACE)
        study = optuna.load_study(study_name="p", storage=storages.open_storage(db_url))
        optuna.storages.fail_stale_trials(study)  # what any other worker does at its next trial start
        assert study.trials[number].state == TrialState.FAIL
    finally:
        os.kill(pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err
    study = optuna.load_study(study_name="p", storage=db_url)
    failed = study.trials[number]
    kept = [t for t in study.trials if t.user_attrs.get(record.KEPT_FROM) == number]
    assert len(kept) == 1, out
    kept = kept[0]
    assert f"trial {number} was failed as stale by another worker while this one was paused; " \
           f"its result is kept as trial {kept.number}" in out
    assert kept.params == failed.params and record.spec_text(kept) == record.spec_text(failed)
    assert kept.state == TrialState.COMPLETE and kept.values[0] == kept.user_attrs[record.VAL_ACC]
    assert kept.user_attrs[record.EPOCHS_RUN] == 60
    # The weights were stored by the trial that was failed or by its successor: either way export finds them.
    assert main(["export-best", "--data-dir", str(synth_dir), "--storage", db_url, "--study", "p",
                 "--trial", str(kept.number), "--artifact-dir", str(tmp_path / "weights"),
                 "--out", str(tmp_path / "export")]) == 0
    # Its queued copy is not trained again: the kept result makes it a duplicate.
    copy = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
    assert len(copy) == 1 and copy[0].user_attrs.get(record.SKIPPED) == f"duplicate of trial {kept.number}"
    nothing_left_running(study)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_trial_whose_worker_went_silent_is_requeued_while_this_worker_trains(tmp_path, synth_dir, monkeypatch,
                                                                              capsys):
    """Issue 10: another machine's dead worker was found only when a worker here started its next
    trial. Now the background watch finds it while this worker is still training."""
    monkeypatch.setattr(storages, "HEARTBEAT_S", BEAT)
    monkeypatch.setattr(storages, "GRACE_S", GRACE)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    real_train, seen = fmnist.train, []

    def train_while_another_machine_dies(*args, **kwargs):
        if kwargs.get("evaluate_test", True) and not seen:  # the first trial's training
            storage = storages.open_storage(url)
            study = optuna.load_study(study_name="w", storage=storage)
            elsewhere = study.ask()
            storage.set_trial_user_attr(elsewhere._trial_id, record.WORKER, "another-machine:4242")
            storage.record_heartbeat(elsewhere._trial_id)  # and then no more: that worker is gone
            deadline = time.monotonic() + 8 * GRACE
            while storage.get_trial(elsewhere._trial_id).state == TrialState.RUNNING and time.monotonic() < deadline:
                time.sleep(0.1)
            seen.append(storage.get_trial(elsewhere._trial_id))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(fmnist, "train", train_while_another_machine_dies)
    assert main(["--data-dir", str(synth_dir), "--storage", url, "--study", "w", "--epochs", "1", "--val-size", "100",
                 "--max-flops", "3000000", "--quiet", "--no-warm-start", "--no-enqueue-seeds", "--trials", "2"]) == 0
    assert seen and seen[0].state == TrialState.FAIL, "not failed while the first trial trained"
    out = capsys.readouterr().out
    assert f"trial {seen[0].number} stopped sending heartbeats" in out
    study = optuna.load_study(study_name="w", storage=url)
    again = [t for t in study.trials if t.system_attrs.get("failed_trial") == seen[0].number]
    assert len(again) == 1 and again[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    nothing_left_running(study)


def test_the_watch_ends_when_told(tmp_path, monkeypatch):
    monkeypatch.setattr(storages, "HEARTBEAT_S", BEAT)
    study = optuna.create_study(study_name="x", storage=storages.open_storage(f"sqlite:///{tmp_path / 'x.db'}"))
    watching = lambda: [t for t in threading.enumerate() if t.name == "fmnist-stale-watch"]  # noqa: E731
    stop = reclaim.watch_stale(study, print)
    assert len(watching()) == 1
    stop.set()
    time.sleep(2 * BEAT)
    assert not watching()
