"""Who may do what through ``fmnist-search dashboard``: the real optuna-dashboard, over real HTTP,
behind search.guard. Before the guard, one unauthenticated DELETE removed a study and its weights."""
from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

import optuna
import pytest

from search.study import record
from search.view.guard import Policy, guard, is_loopback
from search.testing.support import cli, request, small_search


@pytest.fixture(scope="module")
def study_db(synth_dir, tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("dash") / "d.db"
    assert small_search(synth_dir, f"sqlite:///{db}", "--trials", "2", "--no-enqueue-seeds", study="d") == 0
    return db


@contextlib.contextmanager
def dashboard(db: Path, *extra: str, env: dict | None = None):
    """The dashboard command on a free port: yields (its first output lines, the port)."""
    proc = cli("dashboard", "--storage", f"sqlite:///{db}", "--study", "d", "--port", "0", *extra, env=env)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert "/dashboard" in lines[0], (lines, proc.stderr.read() if proc.poll() is not None else "")
        port = int(lines[0].split("/dashboard")[0].rsplit(":", 1)[1])
        yield lines, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _study_id(port: int, host: str = "127.0.0.1", headers: dict | None = None) -> int:
    status, body = request(f"http://{host}:{port}/api/studies", headers=headers)
    assert status == 200, body
    (summary,) = json.loads(body)["study_summaries"]
    return summary["study_id"]


def _note(port: int, study_id: int, headers: dict | None = None) -> int:
    """Edit the study's note as the dashboard's page does (the next version of the note)."""
    status, body = request(f"http://127.0.0.1:{port}/api/studies/{study_id}", headers=headers)
    version = json.loads(body)["note"]["version"] if status == 200 else 0
    body = json.dumps({"version": version + 1, "body": "written through the dashboard"}).encode()
    return request(f"http://127.0.0.1:{port}/api/studies/{study_id}/note", "PUT", body,
                   {"Content-Type": "application/json", **(headers or {})})[0]


def _intact(db: Path) -> None:
    study = optuna.load_study(study_name="d", storage=f"sqlite:///{db}")
    weights = [t.user_attrs[record.WEIGHTS] for t in study.trials if record.WEIGHTS in t.user_attrs]
    assert weights and all((db.parent / "d-artifacts" / w).is_file() for w in weights)


def test_on_another_address_it_is_read_only(study_db):
    with dashboard(study_db, "--host", "0.0.0.0") as (lines, port):
        assert "READ-ONLY" in lines[1]
        study_id = _study_id(port)
        assert request(f"http://127.0.0.1:{port}/dashboard")[0] == 200
        status, body = request(f"http://127.0.0.1:{port}/api/studies/{study_id}", "DELETE")
        assert status == 403 and b"deleting a study" in body
        assert _note(port, study_id) == 403
        assert request(f"http://127.0.0.1:{port}/api/studies", "POST", b'{"study_name": "x", "directions": '
                       b'["minimize"]}', {"Content-Type": "application/json"})[0] == 403
    _intact(study_db)


def test_writes_on_another_address_need_the_password_and_a_study_is_never_deleted(study_db):
    with dashboard(study_db, "--host", "0.0.0.0", "--allow-writes") as (lines, port):
        assert "WRITES ALLOWED" in lines[1] and "user fmnist, password " in lines[1]
        password = lines[1].split("password ", 1)[1].split(" ", 1)[0]
        assert request(f"http://127.0.0.1:{port}/api/studies")[0] == 401
        wrong = {"Authorization": "Basic " + base64.b64encode(b"fmnist:guess").decode()}
        assert request(f"http://127.0.0.1:{port}/api/studies", headers=wrong)[0] == 401
        login = {"Authorization": "Basic " + base64.b64encode(f"fmnist:{password}".encode()).decode()}
        study_id = _study_id(port, headers=login)
        assert _note(port, study_id, login) == 204
        for method, path in (("DELETE", f"/api/studies/{study_id}"), ("POST", f"/api/studies/{study_id}/rename")):
            status, body = request(f"http://127.0.0.1:{port}{path}", method, b'{"study_name": "y"}',
                                   {"Content-Type": "application/json", **login})
            assert status == 403 and b"is not served" in body, (path, body)
    _intact(study_db)
    # A password chosen in the environment is used and not printed.
    with dashboard(study_db, "--host", "0.0.0.0", "--allow-writes", env={"FMNIST_DASHBOARD_PASSWORD": "s3cret-Pw"}) as (lines, port):
        assert "s3cret-Pw" not in "".join(lines) and "FMNIST_DASHBOARD_PASSWORD" in lines[1]
        login = {"Authorization": "Basic " + base64.b64encode(b"fmnist:s3cret-Pw").decode()}
        assert _study_id(port, headers=login)


def test_on_loopback_a_foreign_host_name_and_a_cross_site_write_are_refused(study_db):
    with dashboard(study_db) as (lines, port):
        assert "this machine only" in lines[1]
        study_id = _study_id(port)
        assert _study_id(port, host="localhost")
        # DNS rebinding: a page of attacker.example whose name now resolves to 127.0.0.1
        status, body = request(f"http://127.0.0.1:{port}/api/studies", headers={"Host": f"attacker.example:{port}"})
        assert status == 403 and b"loopback names only" in body
        assert request(f"http://127.0.0.1:{port}/api/studies/{study_id}", "DELETE")[0] == 403
        assert _note(port, study_id, {"Origin": "http://attacker.example"}) == 403
        assert _note(port, study_id, {"Origin": f"http://127.0.0.1:{port}"}) == 204  # the dashboard's own page
    _intact(study_db)


def test_what_counts_as_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.9.9.9")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("192.0.2.1")


def test_the_guard_passes_reads_to_the_app_and_answers_refusals_itself():
    calls = []

    def app(environ, start_response):
        calls.append(environ["REQUEST_METHOD"])
        start_response("200 OK", [])
        return [b"ok"]

    statuses = []
    guarded = guard(app, Policy(loopback=False, writes=False))
    for method in ("GET", "PUT", "DELETE"):
        guarded({"REQUEST_METHOD": method, "PATH_INFO": "/api/studies/1", "HTTP_HOST": "x"},
                lambda status, headers: statuses.append(status))
    assert calls == ["GET"] and statuses == ["200 OK", "403 Forbidden", "403 Forbidden"]
