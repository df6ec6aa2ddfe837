"""Schema migrations (Alembic), applied by ``bcpay db upgrade``, and the start-up schema check.

Alembic is configured in code, not by an ``alembic.ini``: the scripts live in
the package (``bcpay/storage/migrations``) and run on bcpay's own async engine
through ``run_sync``.

Every migration from 0004 on records in ``schema_compat`` the oldest code
revision that can run on its schema (:func:`record_compat`). A process whose
code is older than the database's schema reads that marker: if it names a
revision this code knows, the process runs (and warns); else it refuses. So a
rolling upgrade over several hosts keeps the old processes up while the new
schema only adds things they ignore (ARCHITECTURE.md, "Schema upgrades").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from bcpay.errors import ConfigError
from bcpay.storage.db import Database
from bcpay.storage.schema import schema_compat

MIGRATIONS = Path(__file__).with_name("migrations")

log = logging.getLogger("bcpay.storage")

SchemaState = Literal["current", "behind", "newer_compatible", "newer"]


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
    """Migrate the database to ``revision``; returns (before, after).

    A schema from a newer bcpay is refused (``db_newer``): this version has no
    script to go from there, and Alembic would fail with "Can't locate revision".
    """

    def _upgrade(conn: Any) -> None:
        status = _read_status(conn)
        if status.state in ("newer", "newer_compatible"):
            runs = " and can still run on it" if status.state == "newer_compatible" else ""
            raise ConfigError(
                f"the database schema ({status.revision}) is from a newer bcpay than this one (which knows up "
                f"to {status.head}{runs}): there is nothing here to upgrade; run `bcpay db upgrade` with that "
                "version", code="db_newer",
            )
        command.upgrade(_config(conn), revision)

    before = await current_revision(db)
    async with db.transaction() as conn:  # BEGIN IMMEDIATE on SQLite: two processes may migrate at once
        await conn.run_sync(_upgrade)
    after = await current_revision(db)
    assert after is not None
    return before, after


async def is_current(db: Database) -> bool:
    """True when the database is at the head revision."""
    return await current_revision(db) == head_revision()


def known_revisions() -> set[str]:
    """Every revision this version of bcpay ships."""
    return {script.revision for script in ScriptDirectory.from_config(_config(None)).walk_revisions()}


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands for this version of bcpay.

    ``state`` is one of: ``current`` (at this version's head); ``behind``
    (never migrated, or at an older revision: ``bcpay db upgrade``);
    ``newer_compatible`` (from a newer bcpay whose marker names a revision
    this version knows: this version runs on it); ``newer`` (from a newer
    bcpay that needs that bcpay, or that recorded no marker).
    """

    revision: str | None
    head: str
    state: SchemaState
    oldest_code: str | None = None  # the marker of a newer revision (None: none recorded)


def _read_status(conn: Any) -> SchemaStatus:
    """The status, read on a synchronous connection (inside ``run_sync``)."""
    revision = MigrationContext.configure(conn).get_current_revision()
    head, known = head_revision(), known_revisions()
    if revision == head:
        return SchemaStatus(revision, head, "current")
    if revision is None or revision in known:
        return SchemaStatus(revision, head, "behind")
    oldest_code = None
    if sa.inspect(conn).has_table(schema_compat.name):
        oldest_code = conn.execute(
            sa.select(schema_compat.c.oldest_code).where(schema_compat.c.revision == revision)
        ).scalar_one_or_none()
    state: SchemaState = "newer_compatible" if oldest_code is not None and oldest_code in known else "newer"
    return SchemaStatus(revision, head, state, oldest_code)


async def schema_status(db: Database) -> SchemaStatus:
    """Where the database's schema stands for this version (``bcpay doctor`` reports it)."""
    async with db.read() as conn:
        return await conn.run_sync(_read_status)


async def ready_schema(db: Database) -> None:
    """Make sure this version can run on ``db``: SQLite is migrated now; PostgreSQL must be at this
    version's head (``bcpay db upgrade``).

    A schema from a newer bcpay is accepted, with a warning, when its marker
    names a revision this version knows (the newer migrations only added what
    this code ignores); otherwise it is refused as needing a newer bcpay.
    Such a schema is never "upgraded", on SQLite either.
    """
    status = await schema_status(db)
    if status.state == "newer":
        needs = f" (one at revision {status.oldest_code} or later)" if status.oldest_code else ""
        raise ConfigError(
            f"the database schema ({status.revision}) is from a newer bcpay than this one (which knows up to "
            f"{status.head}) and needs a newer bcpay{needs}: run that version", code="db_newer",
        )
    if status.state == "newer_compatible":
        log.warning(
            "the database schema (%s) is from a newer bcpay; this one (%s) runs on it because that schema "
            "accepts bcpay from revision %s on: upgrade this host", status.revision, status.head, status.oldest_code,
        )
        return
    if db.is_sqlite:
        await upgrade(db)
    elif status.state == "behind":
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
      they are upgraded (or, in the second half of an expand/contract pair,
      the revision whose code stopped using what this one removes).

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
