"""Migrations on real SQLite and PostgreSQL: the compatibility marker each one records."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select

from bcpay.storage import migrate
from bcpay.storage.db import Database
from bcpay.storage.schema import schema_compat


async def downgrade(db: Database, revision: str) -> None:
    """Alembic's downgrade on ``db`` (bcpay itself never downgrades)."""

    def run(conn: Any) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrate.MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)

    async with db.transaction() as conn:
        await conn.run_sync(run)


async def markers(db: Database) -> list[tuple[str, str]] | None:
    """The ``schema_compat`` rows, or None when the table does not exist."""
    async with db.read() as conn:
        if not await conn.run_sync(lambda c: inspect(c).has_table("schema_compat")):
            return None
        rows = await conn.execute(select(schema_compat.c.revision, schema_compat.c.oldest_code)
                                  .order_by(schema_compat.c.revision))
        return [(r.revision, r.oldest_code) for r in rows]


async def test_0004_says_0003s_code_runs_on_it_and_downgrades_cleanly(empty_db_url: str) -> None:
    """0003 -> 0004 adds the marker table with 0004's row; back to 0003 removes it; up again restores it."""
    db = Database(empty_db_url)
    try:
        await migrate.upgrade(db, "0003")
        assert await markers(db) is None
        assert await migrate.upgrade(db, "0004") == ("0003", "0004")
        assert await markers(db) == [("0004", "0003")]
        await downgrade(db, "0003")
        assert await migrate.current_revision(db) == "0003"
        assert await markers(db) is None
        await migrate.upgrade(db)
        assert (await markers(db) or [])[0] == ("0004", "0003")
    finally:
        await db.dispose()


async def test_every_migration_from_0004_on_records_which_code_runs_on_it(empty_db_url: str) -> None:
    """The rule for migration authors, checked: each revision's row names itself or an older revision."""
    order = [s.revision for s in reversed(list(ScriptDirectory(str(migrate.MIGRATIONS)).walk_revisions()))]
    marked = order[order.index("0004"):]
    db = Database(empty_db_url)
    try:
        for revision in marked:
            await migrate.upgrade(db, revision)
            found = dict(await markers(db) or [])
            assert revision in found, f"migration {revision} records no schema_compat row"
            assert found[revision] in order[:order.index(revision) + 1], (revision, found[revision])
    finally:
        await db.dispose()
