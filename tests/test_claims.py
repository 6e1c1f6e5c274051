"""A candidate is claimed atomically before training: of workers that drew it at once, one trains it."""
from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa

from search.study import claims

CLAIMER = """
import os, sys, time
from pathlib import Path
import sqlalchemy as sa
from search.study import claims
from search.study.storage import open_storage
url, ready, n, number = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
engine = open_storage(url).engine  # SQLite: transactions begin with the write lock, as in a search
(ready / str(os.getpid())).touch()
while len(list(ready.iterdir())) < n:  # a barrier: every process claims at the same moment
    time.sleep(0.001)
print(claims.claim(engine, 1, '{"arch":{"convs":[{"filters":8}]}}', number, lambda n: False))
"""


def claim_at_once(url: str, folder, workers: int = 6) -> list[str]:
    """What each of ``workers`` processes got when claiming one candidate at the same moment."""
    ready = folder / "ready"
    ready.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, url, str(ready), str(workers), str(10 + i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(workers)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(out.strip())
    return results


def check_one_winner(results: list[str]) -> None:
    winners = [i for i, r in enumerate(results) if r == "None"]
    assert len(winners) == 1, results
    assert all(r == str(10 + winners[0]) for i, r in enumerate(results) if i != winners[0]), results


@pytest.mark.parametrize("round_", range(3))
def test_six_workers_claiming_one_candidate_at_once_on_sqlite(tmp_path, round_):
    check_one_winner(claim_at_once(f"sqlite:///{tmp_path / 'c.db'}", tmp_path))


def test_a_claim_held_by_a_failed_trial_is_taken_over(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'c.db'}")
    spec = '{"arch":{"convs":[{"filters":8}]}}'
    assert claims.claim(engine, 1, spec, 3, released=lambda n: False) is None
    assert claims.claim(engine, 1, spec, 3, released=lambda n: False) is None  # its own claim
    assert claims.claim(engine, 1, spec, 5, released=lambda n: False) == 3     # 3 is training it
    assert claims.claim(engine, 1, spec, 5, released=lambda n: n == 3) is None  # 3 died: 5 retries it
    assert claims.claim(engine, 1, spec, 7, released=lambda n: n == 3) == 5
    assert claims.claim(engine, 2, spec, 7, released=lambda n: False) is None  # another study
