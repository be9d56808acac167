"""The hub's database: one SQLAlchemy engine (SQLite or PostgreSQL), migrated with Alembic at start, used from
worker threads so the event loop never waits on it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Table, create_engine, event, make_url
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"
# A writer waits this long for SQLite's lock before giving up (PostgreSQL has row locks and waits itself).
SQLITE_BUSY_TIMEOUT_MS = 30_000


def alembic_config(url: str) -> Config:
    """Alembic configured in code (no alembic.ini): the migrations shipped in the package, this database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would read a '%' of a URL-encoded password as a reference.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def utcnow() -> datetime:
    """Now, as the database keeps times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_db_time(value: datetime) -> datetime:
    """A time from the wire (aware, any zone; naive means UTC) as the database keeps it: naive UTC."""
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def from_db_time(value: datetime | None) -> datetime | None:
    """A time read from the database, made aware (UTC) so the API writes it in ISO 8601 with Z."""
    return value.replace(tzinfo=UTC) if value is not None else None


def dialect_insert(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT with ON CONFLICT (upsert) clauses: both dialects spell them alike, each needs its own class."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            self.engine: Engine = _sqlite_engine(url)
        else:
            # pre_ping: a connection PostgreSQL closed (restart, idle timeout) is replaced, not handed out broken.
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
        # SQLite has one writer at a time: writers of this process queue on a lock instead of polling the
        # busy handler (which sleeps up to 100 ms per try and halves ingest throughput under contention).
        self._write_lock = threading.Lock()

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (blocking; at start)."""
        config = alembic_config(self.url)
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """One transaction (blocking). `write=True` on SQLite takes the write lock at BEGIN (IMMEDIATE), so a
        transaction that reads then writes can never fail half-way on a lock another writer took meanwhile."""
        if self.is_sqlite and write:
            with self._write_lock, self.engine.connect() as conn:
                conn.execution_options(hub_sqlite_begin="BEGIN IMMEDIATE")
                with conn.begin():
                    yield conn
            return
        with self.engine.begin() as conn:
            yield conn

    async def run(self, fn: Callable[[Connection], T], *, write: bool = False) -> T:
        """`fn(connection)` inside one transaction (committed when it returns), on a worker thread.

        Pass `write=True` when `fn` writes (see `transaction`)."""

        def call() -> T:
            with self.transaction(write=write) as conn:
                return fn(conn)

        return await asyncio.to_thread(call)

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling would BEGIN lazily (DEFERRED) and hide BEGIN IMMEDIATE from us:
        # turn it off and emit BEGIN ourselves (SQLAlchemy's documented pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL: readers (the dashboard) never wait for the writer (ingest). synchronous stays FULL: a device
        # deletes a result once acknowledged, so an acknowledged commit must survive a power cut.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("hub_sqlite_begin", "BEGIN"))

    return engine
