"""Against a real PostgreSQL 15 server (tests/postgres.py): skipped, with the reason, where none can
be started."""
from __future__ import annotations

import subprocess
import sys

import pytest

import postgres
from test_search import OPENER


ROUNDS, WORKERS = 3, 6  # six at once reproduce the race on the old code in the first round


@pytest.fixture(scope="module")
def pg():
    reason = postgres.why_not()
    if reason:
        pytest.skip(reason)
    with postgres.server() as url:
        yield url


def test_three_workers_opening_a_new_postgres_database_at_once_all_succeed(pg, tmp_path):
    """Issue 10: 2 of 3 workers died with UniqueViolation on pg_type (both ran CREATE TYPE)."""
    for round_ in range(ROUNDS):
        url = postgres.create_database(pg, f"race{round_}")
        ready = tmp_path / f"ready{round_}"
        ready.mkdir()
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, url, str(ready), str(WORKERS)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(WORKERS)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
