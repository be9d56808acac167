"""The hub's database: one SQLAlchemy engine (SQLite or PostgreSQL), migrated with Alembic at start, used from
worker threads so the event loop never waits on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine

T = TypeVar("T")


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (blocking; at start)."""
        raise NotImplementedError  # being written

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """`fn(connection)` inside one transaction (committed when it returns), on a worker thread."""

        def call() -> T:
            with self.engine.begin() as conn:
                return fn(conn)

        return await asyncio.to_thread(call)

    def close(self) -> None:
        self.engine.dispose()
