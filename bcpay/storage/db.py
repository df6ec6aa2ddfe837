"""Engine creation, connections and transactions for SQLite and PostgreSQL.

``database.url`` is ``sqlite:///path`` or ``postgresql://...``. Everything
outside this module sees one small connection type, :class:`Conn` (``execute``,
``savepoint``, ``dialect_name``), from :meth:`Database.read` or
:meth:`Database.transaction`, whatever the database.

PostgreSQL goes through asyncpg; the per-payment lock there is
``SELECT ... FOR UPDATE``.

SQLite runs on the event loop's own thread, through the standard ``sqlite3``
module. A statement takes microseconds, far less than handing it to a driver
thread and waking the loop when it is done (aiosqlite's way, which the hot-path
profiles showed costing more than the queries). What could block is waiting
for a lock, and that never happens on the loop: in WAL mode readers wait for
nobody (short of WAL recovery, allowed ``READ_BUSY_MS``), and a write
transaction starts with ``BEGIN IMMEDIATE`` under ``busy_timeout=0``: when
another process holds the write lock the attempt fails at once and is retried
after an asyncio sleep (backing off to ``BUSY_POLL_MAX``, for up to
``BUSY_WAIT`` seconds). Within one process write transactions queue on an asyncio lock
first, which wakes the next writer at once; SQLite's single writer is also our
per-payment lock there. ``synchronous=NORMAL``: a commit survives a crash of
the process, and WAL checkpoints are fsynced. By default SQLite runs such a
checkpoint inside the commit that grows the WAL past 1,000 pages, so its two
fsyncs would stall the loop (hundreds of ms on a busy shared disk); serve and
worker move them to a thread (:meth:`Database.background_checkpoints`).

The hot paths' statements are :class:`Prepared`: compiled once per dialect
and set of parameter names, and run with :meth:`Conn.run`. On SQLite that
goes straight to the ``sqlite3`` cursor with the column types' own bind and
result conversions; SQLAlchemy's per-execution bookkeeping (cache key,
parameter construction, result metadata) cost twice the statement itself in
the notification profile. On PostgreSQL it is an ordinary SQLAlchemy execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar, TypeVarTuple, overload

from sqlalchemy import Connection, CursorResult, create_engine, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import (
    DBAPIError,
    InvalidRequestError,
    MultipleResultsFound,
    NoResultFound,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.selectable import TypedReturnsRows
from sqlalchemy.util.typing import TupleAny

from bcpay.errors import ConfigError

T = TypeVar("T")
_Ts = TypeVarTuple("_Ts")

BUSY_WAIT = 30.0  # seconds a SQLite writer waits for another process's write lock
# Another process's write transaction lasts about a millisecond (a separate `bcpay worker` beside
# `serve`), so waiting up to 50 ms between tries added tens of ms to a notification's latency.
BUSY_POLL_MAX = 0.005  # seconds between tries at most; a try costs microseconds
READ_BUSY_MS = 100  # the rare SQLITE_BUSY a WAL reader can meet (recovery) may block the loop this long
CHECKPOINT_EVERY = 1.0  # seconds between a long-lived process's WAL checkpoints in a thread
AUTOCHECKPOINT_PAGES = 1000  # SQLite's default: a commit past this WAL size checkpoints itself
# With checkpoints in the background a commit still checkpoints itself past this size: a safety net
# should the thread fall behind (or stop), so the WAL never grows without bound.
FALLBACK_CHECKPOINT_PAGES = 20_000

log = logging.getLogger("bcpay.db")


def driver_url(url: str) -> str:
    """Map the configured URL to the URL of the driver bcpay uses."""
    if url.startswith("sqlite:///"):
        return "sqlite+pysqlite:///" + url.removeprefix("sqlite:///")
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


class Prepared:
    """A statement built once, compiled once per dialect and set of parameter names.

    ``UPDATE`` and ``INSERT`` statements built without ``.values()`` take
    their columns from the parameter names, as SQLAlchemy does, so each set
    of names is its own compiled form. Expanding (``IN``) parameters are not
    supported: such statements stay with :meth:`Conn.execute`.
    """

    __slots__ = ("_forms", "statement")

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._forms: dict[tuple[str, frozenset[str]], _Form] = {}

    def __repr__(self) -> str:
        return f"Prepared({str(self.statement)[:60]!r})"

    def form(self, dialect: Dialect, names: frozenset[str]) -> _Form:
        """The compiled form for these parameter names."""
        key = (dialect.name, names)
        form = self._forms.get(key)
        if form is None:
            form = self._forms[key] = _Form(self.statement, dialect, names)
        return form


class _Form:
    """One compiled form of a :class:`Prepared`: SQL text, argument order, conversions."""

    __slots__ = ("args", "columns", "sql")

    def __init__(self, statement: Executable, dialect: Dialect, names: frozenset[str]) -> None:
        assert isinstance(statement, ClauseElement)
        compiled = statement.compile(dialect=dialect, column_keys=sorted(names))
        assert isinstance(compiled, SQLCompiler)
        if compiled.positiontup is None:  # pragma: no cover - every dialect we run is positional here
            raise TypeError(f"{dialect.name} compiles named parameters; Prepared expects positional ones")
        self.sql = compiled.string
        self.args: list[tuple[str, bool, Any, Callable[[Any], Any] | None]] = []
        for name in compiled.positiontup:
            bind = compiled.binds[name]
            if bind.expanding:
                raise TypeError(f"Prepared does not take expanding parameters ({name})")
            given = name in names
            if not given and bind.required:
                raise InvalidRequestError(f"a value is required for the parameter {name!r}")
            if not given and bind.callable is not None:  # pragma: no cover - no such defaults in the schema
                raise TypeError(f"Prepared does not take callable defaults ({name})")
            self.args.append((name, given, bind.value, bind.type.dialect_impl(dialect).bind_processor(dialect)))
        # A SELECT's columns, or an INSERT/UPDATE's RETURNING columns (none without RETURNING).
        returned = getattr(statement, "exported_columns", ())
        self.columns: list[tuple[str, Callable[[Any], Any] | None]] = [
            (column.key, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in returned
        ]

    def arguments(self, params: dict[str, Any]) -> tuple[Any, ...]:
        """The positional arguments for ``params`` (names outside the form are refused)."""
        out = []
        for name, given, literal, process in self.args:
            value = params[name] if given else literal
            out.append(process(value) if process is not None and value is not None else value)
        return tuple(out)

    def row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        """One fetched row as a dict of converted values."""
        return {
            key: (process(value) if process is not None and value is not None else value)
            for (key, process), value in zip(self.columns, values, strict=True)
        }


class Rows:
    """What :meth:`Conn.run` returns: the rows as dicts, and how many rows the statement touched."""

    __slots__ = ("rowcount", "rows")

    def __init__(self, rows: list[dict[str, Any]], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def first(self) -> dict[str, Any] | None:
        """The first row, or None."""
        return self.rows[0] if self.rows else None

    def one(self) -> dict[str, Any]:
        """The only row; NoResultFound or MultipleResultsFound otherwise."""
        if not self.rows:
            raise NoResultFound("no row was found when one was required")
        if len(self.rows) > 1:
            raise MultipleResultsFound("multiple rows were found when exactly one was required")
        return self.rows[0]

    def scalars(self) -> list[Any]:
        """The first column of every row."""
        return [next(iter(row.values())) for row in self.rows]


class Conn:
    """An open connection inside a transaction: what the query functions take.

    It wraps a synchronous SQLAlchemy connection (SQLite, run on the loop) or
    an async one (PostgreSQL); callers cannot tell which.
    """

    def __init__(self, conn: Connection | AsyncConnection) -> None:
        self._conn = conn
        self.dialect: Dialect = conn.dialect

    @property
    def dialect_name(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.dialect.name

    @overload
    async def execute(
        self, statement: TypedReturnsRows[*_Ts], parameters: Any = None
    ) -> CursorResult[*_Ts]: ...

    @overload
    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[*TupleAny]: ...

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[*TupleAny]:
        """Run one statement."""
        if isinstance(self._conn, AsyncConnection):
            return await self._conn.execute(statement, parameters)
        return self._conn.execute(statement, parameters)

    async def run(self, prepared: Prepared, parameters: dict[str, Any]) -> Rows:
        """Run a prepared statement: on SQLite straight on the driver's cursor."""
        if isinstance(self._conn, AsyncConnection):
            result = await self._conn.execute(prepared.statement, parameters)
            rows = [dict(row) for row in result.mappings()] if result.returns_rows else []
            return Rows(rows, result.rowcount)
        form = prepared.form(self.dialect, frozenset(parameters))
        args = form.arguments(parameters)
        raw = self._conn.connection.driver_connection
        assert isinstance(raw, sqlite3.Connection)
        if not raw.in_transaction:
            # A read's snapshot starts with its first statement. Sent straight to the driver (through
            # SQLAlchemy's begin it cost more than the query); the pool's rollback on return ends it.
            raw.execute("BEGIN")
        try:
            cursor = raw.execute(form.sql, args)
            fetched = cursor.fetchall() if form.columns else []
        except sqlite3.Error as exc:
            raise DBAPIError.instance(form.sql, args, exc, sqlite3.Error) from exc
        return Rows([form.row(values) for values in fetched], cursor.rowcount)

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A nested transaction: rolled back alone if its block raises."""
        if isinstance(self._conn, AsyncConnection):
            async with self._conn.begin_nested():
                yield
        else:
            with self._conn.begin_nested():
                yield

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` with the underlying synchronous SQLAlchemy connection (Alembic)."""
        if isinstance(self._conn, AsyncConnection):
            return await self._conn.run_sync(fn)
        return fn(self._conn)


class Database:
    """One engine and the two ways in: :meth:`read` and :meth:`transaction`."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10, max_overflow: int = 10) -> None:
        self.url = url
        target = driver_url(url)
        self.is_sqlite = target.startswith("sqlite")
        self._writer: asyncio.Lock | None = None
        self._writer_loop: asyncio.AbstractEventLoop | None = None
        self._writer_task: asyncio.Task[object] | None = None
        if self.is_sqlite:
            # Never waits for a connection (no limit): a coroutine holding one may be the one to free it.
            # Connections move between the threads of tests and the sandbox, one user at a time.
            self._sqlite = create_engine(target, echo=echo, pool_size=8, max_overflow=-1,
                                         connect_args={"check_same_thread": False})
            self._autocheckpoint = AUTOCHECKPOINT_PAGES
            _configure_sqlite(self._sqlite, lambda: self._autocheckpoint)
            self.sqlalchemy_dialect: Dialect = self._sqlite.dialect
        else:
            self._pg = create_async_engine(target, echo=echo, pool_size=pool_size, max_overflow=max_overflow,
                                           pool_pre_ping=True)
            self.sqlalchemy_dialect = self._pg.dialect

    def __repr__(self) -> str:
        return f"Database({safe_url(self.url)!r})"

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return "sqlite" if self.is_sqlite else "postgresql"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Conn]:
        """A connection for reading: one consistent snapshot, never committed."""
        if not self.is_sqlite:
            async with self._pg.connect() as conn:
                yield Conn(conn)
            return
        with self._sqlite.connect() as sync_conn:
            yield Conn(sync_conn)

    @asynccontextmanager
    async def transaction(self, *, durable: bool = True) -> AsyncIterator[Conn]:
        """A connection inside one transaction, committed on success.

        ``durable=False`` is for writes a crash may lose without harm (a
        throttle's "checked at"): on PostgreSQL the commit then does not wait
        for its WAL to reach the disk (``synchronous_commit`` off for this
        transaction alone), a wait of seconds when the disk is busy. SQLite's
        commits never wait for the disk (``synchronous=NORMAL``).
        """
        if not self.is_sqlite:
            async with self._pg.begin() as conn:
                if not durable:
                    await conn.execute(_NOT_DURABLE)
                yield Conn(conn)
            return
        task = asyncio.current_task()
        if task is not None and task is self._writer_task:
            # It would wait for itself forever.
            raise RuntimeError("a SQLite write transaction was opened inside another one in the same task")
        async with self._sqlite_writer():
            self._writer_task = task
            try:
                with self._sqlite.connect() as sync_conn:
                    await _begin_immediate(sync_conn)
                    with sync_conn.begin():
                        yield Conn(sync_conn)
            finally:
                self._writer_task = None

    def _sqlite_writer(self) -> asyncio.Lock:
        # One lock per event loop: a Database may outlive the loop it was first used on (tests, CLI).
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer_loop is not loop:
            self._writer, self._writer_loop = asyncio.Lock(), loop
        return self._writer

    @asynccontextmanager
    async def background_checkpoints(self, every: float = CHECKPOINT_EVERY) -> AsyncIterator[None]:
        """SQLite: while open, WAL checkpoints run in a thread every ``every`` s, not inside commits.

        A commit on the loop then never waits for a checkpoint's fsyncs (short
        of :data:`FALLBACK_CHECKPOINT_PAGES`). The checkpoints are ``PASSIVE``:
        they copy what no reader still needs and wait for nobody, and
        ``sqlite3`` lets go of the GIL while they run. Nothing on PostgreSQL.
        """
        path = self._sqlite.url.database if self.is_sqlite else None
        if not path or path == ":memory:":
            yield
            return
        self._autocheckpoint = FALLBACK_CHECKPOINT_PAGES
        self._sqlite.dispose()  # pooled connections reconnect with the new threshold
        checkpointer = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        stop = asyncio.Event()
        task = asyncio.create_task(_checkpoint_loop(checkpointer, every, stop), name="bcpay-wal-checkpoints")
        try:
            yield
        finally:
            stop.set()
            await task
            checkpointer.close()
            self._autocheckpoint = AUTOCHECKPOINT_PAGES
            self._sqlite.dispose()

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self.read() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except (SQLAlchemyError, OSError):
            return False

    async def dispose(self) -> None:
        """Close every pooled connection."""
        if self.is_sqlite:
            self._sqlite.dispose()
        else:
            await self._pg.dispose()


_BEGUN = "bcpay_begun"
_NOT_DURABLE = text("SET LOCAL synchronous_commit TO OFF")


async def _begin_immediate(conn: Connection) -> None:
    """``BEGIN IMMEDIATE`` without blocking the loop: retried after a sleep while another process writes."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    deadline = time.monotonic() + BUSY_WAIT
    delay = 0.0005
    raw.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise OperationalError("BEGIN IMMEDIATE", None, exc) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, BUSY_POLL_MAX)
                continue
            conn.info[_BEGUN] = True  # the "begin" listener below must not emit a second BEGIN
            return
    finally:
        raw.execute(f"PRAGMA busy_timeout={READ_BUSY_MS}")


async def _checkpoint_loop(conn: sqlite3.Connection, every: float, stop: asyncio.Event) -> None:
    """``PRAGMA wal_checkpoint(PASSIVE)`` in a thread every ``every`` s until ``stop``, and once more then."""
    conn.execute("PRAGMA synchronous=NORMAL")
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        try:
            await asyncio.to_thread(conn.execute, "PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:  # the database's own problem shows in the next statement; keep trying
            log.warning("background WAL checkpoint failed: %s", exc)
        if stop.is_set():
            return


def _configure_sqlite(engine: Any, autocheckpoint: Callable[[], int]) -> None:
    """WAL, no busy wait on the loop, foreign keys; BEGIN for reads.

    pysqlite's own transaction handling is switched off (isolation_level=None)
    so that SQLAlchemy's ``begin`` event can emit the BEGIN we want; see the
    SQLAlchemy "Serializable isolation / Savepoints / Transactional DDL" notes
    for the pysqlite driver. Write transactions have already sent
    ``BEGIN IMMEDIATE`` (:func:`_begin_immediate`).
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={READ_BUSY_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={autocheckpoint()}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        begun = conn.info.pop(_BEGUN, False) or conn.connection.driver_connection.in_transaction
        if not begun:  # else BEGIN IMMEDIATE, or a prepared read's BEGIN, already started it
            conn.exec_driver_sql("BEGIN")
