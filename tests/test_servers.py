"""Against real database servers, PostgreSQL 15 and MariaDB (search/testing/postgres.py, search/testing/mariadb.py):
skipped, with the reason, where one cannot be started."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from search.testing.support import OPENER, search_workers


ROUNDS, WORKERS = 3, 6  # six at once reproduce the race on the old code in the first round


def test_workers_opening_a_new_server_database_at_once_all_succeed(db_server, tmp_path):
    """Issue 10: 2 of 3 workers died with UniqueViolation on pg_type (both ran CREATE TYPE)."""
    for round_ in range(ROUNDS):
        url = db_server.create(f"race{round_}")
        ready = tmp_path / f"ready{round_}"
        ready.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, url, str(ready), str(WORKERS)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(WORKERS)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err


def test_a_search_rides_out_a_20_second_outage_of_the_server(db_server, synth_dir, tmp_path):
    """Issue 10: a worker whose trial ended during the outage died with a traceback, the others'
    heartbeat threads died. Now every worker waits for the server and loses nothing."""
    import optuna
    from optuna.trial import TrialState
    url = db_server.create("o")
    proc = search_workers(url, synth_dir, tmp_path, "o", trials=14)
    storage = optuna.storages.RDBStorage(url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # wait until the search is under way
        studies = storage.get_all_studies()
        if studies and storage.get_n_trials(studies[0]._study_id, (TrialState.COMPLETE,)) >= 2:
            break
        time.sleep(0.5)
    storage.engine.dispose()
    assert proc.poll() is None, proc.communicate()
    db_server.stop()
    time.sleep(20)
    db_server.start()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Exception in thread" not in err, err
    study = optuna.load_study(study_name="o", storage=url)
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    assert sum(s == TrialState.COMPLETE for s in states) >= 14 - sum(s == TrialState.PRUNED for s in states)


def test_a_worker_started_by_workers_waits_for_a_server_away_as_it_starts(db_server, synth_dir, tmp_path):
    """A red CI (stop 28): the second worker of --workers, still loading when the outage above began,
    opened the study during it and exited 2 ("cannot open"). A worker that --workers started waits
    for the server, as one under way does; a first worker still says at once that it cannot reach it."""
    import optuna
    url = db_server.create("w")
    db_server.stop()
    try:
        first = search_workers(url, synth_dir, tmp_path, "w", trials=1, workers=1)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 2 and "cannot open" in err and "Traceback" not in err, err
        worker = search_workers(url, synth_dir, tmp_path, "w", trials=1, workers=1,
                                extra=("--worker-of", str(os.getpid()), "--worker-id", "1"))
        time.sleep(15)  # past torch's import: the worker is waiting for the server
        assert worker.poll() is None, worker.communicate()
    finally:
        db_server.start()
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    states = [t.state for t in optuna.load_study(study_name="w", storage=url).trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1 and optuna.trial.TrialState.RUNNING not in states


def test_six_workers_claiming_one_candidate_at_once_on_a_server(db_server, tmp_path):
    from test_claims import check_one_winner, claim_at_once
    for round_ in range(3):
        folder = tmp_path / f"r{round_}"
        folder.mkdir()
        check_one_winner(claim_at_once(db_server.create(f"claim{round_}"), folder))
