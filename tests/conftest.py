"""Shared fixtures: real SQLite and PostgreSQL databases, settings, the fake world.

PostgreSQL is the server already running on these machines (127.0.0.1:5432,
trust auth). Each test session creates a fresh database and drops it at the
end; each test starts from empty tables. When PostgreSQL is unreachable the
postgres tests skip locally but FAIL under CI (CI=true), so CI can never pass
without them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

PG_ADMIN_DSN = os.environ.get("BCPAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """``serve`` run in-process (CliRunner) sets up bcpay's loggers (no propagation; with JSON the root
    logger and Python's warnings too): undo that for the tests after it.

    Only bcpay's own handlers are taken off: pytest adds and removes its capture handlers around
    every phase, and putting back a saved list would bring old ones back.
    """
    from bcpay.logs import JsonFormatter, TextFormatter

    ours, root = logging.getLogger("bcpay"), logging.getLogger()
    level, propagate, root_level = ours.level, ours.propagate, root.level
    yield
    for logger in (ours, root):
        for handler in logger.handlers[:]:
            if isinstance(handler.formatter, (JsonFormatter, TextFormatter)):
                logger.removeHandler(handler)
    ours.setLevel(level)
    ours.propagate = propagate
    root.setLevel(root_level)
    logging.captureWarnings(False)


def _in_thread(factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a coroutine to completion on its own loop in another thread.

    Session fixtures may be first requested from inside a running test loop,
    where ``asyncio.run`` is not allowed.
    """
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(factory())).result()


def _pg_admin(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _in_thread(run)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated once."""
    name = f"bcpay_test_{secrets.token_hex(4)}"
    try:
        _pg_admin(f'CREATE DATABASE "{name}"')
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI and unreachable: {exc!r}")
        pytest.skip(f"PostgreSQL unreachable: {exc!r}")
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    from bcpay.storage.db import Database
    from bcpay.storage.migrate import upgrade

    async def migrate() -> None:
        db = Database(url)
        await upgrade(db)
        await db.dispose()

    _in_thread(migrate)
    yield url
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_empty(pg_database: str) -> Iterator[str]:
    """A never-migrated PostgreSQL database next to the session's one, dropped afterwards."""
    name = pg_database.rsplit("/", 1)[1] + "_old"
    _pg_admin(f'CREATE DATABASE "{name}"')
    yield pg_database.rsplit("/", 1)[0] + "/" + name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A never-migrated database: a new SQLite file and a new PostgreSQL database, one test each."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    url: str = request.getfixturevalue("pg_empty")
    return url


FUTURE_REVISION = "9999"


async def _put_revision(url: str, revision: str, oldest_code: str | None) -> None:
    from sqlalchemy import delete, insert, text

    from bcpay.storage.db import Database
    from bcpay.storage.schema import schema_compat

    db = Database(url)
    try:
        async with db.transaction() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :revision"), {"revision": revision})
            await conn.execute(delete(schema_compat).where(schema_compat.c.revision == revision))
            if oldest_code is not None:
                await conn.execute(insert(schema_compat).values(revision=revision, oldest_code=oldest_code))
    finally:
        await db.dispose()


async def _forget_future(url: str) -> None:
    from sqlalchemy import delete, text

    from bcpay.storage import migrate
    from bcpay.storage.db import Database
    from bcpay.storage.schema import schema_compat

    db = Database(url)
    try:
        async with db.transaction() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :head"),
                               {"head": migrate.head_revision()})
            await conn.execute(delete(schema_compat).where(schema_compat.c.revision.not_in(migrate.known_revisions())))
    finally:
        await db.dispose()


@pytest.fixture
def newer_schema(db_url: str) -> Iterator[Callable[[str | None], None]]:
    """``newer_schema(oldest_code)`` puts the test's database at revision 9999, as a newer bcpay would
    leave it, with a compatibility marker naming ``oldest_code`` (None: no marker row).

    The session's PostgreSQL database is shared, so the head revision comes back afterwards, failed
    test or not.
    """
    try:
        yield lambda oldest_code: _in_thread(lambda: _put_revision(db_url, FUTURE_REVISION, oldest_code))
    finally:
        _in_thread(lambda: _forget_future(db_url))


async def _truncate(url: str) -> None:
    from sqlalchemy import text

    from bcpay.storage.db import Database
    from bcpay.storage.schema import metadata

    db = Database(url)
    # schema_compat belongs to the migrations, like alembic_version: it stays.
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables if t.name != "schema_compat")
    async with db.transaction() as conn:
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await db.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database: SQLite file and PostgreSQL, one test each."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'bcpay.db'}"
        from bcpay.storage.db import Database
        from bcpay.storage.migrate import upgrade

        db = Database(url)
        await upgrade(db)
        await db.dispose()
        yield url
    else:
        url = request.getfixturevalue("pg_database")
        await _truncate(url)
        yield url


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database only (for tests that need one backend)."""
    from bcpay.storage.db import Database
    from bcpay.storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'bcpay.db'}"
    db = Database(url)
    await upgrade(db)
    await db.dispose()
    return url


@pytest.fixture(scope="session")
def secret_key() -> str:
    """A real Fernet key for the session."""
    from bcpay.crypto import generate_key

    return generate_key()
