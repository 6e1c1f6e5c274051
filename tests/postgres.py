"""A real PostgreSQL server for tests, started from the binaries on the machine (initdb, pg_ctl)
in a temporary folder, listening on 127.0.0.1 only; stopped and removed afterwards.

PostgreSQL refuses to run as root, so as root it runs as the unprivileged user ``nobody``.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def why_not() -> str | None:
    """Why no server can be started here, or None."""
    for tool in ("initdb", "pg_ctl"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (PostgreSQL's server binaries are not installed)"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[postgres]')"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root and no runuser to start PostgreSQL as an unprivileged user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str                  # the SQLAlchemy URL prefix: append a database name
    stop: Callable[[], None]  # as an outage: clients are disconnected, connections refused
    start: Callable[[], None]


@contextmanager
def server():
    """Yields a fresh ``Server``."""
    folder = Path(tempfile.mkdtemp(prefix="fmnist-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        folder.chmod(0o755)
        shutil.chown(folder, "nobody", "nogroup")
        as_user = ["runuser", "-u", "nobody", "--"]
    data, port = folder / "data", _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
        start = lambda: run("pg_ctl", "-D", str(data), "-w", "-l", str(folder / "log"), "-o",  # noqa: E731
                            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        start()
        yield Server(f"postgresql+psycopg2://postgres@127.0.0.1:{port}",
                     lambda: run("pg_ctl", "-D", str(data), "-w", "-m", "fast", "stop"), start)
    finally:
        subprocess.run([*as_user, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    import psycopg2
    con = psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql") + "/postgres")
    try:
        con.autocommit = True
        con.cursor().execute(f'CREATE DATABASE "{name}"')
    finally:
        con.close()
    return f"{url}/{name}"
