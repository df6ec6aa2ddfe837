"""Migrations and the start-up schema check on real SQLite and PostgreSQL: the compatibility marker.

A process whose code is older than the database's schema runs when the
schema's ``schema_compat`` row names a revision this code knows, and is
refused otherwise (``db_newer``). Revision 9999 stands for a newer bcpay's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import column, insert, inspect, select, table, text

from bcpay import outbox
from bcpay.errors import ConfigError
from bcpay.storage import migrate
from bcpay.storage.db import Database
from bcpay.storage.schema import UTCDateTime, schema_compat

NewerSchema = Callable[[str | None], None]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.dispose()


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
    """The rule for migration authors, checked: each revision's row names itself or an older revision,
    and never older code than the revision before it accepts (after a contracting migration, no later
    one can let the code from before it run again)."""
    order = [s.revision for s in reversed(list(ScriptDirectory(str(migrate.MIGRATIONS)).walk_revisions()))]
    marked = order[order.index("0004"):]
    db = Database(empty_db_url)
    oldest_so_far = order[0]
    try:
        for revision in marked:
            await migrate.upgrade(db, revision)
            found = dict(await markers(db) or [])
            assert revision in found, f"migration {revision} records no schema_compat row"
            assert found[revision] in order[:order.index(revision) + 1], (revision, found[revision])
            assert order.index(found[revision]) >= order.index(oldest_so_far), (revision, found[revision])
            oldest_so_far = found[revision]
    finally:
        await db.dispose()


async def test_a_newer_schema_that_accepts_this_code_runs_with_a_warning(
    db: Database, newer_schema: NewerSchema, caplog: pytest.LogCaptureFixture
) -> None:
    """9999 names this version's head as the oldest code it accepts: start, say so, and leave it at 9999."""
    head = migrate.head_revision()
    newer_schema(head)
    with caplog.at_level(logging.WARNING, logger="bcpay.storage"):
        await migrate.ready_schema(db)
    [warning] = [r for r in caplog.records if r.name == "bcpay.storage"]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage() == (
        f"the database schema (9999) is from a newer bcpay; this one ({head}) runs on it because that "
        f"schema accepts bcpay from revision {head} on: upgrade this host"
    )
    assert await migrate.current_revision(db) == "9999"  # SQLite is not "upgraded" past its own head


async def test_a_newer_schema_that_accepts_older_code_than_this_runs_too(
    db: Database, newer_schema: NewerSchema
) -> None:
    """An expand-only chain can name an older revision than this head: this code is after it, so it runs."""
    newer_schema("0003")
    await migrate.ready_schema(db)
    assert (await migrate.schema_status(db)).state == "newer_compatible"


async def test_a_newer_schema_that_names_itself_needs_a_newer_bcpay(db: Database, newer_schema: NewerSchema) -> None:
    """A contracting migration names its own revision: this code does not know it and refuses."""
    newer_schema("9999")
    with pytest.raises(ConfigError, match=(
        rf"^the database schema \(9999\) is from a newer bcpay than this one \(which knows up to "
        rf"{migrate.head_revision()}\) and needs a newer bcpay \(one at revision 9999 or later\): run that version$"
    )) as refused:
        await migrate.ready_schema(db)
    assert refused.value.code == "db_newer"


async def test_a_newer_schema_without_a_marker_needs_a_newer_bcpay(db: Database, newer_schema: NewerSchema) -> None:
    """No row for the unknown revision: refused as before the marker, never 'run bcpay db upgrade'."""
    await migrate.ready_schema(db)  # at this version's head: nothing to say
    newer_schema(None)
    with pytest.raises(ConfigError, match=(
        rf"^the database schema \(9999\) is from a newer bcpay than this one \(which knows up to "
        rf"{migrate.head_revision()}\) and needs a newer bcpay: run that version$"
    )) as refused:
        await migrate.ready_schema(db)
    assert refused.value.code == "db_newer"


async def test_a_newer_schema_without_the_marker_table_needs_a_newer_bcpay(empty_db_url: str) -> None:
    """An unknown revision on a database with no schema_compat table at all is refused too."""
    db = Database(empty_db_url)
    try:
        await migrate.upgrade(db, "0003")
        async with db.transaction() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(ConfigError, match=r"schema \(9999\) .* and needs a newer bcpay: run that version$"):
            await migrate.ready_schema(db)
        assert (await migrate.schema_status(db)).state == "newer"
    finally:
        await db.dispose()


async def test_the_schema_status_from_empty_to_newer(empty_db_url: str) -> None:
    """Empty and older are behind (PostgreSQL still refuses them as outdated), head is current, 9999 is newer."""
    head = migrate.head_revision()
    db = Database(empty_db_url)
    try:
        assert await migrate.schema_status(db) == migrate.SchemaStatus(None, head, "behind")
        await migrate.upgrade(db, "0003")
        assert await migrate.schema_status(db) == migrate.SchemaStatus("0003", head, "behind")
        if db.is_sqlite:
            await migrate.ready_schema(db)  # SQLite is migrated on start
        else:
            with pytest.raises(ConfigError, match=r"^the database schema is not current: run `bcpay db upgrade`$"):
                await migrate.ready_schema(db)
            await migrate.upgrade(db)
        assert await migrate.schema_status(db) == migrate.SchemaStatus(head, head, "current")
        async with db.transaction() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        assert await migrate.schema_status(db) == migrate.SchemaStatus("9999", head, "newer")
        async with db.transaction() as conn:
            await conn.execute(schema_compat.insert().values(revision="9999", oldest_code=head))
        assert await migrate.schema_status(db) == migrate.SchemaStatus("9999", head, "newer_compatible", head)
    finally:
        await db.dispose()


async def test_upgrade_refuses_a_newer_schema_without_touching_it(db: Database, newer_schema: NewerSchema) -> None:
    """Not Alembic's "Can't locate revision": a ConfigError that names both revisions, and 9999 stays."""
    newer_schema(migrate.head_revision())
    with pytest.raises(ConfigError, match=(
        rf"^the database schema \(9999\) is from a newer bcpay than this one \(which knows up to "
        rf"{migrate.head_revision()} and can still run on it\): there is nothing here to upgrade; "
        r"run `bcpay db upgrade` with that version$"
    )):
        await migrate.upgrade(db)
    assert await migrate.current_revision(db) == "9999"


async def test_0005_adds_the_shared_quota_table_for_code_from_0003_on_and_downgrades_cleanly(
    empty_db_url: str,
) -> None:
    """0004 -> 0005 adds ``bc_quota`` and says 0003's code still runs; back to 0004 drops the table."""

    async def has_quota_table(db: Database) -> bool:
        async with db.read() as conn:
            return bool(await conn.run_sync(lambda c: inspect(c).has_table("bc_quota")))

    db = Database(empty_db_url)
    try:
        await migrate.upgrade(db, "0004")
        assert not await has_quota_table(db)
        assert await migrate.upgrade(db, "0005") == ("0004", "0005")
        assert await has_quota_table(db) and ("0005", "0003") in (await markers(db) or [])
        await downgrade(db, "0004")
        assert not await has_quota_table(db) and await migrate.current_revision(db) == "0004"
        await migrate.upgrade(db)
        assert await has_quota_table(db)
    finally:
        await db.dispose()


async def test_0007_adds_job_subjects_for_code_from_0003_on_and_downgrades_cleanly(empty_db_url: str) -> None:
    """0006 -> 0007 adds ``jobs.subject`` and its index and says 0003's code still runs: a job written
    as that code writes it (no subject) is claimed as before; back to 0006 drops both and keeps the job."""
    now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    old_jobs = table("jobs", *(column(name) for name in ("kind", "payload", "state", "attempts")),
                     *(column(name, UTCDateTime()) for name in ("run_after", "created_at", "updated_at")))

    async def subject_schema(db: Database) -> tuple[bool, bool]:
        def read(conn: Any) -> tuple[bool, bool]:
            found = inspect(conn)
            return ("subject" in {c["name"] for c in found.get_columns("jobs")},
                    "ix_jobs_subject" in {i["name"] for i in found.get_indexes("jobs")})

        async with db.read() as conn:
            return await conn.run_sync(read)

    db = Database(empty_db_url)
    try:
        await migrate.upgrade(db, "0006")
        assert await subject_schema(db) == (False, False)
        assert await migrate.upgrade(db, "0007") == ("0006", "0007")
        assert await subject_schema(db) == (True, True) and ("0007", "0003") in (await markers(db) or [])
        async with db.transaction() as conn:
            await conn.execute(insert(old_jobs).values(kind="refund_status", payload='{"payment_id":1}',
                                                       state="queued", attempts=0, run_after=now, created_at=now,
                                                       updated_at=now))
        [job] = await outbox.claim(db, owner="w", now=now, lease_seconds=60)
        assert (job.kind, job.subject, job.attempts) == ("refund_status", None, 1)
        await downgrade(db, "0006")
        assert await subject_schema(db) == (False, False) and await migrate.current_revision(db) == "0006"
        async with db.read() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM jobs"))).scalar_one() == 1
        await migrate.upgrade(db)
        assert await subject_schema(db) == (True, True)
    finally:
        await db.dispose()


async def test_0008_marks_captures_of_cancelled_or_deleted_orders_kept_apart(empty_db_url: str) -> None:
    """A payment with a paid_after_cancel or order_gone anomaly, recorded before bcpay marked such
    captures, is kept_apart after 0008 (its refund then leaves the order alone); others are untouched."""
    now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
    stamps = tuple(column(name, UTCDateTime()) for name in ("created_at", "updated_at"))
    stores_t = table("stores", column("id"), column("store_hash"), column("source"),
                     column("installed_at", UTCDateTime()), column("updated_at", UTCDateTime()))
    payments_t = table("payments", *(column(n) for n in (
        "id", "token", "store_id", "order_id", "attempt_no", "merchant_order_no", "idempotency_key", "amount",
        "currency", "status", "paid_amount", "outcome")), *stamps)
    anomalies_t = table("anomalies", *(column(n) for n in (
        "store_id", "order_id", "payment_id", "kind", "amount", "currency")), column("created_at", UTCDateTime()))
    db = Database(empty_db_url)
    try:
        await migrate.upgrade(db, "0007")
        async with db.transaction() as conn:
            await conn.execute(insert(stores_t).values(id=1, store_hash="abc123", source="app", installed_at=now,
                                                       updated_at=now))
            for pid, kind in ((1, "paid_after_cancel"), (2, "order_gone"), (3, "double_payment"), (4, None)):
                await conn.execute(insert(payments_t).values(
                    id=pid, token=f"t{pid}", store_id=1, order_id=100 + pid, attempt_no=1,
                    merchant_order_no=f"abc123-{100 + pid}-1", idempotency_key=f"k{pid}", amount=1999,
                    currency="USD", status="succeeded", paid_amount=1999,
                    outcome="duplicate_payment" if kind == "double_payment" else "applied",
                    created_at=now, updated_at=now))
                if kind:
                    await conn.execute(insert(anomalies_t).values(store_id=1, order_id=100 + pid, payment_id=pid,
                                                                  kind=kind, amount=1999, currency="USD",
                                                                  created_at=now))
        assert await migrate.upgrade(db, "0008") == ("0007", "0008")
        async with db.read() as conn:
            outcomes = dict((await conn.execute(select(payments_t.c.id, payments_t.c.outcome))).all())
        assert outcomes == {1: "kept_apart", 2: "kept_apart", 3: "duplicate_payment", 4: "applied"}
        assert ("0008", "0003") in (await markers(db) or [])
    finally:
        await db.dispose()


async def test_0009_frees_the_keys_of_done_snippet_updates_only(empty_db_url: str) -> None:
    """A done refresh_script job lets go of its key (a version may come back); a queued one keeps it, as do
    other kinds' jobs, done or not. Code from before 0008 (it does not know refunds held in doubt) may not
    start on it."""
    now = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
    jobs_t = table("jobs", *(column(n) for n in ("id", "kind", "payload", "dedupe_key", "state", "attempts")),
                   *(column(n, UTCDateTime()) for n in ("run_after", "created_at", "updated_at")))
    rows = {1: ("refresh_script", "done"), 2: ("refresh_script", "queued"), 3: ("mark_paid", "done")}
    db = Database(empty_db_url)
    try:
        await migrate.upgrade(db, "0008")
        async with db.transaction() as conn:
            for job_id, (kind, state) in rows.items():
                await conn.execute(insert(jobs_t).values(id=job_id, kind=kind, payload="{}", dedupe_key=f"key{job_id}",
                                                         state=state, attempts=1, run_after=now, created_at=now,
                                                         updated_at=now))
        assert await migrate.upgrade(db, "0009") == ("0008", "0009")
        async with db.read() as conn:
            keys = dict((await conn.execute(select(jobs_t.c.id, jobs_t.c.dedupe_key))).all())
        assert keys == {1: None, 2: "key2", 3: "key3"}
        assert ("0009", "0008") in (await markers(db) or [])
    finally:
        await db.dispose()


def _revision_named(slug: str) -> tuple[str, str]:
    """(revision, down_revision) of the migration whose file ends in ``_{slug}.py`` (ids get renumbered)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrate.MIGRATIONS))
    [script] = [s for s in ScriptDirectory.from_config(cfg).walk_revisions()
                if s.path.endswith(f"_{slug}.py")]
    assert isinstance(script.down_revision, str)
    return script.revision, script.down_revision


async def test_event_ids_and_webhook_hashes_become_unique_per_store_and_downgrade(empty_db_url: str) -> None:
    """Before: one event id or hook hash per database. After: per store, so a second store's row with the same
    id is stored while a repeat within one store is still refused; the code before accepts the schema. The
    downgrade keeps the first of the rows sharing an id and puts the global key back."""
    from sqlalchemy.exc import IntegrityError

    revision, before = _revision_named("per_store_dedupe_keys")
    now = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    stores_t = table("stores", *(column(n) for n in ("id", "store_hash", "source")),
                     *(column(n, UTCDateTime()) for n in ("installed_at", "updated_at")))
    events_t = table("events", *(column(n) for n in ("id", "event_id", "store_id", "type", "raw_body", "outcome")),
                     column("received_at", UTCDateTime()))
    hooks_t = table("webhook_receipts", *(column(n) for n in ("id", "hash", "store_id", "scope")),
                    column("received_at", UTCDateTime()))

    def event(row_id: int, store_id: int) -> Any:
        return insert(events_t).values(id=row_id, event_id="evt_same", store_id=store_id, type="payment.succeeded",
                                       raw_body="{}", outcome="queued", received_at=now)

    def hook(row_id: int, store_id: int) -> Any:
        return insert(hooks_t).values(id=row_id, hash="h-same", store_id=store_id, scope="store/order/updated",
                                      received_at=now)

    async def refused(statement: Any) -> bool:
        try:
            async with db.transaction() as conn:
                await conn.execute(statement)
        except IntegrityError:
            return True
        return False

    db = Database(empty_db_url)
    try:
        await migrate.upgrade(db, before)
        async with db.transaction() as conn:
            for store_id, store_hash in ((1, "aaa111"), (2, "bbb222")):
                await conn.execute(insert(stores_t).values(id=store_id, store_hash=store_hash, source="api_account",
                                                           installed_at=now, updated_at=now))
            await conn.execute(event(1, 1))
            await conn.execute(hook(1, 1))
        assert await refused(event(2, 2)) and await refused(hook(2, 2))  # the old, global keys

        assert await migrate.upgrade(db, revision) == (before, revision)
        found = dict(await markers(db) or [])
        assert found[revision] == found[before]  # expand only: the code the revision before accepts runs on it
        assert not await refused(event(2, 2)) and not await refused(hook(2, 2))
        assert await refused(event(3, 1)) and await refused(hook(3, 1))  # still once per store

        await downgrade(db, before)
        async with db.read() as conn:
            assert (await conn.execute(select(events_t.c.store_id))).scalars().all() == [1]
            assert (await conn.execute(select(hooks_t.c.store_id))).scalars().all() == [1]
        assert await refused(event(2, 2)) and await refused(hook(2, 2))
        await migrate.upgrade(db)
    finally:
        await db.dispose()


async def test_0013_keeps_existing_stores_off_the_refund_ledger_and_adds_bigcommerce_refund_ids(
    empty_db_url: str,
) -> None:
    """Stores from before 0013 get refund_from_bigcommerce = false unless they set it; refunds gain
    bc_refund_id; code from 0008 on runs on it, and it downgrades cleanly."""
    import json

    now = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
    stores_t = table("stores", column("id"), column("store_hash"), column("source"), column("settings_json"),
                     column("installed_at", UTCDateTime()), column("updated_at", UTCDateTime()))
    before = {1: "{}", 2: json.dumps({"refund_from_bigcommerce": True, "expires_in": 600})}
    db = Database(empty_db_url)
    try:
        await migrate.upgrade(db, "0012")
        async with db.transaction() as conn:
            for store_id, settings in before.items():
                await conn.execute(insert(stores_t).values(id=store_id, store_hash=f"s{store_id}", source="app",
                                                           settings_json=settings, installed_at=now, updated_at=now))
        assert await migrate.upgrade(db, "0013") == ("0012", "0013")
        async with db.read() as conn:
            after = {i: json.loads(s) for i, s in (await conn.execute(
                select(stores_t.c.id, stores_t.c.settings_json))).all()}
            columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("refunds")})
        assert after == {1: {"refund_from_bigcommerce": False},
                         2: {"refund_from_bigcommerce": True, "expires_in": 600}}
        assert "bc_refund_id" in columns
        assert ("0013", "0008") in (await markers(db) or [])
        await downgrade(db, "0012")
        async with db.read() as conn:
            columns = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("refunds")})
        assert "bc_refund_id" not in columns
    finally:
        await db.dispose()
