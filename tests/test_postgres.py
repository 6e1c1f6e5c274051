"""Against a real PostgreSQL 15 server (tests/postgres.py): skipped, with the reason, where none can
be started."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

import postgres
from test_search import OPENER


ROUNDS, WORKERS = 3, 6  # six at once reproduce the race on the old code in the first round


@pytest.fixture(scope="module")
def pg():
    reason = postgres.why_not()
    if reason:
        pytest.skip(reason)
    with postgres.server() as server:
        yield server


def test_three_workers_opening_a_new_postgres_database_at_once_all_succeed(pg, tmp_path):
    """Issue 10: 2 of 3 workers died with UniqueViolation on pg_type (both ran CREATE TYPE)."""
    for round_ in range(ROUNDS):
        url = postgres.create_database(pg.url, f"race{round_}")
        ready = tmp_path / f"ready{round_}"
        ready.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, url, str(ready), str(WORKERS)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(WORKERS)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err


def two_workers(pg, synth_dir, tmp_path, study: str, trials: int, epochs: int = 12) -> tuple[str, subprocess.Popen]:
    """A search with --workers 2 on a new database (named as the study) of ``pg``."""
    url = postgres.create_database(pg.url, study)
    cmd = [sys.executable, "-m", "search.cli", "--data-dir", str(synth_dir), "--storage", url, "--study", study,
           "--quiet", "--val-size", "100", "--epochs", str(epochs), "--max-flops", "3000000", "--trials", str(trials),
           "--no-enqueue-seeds", "--no-warm-start", "--pruner", "none", "--workers", "2",
           "--artifact-dir", str(tmp_path / "weights")]
    return url, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_search_rides_out_a_20_second_outage_of_the_server(pg, synth_dir, tmp_path):
    """Issue 10: a worker whose trial ended during the outage died with a traceback, the others'
    heartbeat threads died. Now every worker waits for the server and loses nothing."""
    import optuna
    from optuna.trial import TrialState
    url, proc = two_workers(pg, synth_dir, tmp_path, "o", trials=14)
    storage = optuna.storages.RDBStorage(url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait until the search is under way
        studies = storage.get_all_studies()
        if studies and storage.get_n_trials(studies[0]._study_id, (TrialState.COMPLETE,)) >= 2:
            break
        time.sleep(0.5)
    storage.engine.dispose()
    assert proc.poll() is None, proc.communicate()
    pg.stop()
    time.sleep(20)
    pg.start()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception in thread" not in err, err
    study = optuna.load_study(study_name="o", storage=url)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert sum(s == TrialState.COMPLETE for s in states) >= 14 - sum(s == TrialState.PRUNED for s in states)


def test_six_workers_claiming_one_candidate_at_once_on_postgres(pg, tmp_path):
    from test_claims import check_one_winner, claim_at_once
    for round_ in range(3):
        folder = tmp_path / f"r{round_}"
        folder.mkdir()
        check_one_winner(claim_at_once(postgres.create_database(pg.url, f"claim{round_}"), folder))


def test_kill_9_of_a_worker_mid_trial_loses_nothing(pg, synth_dir, tmp_path):
    """The killed worker's trial is failed and its configuration trained again by the other one,
    at once; nothing is left running."""
    import os
    import signal

    import optuna
    from optuna.trial import TrialState
    # Trials of a few seconds: the victim is still training when the kill lands (checked just before).
    url, proc = two_workers(pg, synth_dir, tmp_path, "k", trials=6, epochs=60)
    storage = optuna.storages.RDBStorage(url)
    victim, deadline = None, time.monotonic() + 180
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        studies = storage.get_all_studies()
        if studies:
            for t in storage.get_all_trials(studies[0]._study_id, states=(TrialState.RUNNING,)):
                pid = int(str(t.user_attrs.get("worker", ":0")).rpartition(":")[2] or 0)
                # The other worker's trial, past the free checks (a candidate over --max-flops is
                # skipped, not trained), still running just before the kill.
                if (pid and pid != proc.pid and t.user_attrs.get("flops", 10**9) <= 3_000_000
                        and storage.get_trial(t._trial_id).state == TrialState.RUNNING):
                    victim = (pid, t.number)
        time.sleep(0.2)
    storage.engine.dispose()
    assert victim, proc.communicate()
    os.kill(victim[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert f"worker {victim[0]} was killed (signal 9)" in out
    study = optuna.load_study(study_name="k", storage=url)
    killed = study.trials[victim[1]]
    assert killed.state == TrialState.FAIL
    again = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim[1]]
    assert again and again[0].params == killed.params and again[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
