"""Engine creation and transactions for SQLite and PostgreSQL.

``database.url`` is ``sqlite:///path`` or ``postgresql://...``; we pick the
async drivers (aiosqlite, asyncpg). SQLite runs in WAL mode with a busy
timeout, and every write transaction (:meth:`Database.transaction`) starts
with ``BEGIN IMMEDIATE`` so that two processes never deadlock upgrading a read
lock to a write lock: SQLite thus serialises writers, which is also our
per-payment lock there. Reads (``engine.connect()`` blocks, which never
commit) start a deferred ``BEGIN``: a WAL snapshot that waits for nobody.
Within one process, write transactions queue on an asyncio lock before they
reach SQLite, because SQLite's busy handler makes a waiting writer sleep and
poll (up to 100 ms a turn) while the lock wakes the next one at once. On
PostgreSQL the per-payment lock is ``SELECT ... FOR UPDATE``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bcpay.errors import ConfigError


def async_url(url: str) -> str:
    """Map the configured URL to its async driver URL."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    if url.startswith("sqlite://"):
        raise ConfigError("database.url: use sqlite:///relative/path or sqlite:////absolute/path")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    if url.startswith("postgresql+asyncpg://"):
        return url
    raise ConfigError(f"database.url: unsupported database URL scheme in {safe_url(url)}")


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return "<unparseable URL>"


class Database:
    """One async engine and the transaction helper everything uses."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        driver_url = async_url(url)
        self.is_sqlite = driver_url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=10, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(driver_url, **kwargs)
        self._writer: asyncio.Lock | None = None
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        self._writer_task: asyncio.Task[object] | None = None
        if self.is_sqlite:
            _configure_sqlite(self.engine)

    def __repr__(self) -> str:
        return f"Database({safe_url(self.url)!r})"

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if self.is_sqlite else "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside one transaction, committed on success."""
        if not self.is_sqlite:
            async with self.engine.begin() as conn:
                yield conn
            return
        task = asyncio.current_task()
        if task is not None and task is self._writer_task:
            # It would wait for itself forever; SQLite used to fail after busy_timeout.
            raise RuntimeError("a SQLite write transaction was opened inside another one in the same task")
        async with self._sqlite_writer():
            self._writer_task = task
            try:
                async with self.engine.connect() as conn:
                    conn.sync_connection.info[_IMMEDIATE] = True  # type: ignore[union-attr]
                    async with conn.begin():
                        yield conn
            finally:
                self._writer_task = None

    def _sqlite_writer(self) -> asyncio.Lock:
        # One lock per event loop: a Database may outlive the loop it was first used on (tests, CLI).
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer_loop is not loop:
            self._writer, self._writer_loop = asyncio.Lock(), loop
        return self._writer

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except (SQLAlchemyError, OSError):
            return False

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


_IMMEDIATE = "bcpay_begin_immediate"


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, busy timeout, foreign keys; BEGIN IMMEDIATE for write transactions, BEGIN for reads.

    pysqlite's own transaction handling is switched off (isolation_level=None)
    so that SQLAlchemy's ``begin`` event can emit the BEGIN we want; see the
    SQLAlchemy "Serializable isolation / Savepoints / Transactional DDL" notes
    for the pysqlite driver.
    """
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop(_IMMEDIATE, False) else "BEGIN")
