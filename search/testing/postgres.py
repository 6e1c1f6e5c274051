"""A real PostgreSQL server for tests, started from the binaries on the machine (initdb, pg_ctl)
in a temporary folder, listening on 127.0.0.1 only; stopped and removed afterwards.

PostgreSQL refuses to run as root, so as root it runs as the unprivileged user ``nobody``.
"""
from __future__ import annotations

import importlib.util
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
    why = missing(("initdb", "pg_ctl"), "PostgreSQL's server binaries are", "psycopg2", "postgres")
    if why is None and os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root and no runuser to start PostgreSQL as an unprivileged user"
    return why


def missing(tools: tuple[str, ...], binaries: str, driver: str, extra: str) -> str | None:
    """The first of a database server's ``tools`` not on PATH, or its Python ``driver`` not
    installed (with the pip extra that brings it), said in a line; None when all are here."""
    for tool in tools:
        if shutil.which(tool) is None:
            return f"no {tool} on PATH ({binaries} not installed)"
    if importlib.util.find_spec(driver) is None:
        return f"{driver} is not installed (pip install -e '.[{extra}]')"
    return None


def server_folder(prefix: str) -> tuple[Path, list[str]]:
    """A new folder for a database server's files, and the command prefix that runs a program as
    its owner: as root, the unprivileged user ``nobody`` (database servers refuse to run as root)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    if os.geteuid() != 0:
        return folder, []
    folder.chmod(0o755)
    shutil.chown(folder, "nobody", "nogroup")
    return folder, ["runuser", "-u", "nobody", "--"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str                  # the SQLAlchemy URL prefix: append a database name
    stop: Callable[[], None]  # as an outage: clients are disconnected, connections refused
    start: Callable[[], None]
    create: Callable[[str], str]  # a new database of that name: its SQLAlchemy URL
    # a role that must log in with its password over TCP, owning a new database of its own:
    # (user, password, database) -> the URL without the password
    password_user: Callable[[str, str, str], str] | None = None


@contextmanager
def server():
    """Yields a fresh ``Server``."""
    folder, as_user = server_folder("fmnist-pg-")
    data, port = folder / "data", free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync")
        start = lambda: run("pg_ctl", "-D", str(data), "-w", "-l", str(folder / "log"), "-o",  # noqa: E731
                            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        start()
        url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}"

        def password_user(user: str, password: str, database: str) -> str:
            # scram for this role over TCP, checked before the trust lines initdb wrote
            hba = data / "pg_hba.conf"
            run("sh", "-c", f"printf 'host all {user} 127.0.0.1/32 scram-sha-256\\n' | cat - {hba} > {hba}.new "
                            f"&& mv {hba}.new {hba}")
            run("pg_ctl", "-D", str(data), "reload")
            sql(url, f"CREATE ROLE {user} LOGIN PASSWORD '{password}'", f'CREATE DATABASE "{database}" OWNER {user}')
            return f"postgresql+psycopg2://{user}@127.0.0.1:{port}/{database}"

        yield Server(url, lambda: run("pg_ctl", "-D", str(data), "-w", "-m", "fast", "stop"), start,
                     lambda name: create_database(url, name), password_user)
    finally:
        subprocess.run([*as_user, "pg_ctl", "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def sql(url: str, *statements: str) -> None:
    """Statements run as the server's superuser, each on its own (CREATE DATABASE cannot be in a transaction)."""
    import psycopg2
    con = psycopg2.connect(url.replace("postgresql+psycopg2", "postgresql") + "/postgres")
    try:
        con.autocommit = True
        for statement in statements:
            con.cursor().execute(statement)
    finally:
        con.close()


def create_database(url: str, name: str) -> str:
    sql(url, f'CREATE DATABASE "{name}"')
    return f"{url}/{name}"
