"""A throw-away PostgreSQL 15 server from Debian's packages, on 127.0.0.1 only: for the hub's tests and bench."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(args: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root: as root, run its tools as the `postgres` user.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_postgres(*, durable: bool) -> Iterator[int]:
    """Start a server (trust auth, user postgres) and yield its port; stopped and deleted at the end.
    `durable=False` turns fsync off (fine for tests, much faster); a bench measures with it on.
    Raises RuntimeError saying what is missing or what the server logged."""
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(
            f"PostgreSQL 15 is not installed ({PG_BIN}/initdb is missing): `make test` installs it "
            "(or apt-get install postgresql)"
        )
    # Not under a root-only temporary folder: the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="hub-pg-"))
    data, sockets, log = root / "data", root / "run", root / "server.log"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    try:
        port = _free_port()
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
        subprocess.run(
            _as_postgres([*initdb, "--locale=C", "--no-sync"]), check=True, capture_output=True, timeout=120
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c max_connections=50"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data)]
        started = subprocess.run(
            _as_postgres([*pg_ctl, "-o", options, "-l", str(log), "-w", "start"]),
            check=False,
            capture_output=True,
            timeout=90,
        )
        if started.returncode != 0:
            detail = log.read_text() if log.exists() else started.stderr.decode()
            raise RuntimeError(f"PostgreSQL did not start: {detail[-2000:]}")
        try:
            yield port
        finally:
            subprocess.run(
                _as_postgres([*pg_ctl, "-m", "fast", "-w", "stop"]),
                check=False,
                capture_output=True,
                timeout=90,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_database(port: int, name: str) -> str:
    """CREATE DATABASE `name`; returns its SQLAlchemy URL."""
    import psycopg  # noqa: PLC0415 - only the callers that create databases need the driver

    with psycopg.connect(
        f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"
