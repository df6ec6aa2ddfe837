"""Storage on real SQLite and PostgreSQL: migrations, constraints, the outbox lease."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from bcpay import outbox
from bcpay.crypto import Vault, generate_key
from bcpay.errors import ConfigError
from bcpay.storage import db as db_module
from bcpay.storage import migrate
from bcpay.storage import queries as q
from bcpay.storage.db import Database, Prepared, driver_url, safe_url
from bcpay.storage.schema import jobs, payments, stores

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


async def make_store(db: Database, store_hash: str = "abc123") -> int:
    async with db.transaction() as conn:
        store = await q.upsert_store(conn, store_hash, NOW, source="api_account", name="Shop")
    return store.id


def attempt(store_id: int, order_id: int, n: int, status: str = "pending") -> dict[str, object]:
    return {
        "token": f"tok-{order_id}-{n}", "store_id": store_id, "order_id": order_id, "attempt_no": n,
        "merchant_order_no": f"abc123-{order_id}-{n}", "idempotency_key": f"k{order_id}{n}", "amount": 1999,
        "currency": "USD", "status": status, "created_at": NOW, "updated_at": NOW,
    }


@pytest.fixture
async def db(db_url: str):  # type: ignore[no-untyped-def]
    database = Database(db_url)
    yield database
    await database.dispose()


async def test_migrations_are_at_head_and_idempotent(db: Database) -> None:
    assert await migrate.is_current(db)
    before, after = await migrate.upgrade(db)
    assert before == after == migrate.head_revision()


async def test_one_open_attempt_per_order_is_a_schema_constraint(db: Database) -> None:
    """The partial unique index refuses a second creating/pending attempt."""
    store_id = await make_store(db)
    async with db.transaction() as conn:
        assert await q.insert_payment(conn, **attempt(store_id, 7, 1)) is not None
        assert await q.insert_payment(conn, **attempt(store_id, 7, 2, status="creating")) is None
        assert await q.insert_payment(conn, **attempt(store_id, 8, 1)) is not None
    async with db.transaction() as conn:
        first = await q.find_payment(conn, merchant_order_no="abc123-7-1")
        assert first is not None
        await q.update_payment(conn, first.id, status="failed")
        second = await q.insert_payment(conn, **attempt(store_id, 7, 2))
        assert second is not None and second.attempt_no == 2


async def test_concurrent_inserts_leave_exactly_one_open_attempt(db: Database) -> None:
    store_id = await make_store(db)

    async def try_insert(n: int) -> bool:
        async with db.transaction() as conn:
            return await q.insert_payment(conn, **attempt(store_id, 9, n)) is not None

    results = await asyncio.gather(*(try_insert(n) for n in range(1, 9)))
    assert results.count(True) == 1
    async with db.read() as conn:
        assert len(await q.order_attempts(conn, store_id, 9)) == 1


async def test_event_ids_are_stored_once(db: Database) -> None:
    store_id = await make_store(db)
    async with db.transaction() as conn:
        kwargs = {"event_id": "evt_1", "store_id": store_id, "type_": "payment.succeeded",
                      "celerypay_payment_id": "pay_1", "raw_body": "{}", "outcome": "received", "now": NOW}
        assert await q.record_event(conn, **kwargs) is True  # type: ignore[arg-type]
        assert await q.record_event(conn, **kwargs) is False  # type: ignore[arg-type]
    async with db.read() as conn:
        assert len(await q.list_events(conn)) == 1


async def test_timestamps_come_back_as_aware_utc(db: Database) -> None:
    store_id = await make_store(db)
    async with db.transaction() as conn:
        row = await q.insert_payment(conn, **attempt(store_id, 3, 1))
    assert row is not None and row.created_at == NOW and row.created_at.tzinfo is not None


async def test_outbox_lease_gives_each_job_to_one_worker(db: Database) -> None:
    store_id = await make_store(db)
    async with db.transaction() as conn:
        for i in range(5):
            await outbox.enqueue(conn, "mark_paid", {"payment_id": i}, now=NOW, store_id=store_id, dedupe_key=f"k{i}")
        assert not await outbox.enqueue(conn, "mark_paid", {"payment_id": 0}, now=NOW, dedupe_key="k0")
    a, b = await asyncio.gather(
        outbox.claim(db, owner="a", now=NOW, lease_seconds=60, limit=5),
        outbox.claim(db, owner="b", now=NOW, lease_seconds=60, limit=5),
    )
    assert sorted(j.payload["payment_id"] for j in a + b) == [0, 1, 2, 3, 4]
    assert not {j.id for j in a} & {j.id for j in b}
    # nothing more while leased; everything again once the leases run out
    assert await outbox.claim(db, owner="c", now=NOW, lease_seconds=60) == []
    later = await outbox.claim(db, owner="c", now=NOW + timedelta(seconds=61), lease_seconds=60)
    assert len(later) == 5 and all(j.attempts == 2 for j in later)


async def test_a_job_waits_uncounted_while_another_job_of_its_payment_is_leased(db_url: str) -> None:
    """Two processes: one claim leases the first job of payment 1 (not the second) and payment 2's;
    the other claim gets nothing until the first job is done, and the wait cost no attempt."""
    first, second = Database(db_url), Database(db_url)
    try:
        store_id = await make_store(first)
        async with first.transaction() as conn:
            for payment_id in (1, 1, 2):
                await outbox.enqueue(conn, "refund_status", {"payment_id": payment_id}, now=NOW, store_id=store_id)
        a = await outbox.claim(first, owner="a", now=NOW, lease_seconds=60)
        assert [(j.id, j.subject) for j in a] == [(1, "payment:1"), (3, "payment:2")]
        assert await outbox.claim(second, owner="b", now=NOW + timedelta(seconds=30), lease_seconds=60) == []
        waiting = [j for j in await outbox.list_jobs(second) if j.id == 2]
        assert [(j.state, j.attempts, j.lease_owner) for j in waiting] == [(outbox.QUEUED, 0, None)]
        assert await outbox.complete(first, a[0], owner="a", now=NOW)
        [b] = await outbox.claim(second, owner="b", now=NOW + timedelta(seconds=30), lease_seconds=60)
        assert (b.id, b.subject, b.attempts) == (2, "payment:1", 1)
    finally:
        await first.dispose()
        await second.dispose()


async def test_concurrent_claims_in_two_processes_never_lease_two_jobs_of_one_payment(db_url: str) -> None:
    """Eight claims at once from two processes over three jobs each of four payments: one job per
    payment is leased, whoever gets it (PostgreSQL: SKIP LOCKED alone leased p1's second job too)."""
    processes = [Database(db_url), Database(db_url)]
    try:
        store_id = await make_store(processes[0])
        async with processes[0].transaction() as conn:
            for payment_id in (1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4):
                await outbox.enqueue(conn, "refund_status", {"payment_id": payment_id}, now=NOW, store_id=store_id)
        for round_ in range(3):
            at = NOW + timedelta(seconds=61 * round_)  # the previous round's leases have run out
            claimed = await asyncio.gather(*(
                outbox.claim(processes[i % 2], owner=f"w{i}", now=at, lease_seconds=60, limit=1) for i in range(8)
            ))
            assert sorted(j.subject for jobs in claimed for j in jobs) == [f"payment:{p}" for p in (1, 2, 3, 4)]
    finally:
        for database in processes:
            await database.dispose()


async def test_concurrent_claims_in_two_processes_never_lease_two_jobs_of_one_order(db_url: str) -> None:
    """Eight claims at once from two processes over the jobs of two payments each of three orders: one
    job per order is leased, whichever payment it is about (each reads the order and then writes it)."""
    processes = [Database(db_url), Database(db_url)]
    try:
        store_id = await make_store(processes[0])
        async with processes[0].transaction() as conn:
            for payment_id, order_id in [(1, 10), (2, 10), (3, 11), (4, 11), (5, 12), (6, 12)] * 2:
                await outbox.enqueue(conn, "refund_status", {"payment_id": payment_id, "order_id": order_id},
                                     now=NOW, store_id=store_id)
        for round_ in range(3):
            at = NOW + timedelta(seconds=61 * round_)  # the previous round's leases have run out
            claimed = await asyncio.gather(*(
                outbox.claim(processes[i % 2], owner=f"w{i}", now=at, lease_seconds=60, limit=1) for i in range(8)
            ))
            assert sorted(j.subject for jobs in claimed for j in jobs) == [f"order:{store_id}:{o}" for o in (10, 11, 12)]
    finally:
        for database in processes:
            await database.dispose()


def test_a_job_about_a_payment_is_about_its_order_and_its_subject_fits_the_column() -> None:
    """The order when the payload names it; a job queued by 0007's code names only its payment and
    keeps that subject; the longest subject (two 64-bit ids, 45 characters) fits ``jobs.subject``."""
    assert outbox.subject_of(3, {"payment_id": 9, "order_id": 100, "amount": 5}) == "order:3:100"
    assert outbox.subject_of(3, {"order_id": 100}) == "order:3:100"
    assert outbox.subject_of(3, {"payment_id": 9}) == "payment:9"
    assert outbox.subject_of(3, {"digest": "x"}) is None
    longest = outbox.subject_of(2**63 - 1, {"payment_id": 2**63 - 1, "order_id": 2**63 - 1})
    assert longest is not None and len(longest) == 45 and jobs.c.subject.type.length == 64  # type: ignore[attr-defined]


async def test_a_job_queued_by_bcpay_before_0007_is_claimed_as_before(db: Database) -> None:
    """No subject in the row: neither waits for a leased job of its payment nor for one in its batch."""
    store_id = await make_store(db)
    async with db.transaction() as conn:
        for _ in range(3):
            await outbox.enqueue(conn, "refund_status", {"payment_id": 1}, now=NOW, store_id=store_id)
        await conn.execute(update(jobs).where(jobs.c.id > 1).values(subject=None))
    [a] = await outbox.claim(db, owner="a", now=NOW, lease_seconds=60, limit=1)
    assert (a.id, a.subject) == (1, "payment:1")
    assert [j.id for j in await outbox.claim(db, owner="b", now=NOW, lease_seconds=60)] == [2, 3]


async def test_outbox_complete_retry_and_dead(db: Database) -> None:
    async with db.transaction() as conn:
        await outbox.enqueue(conn, "k", {}, now=NOW)
    [job] = await outbox.claim(db, owner="w", now=NOW, lease_seconds=60)
    assert not await outbox.complete(db, job, owner="someone-else", now=NOW)
    state = await outbox.retry_later(db, job, owner="w", now=NOW, delay=10, error="boom", max_attempts=2)
    assert state == outbox.QUEUED
    assert await outbox.claim(db, owner="w", now=NOW + timedelta(seconds=5), lease_seconds=60) == []
    [job] = await outbox.claim(db, owner="w", now=NOW + timedelta(seconds=11), lease_seconds=60)
    assert await outbox.retry_later(db, job, owner="w", now=NOW, delay=10, error="boom", max_attempts=2) == outbox.DEAD
    dead = await outbox.list_jobs(db, state=outbox.DEAD)
    assert [j.last_error for j in dead] == ["boom"]
    stats = await outbox.stats(db, NOW)
    assert stats["dead"] == 1 and stats["depth"] == 0
    assert await outbox.retry_dead(db, now=NOW) == 1
    [job] = await outbox.claim(db, owner="w", now=NOW, lease_seconds=60)
    assert await outbox.complete(db, job, owner="w", now=NOW)
    assert (await outbox.stats(db, NOW))["depth"] == 0


def test_database_urls_map_to_async_drivers_and_hide_passwords() -> None:
    assert driver_url("sqlite:///x.db") == "sqlite+pysqlite:///x.db"
    assert driver_url("postgresql://u:p@h/db") == "postgresql+asyncpg://u:p@h/db"
    with pytest.raises(ConfigError):
        driver_url("mysql://x")
    assert "secretpw" not in safe_url("postgresql://u:secretpw@h/db")
    assert "secretpw" not in repr(Database("postgresql://u:secretpw@127.0.0.1/db"))


def test_vault_rotation_reencrypts_under_the_new_key() -> None:
    old, new = generate_key(), generate_key()
    sealed = Vault(old).seal("token-value")
    assert "token-value" not in sealed
    rotated = Vault(new, old).reencrypt(sealed)
    assert Vault(new).open(rotated) == "token-value"
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        Vault(new).open(sealed)


def test_vault_opens_a_value_again_and_still_refuses_a_tampered_one() -> None:
    """Opened values are kept by their exact sealed text: a changed byte is still refused."""
    vault = Vault(generate_key())
    sealed = vault.seal("merchant-secret")
    assert vault.open(sealed) == vault.open(sealed) == "merchant-secret"
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        vault.open(tampered)
    assert "merchant-secret" not in repr(vault)


async def test_a_rate_limited_retry_gives_its_attempt_back(db: Database) -> None:
    """Waiting out an upstream quota is not a failure: any number of them never kills the job."""
    async with db.transaction() as conn:
        await outbox.enqueue(conn, "k", {}, now=NOW)
    at = NOW
    for _ in range(5):
        [job] = await outbox.claim(db, owner="w", now=at, lease_seconds=60)
        assert job.attempts == 1
        state = await outbox.retry_later(db, job, owner="w", now=at, delay=1, error="429", max_attempts=2,
                                         counts=False)
        assert state == outbox.QUEUED
        at += timedelta(seconds=2)
    [job] = await outbox.claim(db, owner="w", now=at, lease_seconds=60)
    assert await outbox.retry_later(db, job, owner="w", now=at, delay=1, error="boom", max_attempts=2) == outbox.QUEUED
    [job] = await outbox.claim(db, owner="w", now=at + timedelta(seconds=2), lease_seconds=60)
    assert job.attempts == 2


@pytest.mark.postgres
async def test_a_transaction_that_need_not_be_durable_commits_without_waiting_for_the_wal_on_postgresql(
    pg_database: str,
) -> None:
    """``durable=False`` (a poll's "checked at"): synchronous_commit is off for that transaction alone; what it
    wrote is committed all the same, and the next transaction waits for the disk again."""
    from sqlalchemy import text

    db = Database(pg_database)
    try:
        store_id = await make_store(db, "nodur1")
        async with db.transaction(durable=False) as conn:
            assert (await conn.execute(text("SHOW synchronous_commit"))).scalar_one() == "off"
            await q.insert_payment(conn, **attempt(store_id, 4242, 1))
        async with db.transaction() as conn:
            assert (await conn.execute(text("SHOW synchronous_commit"))).scalar_one() == "on"
        async with db.read() as conn:
            assert [a.order_id for a in await q.order_attempts(conn, store_id, 4242)] == [4242]
    finally:
        await db.dispose()


FILL = ("INSERT INTO filler SELECT randomblob(4000) FROM (WITH RECURSIVE n(x) AS "
        "(SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 2000) SELECT x FROM n)")  # about 2,000 pages


async def test_a_commit_leaves_the_wal_checkpoint_to_the_background_thread(sqlite_url: str) -> None:
    """Serve and worker: the commit that grows the WAL past SQLite's 1,000 pages does not copy it into the
    database itself (two fsyncs on the loop); the background checkpoint does, a moment later. Closed, the
    commits checkpoint themselves again."""
    from pathlib import Path

    from sqlalchemy import text

    path = Path(sqlite_url.removeprefix("sqlite:///"))
    db = Database(sqlite_url)
    try:
        async with db.background_checkpoints(every=0.2):
            before = path.stat().st_size
            async with db.transaction() as conn:
                await conn.execute(text("CREATE TABLE filler (b BLOB)"))
                await conn.execute(text(FILL))
            assert path.stat().st_size < before + 1_000_000  # still only in the WAL
            for _ in range(100):
                if path.stat().st_size > before + 7_000_000:
                    break
                await asyncio.sleep(0.05)
            assert path.stat().st_size > before + 7_000_000
        async with db.transaction() as conn:
            await conn.execute(text(FILL))
        assert path.stat().st_size > before + 14_000_000
    finally:
        await db.dispose()


async def test_an_idle_worker_poll_takes_no_write_lock(sqlite_url: str) -> None:
    """Nothing due: claim answers at once even while another process holds SQLite's write lock."""
    db = Database(sqlite_url)
    await migrate.upgrade(db)
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        async with asyncio.timeout(2):
            assert await outbox.claim(db, owner="idle", now=NOW, lease_seconds=60) == []
    finally:
        other.execute("ROLLBACK")
        other.close()
        await db.dispose()


async def test_a_sqlite_writer_waits_for_another_process_without_blocking_the_loop(sqlite_url: str) -> None:
    """Another process holds the write lock: our writer sleeps on the loop, then commits."""
    path = sqlite_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    db = Database(sqlite_url)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def write() -> int:
        return await make_store(db)

    clock = asyncio.create_task(ticker())
    writer = asyncio.create_task(write())
    await asyncio.sleep(0.3)
    assert not writer.done()
    assert ticks >= 10, "the loop must keep running while the writer waits"
    other.execute("COMMIT")
    other.close()
    store_id = await asyncio.wait_for(writer, 5)
    clock.cancel()
    async with db.read() as conn:
        assert (await q.get_store_by_id(conn, store_id)).store_hash == "abc123"
    await db.dispose()


async def test_a_sqlite_writer_gives_up_after_the_busy_wait(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write lock held past BUSY_WAIT is a clear error, and nothing was written."""
    monkeypatch.setattr(db_module, "BUSY_WAIT", 0.2)
    path = sqlite_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    db = Database(sqlite_url)
    try:
        with pytest.raises(OperationalError, match="locked"):
            await make_store(db)
    finally:
        other.execute("ROLLBACK")
        other.close()
    async with db.read() as conn:
        assert await q.get_store(conn, "abc123") is None
    await db.dispose()


async def test_a_database_at_the_first_revision_upgrades_with_its_data(tmp_path: object) -> None:
    """0001 -> head keeps the stores and adds the used-JWT table."""
    from pathlib import Path

    url = f"sqlite:///{Path(str(tmp_path)) / 'old.db'}"
    db = Database(url)
    try:
        assert await migrate.upgrade(db, "0001") == (None, "0001")
        await make_store(db)
        assert await migrate.upgrade(db) == ("0001", migrate.head_revision())
        async with db.transaction() as conn:
            assert (await q.require_store(conn, "abc123")).name == "Shop"
            assert await q.use_jwt_once(conn, "jti-1", NOW + timedelta(hours=24), NOW)
            assert not await q.use_jwt_once(conn, "jti-1", NOW + timedelta(hours=24), NOW)
            # Once expired it is forgotten (and could not be replayed anyway: the JWT is past its exp).
            assert await q.use_jwt_once(conn, "jti-1", NOW + timedelta(hours=48), NOW + timedelta(hours=25))
    finally:
        await db.dispose()


async def test_an_update_naming_no_column_is_refused_not_half_done(db: Database) -> None:
    """A misspelt column fails loudly instead of the other columns changing alone."""
    store_id = await make_store(db)
    async with db.transaction() as conn:
        row = await q.insert_payment(conn, **attempt(store_id, 4, 1))
    assert row is not None
    with pytest.raises(TypeError, match=r"not columns of payments: \['statuz'\]"):
        async with db.transaction() as conn:
            await q.update_payment(conn, row.id, status="paid", statuz="paid")
    async with db.read() as conn:
        assert (await q.get_payment(conn, row.id)).status == row.status


async def test_a_prepared_statement_reads_what_sqlalchemy_reads(db: Database) -> None:
    """Same rows, same Python types (aware datetimes, ints, None) as an ordinary execution."""
    store_id = await make_store(db)
    async with db.transaction() as conn:
        row = await q.insert_payment(conn, **attempt(store_id, 5, 1))
        assert row is not None
        await q.update_payment(conn, row.id, expires_at=NOW + timedelta(minutes=30), paid_amount=None)
    prepared = Prepared(select(payments).where(payments.c.store_id == bindparam("store_id")))
    async with db.read() as conn:
        fast = (await conn.run(prepared, {"store_id": store_id})).one()
        plain = dict((await conn.execute(select(payments).where(payments.c.store_id == store_id))).mappings().one())
    assert fast == plain
    assert fast["expires_at"] == NOW + timedelta(minutes=30) and fast["expires_at"].tzinfo is not None
    assert fast["amount"] == 1999 and isinstance(fast["amount"], int) and fast["paid_amount"] is None


async def test_a_prepared_update_sets_the_columns_it_is_given_and_counts_rows(db: Database) -> None:
    store_id = await make_store(db)
    async with db.transaction() as conn:
        for order_id in (1, 2):
            assert await q.insert_payment(conn, **attempt(store_id, order_id, 1)) is not None
    touch = Prepared(update(payments).where(payments.c.store_id == bindparam("_store_id")))
    async with db.transaction() as conn:
        assert (await conn.run(touch, {"_store_id": store_id, "failure_code": "x"})).rowcount == 2
        assert (await conn.run(touch, {"_store_id": store_id, "outcome": "y", "failure_code": "z"})).rowcount == 2
        assert (await conn.run(touch, {"_store_id": store_id + 1, "outcome": "n"})).rowcount == 0
    async with db.read() as conn:
        rows = await q.order_attempts(conn, store_id, 1) + await q.order_attempts(conn, store_id, 2)
    assert {(r.failure_code, r.outcome) for r in rows} == {("z", "y")}


async def test_a_prepared_statement_refuses_a_missing_parameter(db: Database) -> None:
    """A forgotten WHERE value is an error, never a silent ``= NULL``."""
    await make_store(db)
    by_hash = Prepared(select(stores).where(stores.c.store_hash == bindparam("store_hash")))
    async with db.read() as conn:
        with pytest.raises(SQLAlchemyError, match="store_hash"):
            await conn.run(by_hash, {})


async def test_a_prepared_insert_turns_a_constraint_into_integrity_error(db: Database) -> None:
    store_id = await make_store(db)
    add = Prepared(insert(payments))
    async with db.transaction() as conn:
        await conn.run(add, attempt(store_id, 6, 1))
        with pytest.raises(IntegrityError):
            async with conn.savepoint():
                await conn.run(add, attempt(store_id, 6, 1))  # same token: unique
    async with db.read() as conn:
        assert len(await q.order_attempts(conn, store_id, 6)) == 1


async def test_prepared_reads_in_one_read_see_one_snapshot(sqlite_url: str) -> None:
    """On SQLite the prepared path starts the read's transaction itself, so a commit in between is unseen."""
    db = Database(sqlite_url)
    try:
        await migrate.upgrade(db)
        store_id = await make_store(db)
        async with db.read() as conn:
            assert await q.find_payment(conn, merchant_order_no="abc123-8-1") is None
            other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
            with other:
                other.execute(
                    "INSERT INTO payments (token, store_id, order_id, attempt_no, merchant_order_no,"
                    " idempotency_key, amount, currency, status, refunded_amount, created_at, updated_at)"
                    " VALUES ('t', ?, 8, 1, 'abc123-8-1', 'k', 1, 'USD', 'pending', 0, '2026-11-25 12:00:00',"
                    " '2026-11-25 12:00:00')",
                    (store_id,),
                )
            other.close()
            assert await q.find_payment(conn, merchant_order_no="abc123-8-1") is None
        async with db.read() as conn:
            assert await q.find_payment(conn, merchant_order_no="abc123-8-1") is not None
            assert (await conn.execute(select(payments.c.token))).scalars().all() == ["t"]  # SQLAlchemy, same read
            raw = conn._conn.connection.driver_connection  # type: ignore[union-attr]
        assert not raw.in_transaction  # ended when the read gave its connection back
        async with db.transaction() as conn:  # a write after reads on the same pooled connection
            await q.update_payment_if(conn, 1, "pending", outcome="x")
    finally:
        await db.dispose()


async def test_two_settings_saves_at_once_keep_both_changes(db_url: str, secret_key: str) -> None:
    """Each save reads the store's settings, changes one key and writes them back: under the row's lock,
    so neither writes over the other (PostgreSQL; SQLite's writers already take turns)."""
    from bcpay import stores as stores_lib
    from tests.world import STORE_HASH, open_world

    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        rt = w.rt
        async with rt.db.transaction() as conn:  # a third save holds the store; both below read behind it
            held = await q.require_store(conn, STORE_HASH, lock=True)
            saves = [asyncio.create_task(stores_lib.update_settings(rt, STORE_HASH, change))
                     for change in ({"on_expired": "cancel"}, {"return_to": "bcpay"})]
            await asyncio.sleep(0.3)
            assert not any(t.done() for t in saves)
            await q.update_store(conn, held.id, rt.now(), name=held.name)
        await asyncio.gather(*saves)
        async with rt.db.read() as conn:
            assert (await q.require_store(conn, STORE_HASH)).settings == {
                "on_expired": "cancel", "return_to": "bcpay", "unpaid_hold": 60}


@pytest.mark.postgres
async def test_the_postgresql_pool_takes_its_size_from_the_settings(pg_database: str, secret_key: str) -> None:
    """database.pool_size / max_overflow: several processes must fit the server's max_connections."""
    from bcpay.config import load_settings
    from bcpay.runtime import open_runtime

    settings = load_settings(environ={}, overrides={
        "app": {"secret_key": secret_key}, "database": {"url": pg_database, "pool_size": 3, "max_overflow": 1}})
    async with open_runtime(settings) as rt:
        pool = rt.db._pg.pool  # type: ignore[attr-defined]
        assert (pool.size(), pool._max_overflow) == (3, 1)

