"""A storage password is never printed or written: a real PostgreSQL 15 server (search/testing/postgres.py)
whose role logs in with a password; every line each command prints and every file and study
attribute it writes is searched for it. The ways to keep it off the command line work too."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from search.study.storage import scrub, shown
from search.testing.support import cli

SECRET = "Zebra9Quartz4Secret"


def _run(*argv: str, env: dict | None = None, timeout: float = 600) -> tuple[int, str]:
    proc = cli(*argv, env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def _files_text(folder: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


def _study_text(url: str) -> str:
    study = optuna.load_study(study_name="pw", storage=url)
    parts = [study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
    parts += [[t.user_attrs, t.system_attrs] for t in study.trials]
    return json.dumps(parts, default=str)


@pytest.fixture(scope="module")
def server_url(pg) -> str:
    """The URL of a database that its role reaches with SECRET only (without it: refused)."""
    return pg.password_user("fmnist_pw", SECRET, "pwdb")


def test_no_command_prints_or_writes_the_password(server_url, synth_dir, tmp_path):
    user, rest = server_url.split("://", 1)[1].split("@", 1)
    url = f"postgresql+psycopg2://{user}:{SECRET}@{rest}"
    data = ["--data-dir", str(synth_dir)]
    store = ["--storage", url, "--study", "pw", "--artifact-dir", str(tmp_path / "weights")]
    said = []
    code, out = _run(*store, *data, "--epochs", "1", "--val-size", "100", "--max-flops", "3000000", "--trials", "2",
                     "--no-enqueue-seeds", "--no-warm-start", "--quiet")
    assert code == 0, out
    assert "fmnist_pw:***@" in out  # the URL is named, its password hidden
    said.append(out)
    for argv in (["show", *store], ["export-best", *store, *data, "--out", str(tmp_path / "export")]):
        code, out = _run(*argv)
        assert code == 0, out
        said.append(out)
    bad_password = url.replace(SECRET, SECRET[::-1])
    for argv in (["show", *store[:3], "nope"], ["export-best", *store[:3], "nope", *data],
                 ["dashboard", *store[:3], "nope"], ["show", "--storage", url.replace("pwdb", "nodb"), "--study", "pw"],
                 ["show", "--storage", url.replace("127.0.0.1:", "127.0.0.1:notaport"), "--study", "pw"],
                 [*store[:3], "pw", *data, "--objective", "acc,flops"]):
        code, out = _run(*argv)
        assert code == 2 and "Traceback" not in out, (argv, out)
        said.append(out)
    code, out = _run("show", "--storage", bad_password, "--study", "pw")
    assert code == 2 and "password authentication failed" in out and SECRET[::-1] not in out, out
    proc = cli("dashboard", *store, "--port", "0")
    try:
        said.append(proc.stdout.readline() + proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "/dashboard" in said[-1]
    everything = "\n".join(said) + _files_text(tmp_path) + _study_text(url)
    assert SECRET not in everything


def test_the_password_can_stay_off_the_command_line(server_url, synth_dir, tmp_path):
    user, rest = server_url.split("://", 1)[1].split("@", 1)
    with_password = f"postgresql+psycopg2://{user}:{SECRET}@{rest}"
    # libpq's own ways: PGPASSWORD, and a password file (~/.pgpass, or PGPASSFILE)
    code, out = _run(*["--storage", server_url, "--study", "pw-env"], "--data-dir", str(synth_dir), "--epochs", "1",
                     "--val-size", "100", "--max-flops", "3000000", "--trials", "1", "--no-enqueue-seeds",
                     "--no-warm-start", "--quiet", "--artifact-dir", str(tmp_path / "w"), env={"PGPASSWORD": SECRET})
    assert code == 0, out
    # the whole URL in FMNIST_STORAGE
    code, out = _run("show", "--study", "pw-env", env={"FMNIST_STORAGE": with_password})
    assert code == 0 and "1 complete" in out and SECRET not in out, out
    passfile = tmp_path / "pgpass"
    host, port = rest.split("/")[0].split(":")
    passfile.write_text(f"{host}:{port}:*:{user}:{SECRET}\n")
    passfile.chmod(0o600)
    code, out = _run("show", "--storage", server_url, "--study", "pw-env", env={"PGPASSFILE": str(passfile)})
    assert code == 0 and "1 complete" in out, out
    code, out = _run("show", "--storage", server_url, "--study", "pw-env", env={"PGPASSFILE": "/nonexistent"})
    assert code == 2 and ("password authentication failed" in out or "no password supplied" in out), out


def test_urls_are_shown_without_their_password():
    assert shown("postgresql+psycopg2://u:p%40ss@db.example/x") == "postgresql+psycopg2://u:***@db.example/x"
    assert shown("mysql+pymysql://u:pw@h:3306/x") == "mysql+pymysql://u:***@h:3306/x"
    assert shown("sqlite:///studies/fmnist.db") == "sqlite:///studies/fmnist.db"
    typed = "postgresql://u:Pa55@word@h/x"  # an @ left unescaped: SQLAlchemy reads "Pa55" as the password
    assert "Pa55@word" not in scrub(f"could not parse {typed!r}", typed) and "word" not in scrub(typed, typed)
