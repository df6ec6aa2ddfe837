"""Schema migrations (Alembic), applied by ``bcpay db upgrade``.

Alembic is configured in code, not by an ``alembic.ini``: the scripts live in
the package (``bcpay/storage/migrations``) and run on bcpay's own async engine
through ``run_sync``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from bcpay.errors import ConfigError
from bcpay.storage.db import Database

MIGRATIONS = Path(__file__).with_name("migrations")


def _config(connection: Any) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this version of bcpay."""
    head = ScriptDirectory.from_config(_config(None)).get_current_head()
    assert head is not None
    return head


async def current_revision(db: Database) -> str | None:
    """The revision the database is at (None when never migrated)."""

    def _read(conn: Any) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with db.read() as conn:
        return await conn.run_sync(_read)


async def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database to ``revision``; returns (before, after)."""
    before = await current_revision(db)
    async with db.transaction() as conn:  # BEGIN IMMEDIATE on SQLite: two processes may migrate at once
        await conn.run_sync(lambda c: command.upgrade(_config(c), revision))
    after = await current_revision(db)
    assert after is not None
    return before, after


async def is_current(db: Database) -> bool:
    """True when the database is at the head revision."""
    return await current_revision(db) == head_revision()


def known_revisions() -> set[str]:
    """Every revision this version of bcpay ships."""
    return {script.revision for script in ScriptDirectory.from_config(_config(None)).walk_revisions()}


async def ready_schema(db: Database) -> None:
    """Make sure this version can run on ``db``: SQLite is migrated now; PostgreSQL must be at this
    version's head (``bcpay db upgrade``). A schema from a newer bcpay is named as such."""
    current = await current_revision(db)
    if current is not None and current not in known_revisions():
        raise ConfigError(
            f"the database schema ({current}) is from a newer bcpay than this one (which knows up to "
            f"{head_revision()}): run that version", code="db_newer",
        )
    if db.is_sqlite:
        await upgrade(db)
    elif current != head_revision():
        raise ConfigError("the database schema is not current: run `bcpay db upgrade`", code="db_outdated")


def record_compat(revision: str, oldest_code: str) -> None:
    """Record that code from revision ``oldest_code`` on can run on ``revision``'s schema.

    Every migration from 0004 on calls this at the end of its ``upgrade()``.
    The rule for ``oldest_code``:

    - expand only (a new table, a nullable column or one with a server
      default, an index, a wider type): code from before this migration never
      notices, so name the oldest code the previous revision accepts (its own
      ``oldest_code``; 0004 names 0003, which recorded none);
    - contracting (a dropped or renamed table or column, NOT NULL or a
      narrower type on an existing column, a constraint old code could break):
      name this revision itself, and older processes refuse to start until
      they are upgraded.

    When unsure, name the revision itself: that is what happened before the
    marker existed. A downgrade may leave the row: it is read only while the
    database is at ``revision``. The table is written through a lightweight
    ``sa.table`` so that a later change to the model cannot change what an old
    migration does.
    """
    from alembic import op  # the running migration's operations: only valid inside one

    marker = sa.table("schema_compat", sa.column("revision", sa.Text), sa.column("oldest_code", sa.Text))
    op.execute(marker.delete().where(marker.c.revision == revision))
    op.execute(marker.insert().values(revision=revision, oldest_code=oldest_code))


def autogenerate(db_url: str, message: str) -> None:  # pragma: no cover - developer tool
    """Write a new revision by comparing the schema to a migrated database."""
    import asyncio

    async def _run() -> None:
        db = Database(db_url)
        await upgrade(db)
        async with db.transaction() as conn:
            await conn.run_sync(
                lambda c: command.revision(_config(c), message=message, autogenerate=True)
            )
        await db.dispose()

    asyncio.run(_run())
