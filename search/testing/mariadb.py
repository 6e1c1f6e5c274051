"""A real MariaDB server (MySQL's protocol and SQL) for tests, started from Debian's mariadb-server
binaries in a temporary folder, listening on 127.0.0.1 only; stopped and removed afterwards.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager

from search.testing.postgres import Server, free_port, missing, server_folder


def why_not() -> str | None:
    """Why no server can be started here, or None."""
    return missing(("mariadb-install-db", "mariadbd"), "Debian's mariadb-server is", "pymysql", "mysql")


def _connect(port: int, database: str | None = None):
    import pymysql
    return pymysql.connect(host="127.0.0.1", port=port, user="root", database=database, connect_timeout=2)


@contextmanager
def server():
    """Yields a fresh ``Server`` (root without a password, on 127.0.0.1 only)."""
    folder, _ = server_folder("fmnist-mariadb-")
    data, port = folder / "data", free_port()
    user = ["--user=nobody"] if folder.owner() == "nobody" else []
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", *user, "--skip-test-db",
                    "--auth-root-authentication-method=normal"], check=True, capture_output=True, text=True)
    proc: list[subprocess.Popen] = []

    def start() -> None:
        proc[:] = [subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={data}", *user, f"--port={port}", "--bind-address=127.0.0.1",
             f"--socket={folder / 'sock'}", f"--pid-file={folder / 'pid'}", "--skip-name-resolve",
             "--innodb-flush-log-at-trx-commit=0", f"--log-error={folder / 'log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        deadline = time.monotonic() + 60
        while True:
            try:
                _connect(port).close()
                return
            except Exception:
                if proc[0].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not start: {(folder / 'log').read_text()[-2000:]}")
                time.sleep(0.2)

    def stop() -> None:
        proc[0].terminate()
        proc[0].wait(timeout=60)

    try:
        start()
        url = f"mysql+pymysql://root@127.0.0.1:{port}"
        yield Server(url, stop, start, lambda name: create_database(url, name))
    finally:
        if proc and proc[0].poll() is None:
            proc[0].kill()
            proc[0].wait()
        shutil.rmtree(folder, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    port = int(url.rsplit(":", 1)[1])
    con = _connect(port)
    try:
        con.cursor().execute(f"CREATE DATABASE `{name}`")
    finally:
        con.close()
    return f"{url}/{name}"
