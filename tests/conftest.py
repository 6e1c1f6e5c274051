from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the test-only helpers beside this file (browser, wsgi_server)
from search.testing.synthetic import write_dataset  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def small_study(synth_dir, tmp_path_factory) -> Path:
    """A small finished study (3 cheap trials) for tests that only read it or are refused by it."""
    from search.testing.support import run_search
    db = tmp_path_factory.mktemp("study") / "s.db"
    assert run_search(synth_dir, db, "--trials", "3", "--no-enqueue-seeds") == 0
    return db


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A synthetic data folder (600 train, 200 test images), shared by the whole session: read only."""
    return write_dataset(tmp_path_factory.mktemp("synth"))


@pytest.fixture(autouse=True)
def _no_real_data_env(monkeypatch):
    """Tests pass --data-dir explicitly; an FMNIST_DATA from the environment must not leak in."""
    monkeypatch.delenv("FMNIST_DATA", raising=False)


def real_data_dir() -> Path | None:
    for candidate in (os.environ.get("FMNIST_DATA"), REPO.parent / "shared" / "data" / "fashion-mnist"):
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    return None


def _server(kind: str):
    """A real database server for the session (search/testing/postgres.py, search/testing/mariadb.py); skipped, with
    the reason, where none can be started."""
    module = importlib.import_module(f"search.testing.{kind}")
    reason = module.why_not()
    if reason:
        pytest.skip(reason)
    with module.server() as server:
        yield server


@pytest.fixture(scope="session")
def pg():
    yield from _server("postgres")


@pytest.fixture(scope="session")
def mariadb():
    yield from _server("mariadb")


@pytest.fixture(params=["pg", "mariadb"])
def db_server(request):
    """Each database server in turn: PostgreSQL 15, then MariaDB (MySQL's protocol)."""
    return request.getfixturevalue(request.param)
