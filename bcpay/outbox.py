"""The durable outbox: jobs written in the same transaction as the state change.

A job is leased before it runs (``lease_owner``, ``lease_until``), so several
processes on one database never run one job twice at the same time. A crashed
worker's lease simply runs out and another worker takes the job. Failures back
off exponentially; after ``outbox.max_attempts`` a job is ``dead`` until an
operator retries it.

Jobs about one order never run at the same time, in one process or in
several, whichever payment of the order they are about: each reads the order
and then writes it, and two at once interleave. Two refunds' status jobs both
read the old status and both write it; an expired attempt's cancel reads
Awaiting Payment, the next attempt's mark_paid writes Paid, and the cancel
writes Cancelled over it. A job's ``subject`` (:func:`subject_of`: its
order, ``order:<store id>:<order id>``) is written when it is queued, and
:func:`claim` leases no job while another job of its subject is leased, nor
two jobs of one subject at once; such a job stays queued, uncounted, until
the other is finished, and then reads what the other wrote. That needs each
claim to see the leases of the claims before it, so claims run one at a
time: on SQLite every write transaction is ``BEGIN IMMEDIATE``; on
PostgreSQL a claim first takes a transaction-level advisory lock
(``FOR UPDATE SKIP LOCKED`` alone would let two claims lease two jobs of one
subject: neither sees the other's uncommitted lease).

A payment's job names its order in its payload (``order_id`` beside
``payment_id``, which is all the handlers read: any version runs any job).
Rows keep the subject they were written with; during a rolling upgrade:

- jobs queued by this code are kept apart per order by any claim from
  schema 0007's code on (it compares the rows' subjects as this one does),
  also from the order's ``order_status_changed`` job queued by such code
  (keyed ``order:<store id>:<order id>`` from 0007 on);
- a payment's job queued by 0007's code (``payment:<id>``) is kept apart
  only from jobs of its payment, and one queued before 0007 (no subject)
  from nothing, as before this change: the race above stays possible for
  them until they have run (rows are not re-keyed; a dead one an operator
  retries keeps its subject), and for any job a pre-0007 process claims.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, and_, bindparam, exists, func, insert, or_, select, text, update

from bcpay.storage.db import Conn, Database, Prepared
from bcpay.storage.records import JobRecord
from bcpay.storage.schema import jobs

QUEUED = "queued"
DONE = "done"
DEAD = "dead"
CANCELLED = "cancelled"  # by an uninstall; a reinstall queues them again
DISCARDED = "discarded"  # a dead job an operator gave up on (`bcpay jobs discard`)

# The PostgreSQL advisory lock every claim transaction takes first ("bcpay" + 1). See claim().
CLAIM_LOCK_KEY = 0x6263_7061_7900_0001


def subject_of(store_id: int | None, payload: object) -> str | None:
    """What a job is about: its store's order, else its payment (queued by 0007's code), else None.

    At most 45 characters (two 64-bit ids): ``jobs.subject`` holds 64.
    """
    if not isinstance(payload, dict):
        return None
    if "order_id" in payload:
        return f"order:{store_id}:{payload['order_id']}"
    if "payment_id" in payload:
        return f"payment:{payload['payment_id']}"
    return None


async def enqueue(
    conn: Conn,
    kind: str,
    payload: dict[str, Any],
    *,
    now: datetime,
    store_id: int | None = None,
    dedupe_key: str | None = None,
    delay: float = 0.0,
) -> bool:
    """Add a job inside the caller's transaction; False if ``dedupe_key`` exists."""
    values = {
        "store_id": store_id,
        "kind": kind,
        "payload": json.dumps(payload, separators=(",", ":"), sort_keys=True),
        "dedupe_key": dedupe_key,
        "subject": subject_of(store_id, payload),
        "state": QUEUED,
        "attempts": 0,
        "run_after": now + timedelta(seconds=delay),
        "created_at": now,
        "updated_at": now,
    }
    if dedupe_key is None:
        await conn.run(_INSERT, values)
        return True
    from bcpay.storage.queries import insert_ignore

    return await insert_ignore(conn, jobs, **values)


async def claim(
    db: Database, *, owner: str, now: datetime, lease_seconds: int, limit: int = 10
) -> list[JobRecord]:
    """Lease up to ``limit`` due jobs for ``owner``, never one whose subject has a job leased.

    Of several due jobs of one subject only the first (by ``run_after``, id)
    is leased; the others stay queued, their attempts untouched.
    """
    # An idle worker polls often; asking first in a read keeps it from taking SQLite's write lock
    # (or the claim lock) only to find nothing due.
    async with db.read() as conn:
        if (await conn.run(_ANY_DUE, {"now": now})).first() is None:
            return []
    async with db.transaction() as conn:
        if not db.is_sqlite:
            # Claims one at a time, as BEGIN IMMEDIATE makes them on SQLite: under READ COMMITTED the
            # SELECT below then sees every lease committed by the claims before, so the "subject not
            # leased" test holds across processes. Row locks cannot do it: the lease that matters is on
            # another row (a job of the same subject), uncommitted and invisible to this snapshot;
            # SERIALIZABLE would, at the price of retrying failed claims. A claim lasts about a
            # millisecond; SKIP LOCKED stays for rows other transactions hold (a job being finished).
            await conn.execute(_CLAIM_LOCK)
        query = _DUE if db.is_sqlite else _DUE_SKIP_LOCKED
        due = (await conn.run(query, {"now": now, "limit": limit})).rows
        ids = _first_of_each_subject(due)
        if not ids:
            return []
        await conn.execute(_LEASE, {"ids": ids, "lease_owner": owner,
                                    "lease_until": now + timedelta(seconds=lease_seconds), "updated_at": now})
        rows = await conn.execute(_BY_IDS, {"ids": ids})
        return [JobRecord.from_row(r) for r in rows.mappings()]


def _first_of_each_subject(due: list[dict[str, Any]]) -> list[int]:
    """The ids of ``due`` (in claim order) without a second job of one subject."""
    seen: set[str] = set()
    ids = []
    for row in due:
        subject = row["subject"]
        if subject is not None:
            if subject in seen:
                continue
            seen.add(subject)
        ids.append(row["id"])
    return ids


# Built once (statement construction costs more than running them; see bcpay.storage.queries).
_INSERT = Prepared(insert(jobs))
_busy = jobs.alias("busy")
_IS_DUE = and_(
    jobs.c.state == QUEUED,
    jobs.c.run_after <= bindparam("now"),
    or_(jobs.c.lease_until.is_(None), jobs.c.lease_until < bindparam("now")),
    # A NULL subject equals nothing: such a job never waits for another.
    ~exists().where(
        _busy.c.subject == jobs.c.subject, _busy.c.state == QUEUED, _busy.c.lease_until >= bindparam("now"),
    ),
)
_ANY_DUE = Prepared(select(jobs.c.id).where(_IS_DUE).limit(1))
_DUE_IDS = (select(jobs.c.id, jobs.c.subject).where(_IS_DUE).order_by(jobs.c.run_after, jobs.c.id)
            .limit(bindparam("limit")))
_DUE = Prepared(_DUE_IDS)
_DUE_SKIP_LOCKED = Prepared(_DUE_IDS.with_for_update(of=jobs, skip_locked=True))
_CLAIM_LOCK = text(f"SELECT pg_advisory_xact_lock({CLAIM_LOCK_KEY})")
_IDS: BindParameter[int] = bindparam("ids", expanding=True)
_LEASE = update(jobs).where(jobs.c.id.in_(_IDS)).values(attempts=jobs.c.attempts + 1)
_BY_IDS = select(jobs).where(jobs.c.id.in_(_IDS)).order_by(jobs.c.id)
_FINISH = Prepared(update(jobs).where(
    jobs.c.id == bindparam("_job_id"), jobs.c.lease_owner == bindparam("_owner"), jobs.c.state == QUEUED
))


async def _finish(db: Database, job: JobRecord, owner: str, **values: Any) -> bool:
    """Update a job only while ``owner`` still holds its lease."""
    async with db.transaction() as conn:
        result = await conn.run(
            _FINISH, {"_job_id": job.id, "_owner": owner, "lease_owner": None, "lease_until": None, **values}
        )
        return bool(result.rowcount)


async def complete(db: Database, job: JobRecord, *, owner: str, now: datetime, release_key: bool = False) -> bool:
    """Mark a leased job done; ``release_key`` clears its dedupe key, so the same key may be queued again."""
    released = {"dedupe_key": None} if release_key else {}
    return await _finish(db, job, owner, state=DONE, last_error=None, updated_at=now, **released)


async def retry_later(
    db: Database, job: JobRecord, *, owner: str, now: datetime, delay: float, error: str, max_attempts: int,
    counts: bool = True,
) -> str:
    """Put a failed job back with a delay, or mark it dead after too many attempts.

    ``counts=False`` (the upstream's rate limit: the job did not fail, it was
    asked to wait) gives the attempt back, so a long quota wait never kills it.
    """
    if counts and job.attempts >= max_attempts:
        await _finish(db, job, owner, state=DEAD, last_error=error[:2000], updated_at=now)
        return DEAD
    await _finish(
        db,
        job,
        owner,
        run_after=now + timedelta(seconds=delay),
        last_error=error[:2000],
        updated_at=now,
        **({} if counts else {"attempts": max(0, job.attempts - 1)}),
    )
    return QUEUED


async def kill(db: Database, job: JobRecord, *, owner: str, now: datetime, error: str) -> None:
    """Mark a job dead at once (the upstream refused it; retrying cannot help)."""
    await _finish(db, job, owner, state=DEAD, last_error=error[:2000], updated_at=now)


async def retry_dead(db: Database, *, now: datetime, job_id: int | None = None) -> int:
    """Queue dead jobs again (one, or all); returns how many."""
    conds = [jobs.c.state == DEAD]
    if job_id is not None:
        conds.append(jobs.c.id == job_id)
    async with db.transaction() as conn:
        result = await conn.execute(
            update(jobs).where(*conds).values(state=QUEUED, attempts=0, run_after=now, updated_at=now)
        )
        return int(result.rowcount or 0)


async def discard_dead(db: Database, *, now: datetime, job_id: int | None = None) -> int:
    """Give up on dead jobs (one, or all) that can never succeed; they stay listed; returns how many."""
    conds = [jobs.c.state == DEAD]
    if job_id is not None:
        conds.append(jobs.c.id == job_id)
    async with db.transaction() as conn:
        result = await conn.execute(update(jobs).where(*conds).values(state=DISCARDED, updated_at=now))
        return int(result.rowcount or 0)


async def cancel_store_jobs(conn: Conn, store_id: int, now: datetime, *, keep_kind: str | None = None) -> int:
    """Stop every queued job of a store (uninstall), but those of ``keep_kind``."""
    kept = [jobs.c.kind != keep_kind] if keep_kind is not None else []
    result = await conn.execute(
        update(jobs)
        .where(jobs.c.store_id == store_id, jobs.c.state == QUEUED, *kept)
        .values(state=CANCELLED, updated_at=now, lease_owner=None, lease_until=None)
    )
    return int(result.rowcount or 0)


async def resume_store_jobs(conn: Conn, store_id: int, now: datetime) -> int:
    """Queue again the jobs an uninstall stopped (the store is back): a paid order still gets its status."""
    result = await conn.execute(
        update(jobs)
        .where(jobs.c.store_id == store_id, jobs.c.state == CANCELLED)
        .values(state=QUEUED, attempts=0, run_after=now, updated_at=now, lease_owner=None, lease_until=None)
    )
    return int(result.rowcount or 0)


async def list_jobs(
    db: Database, *, state: str | None = None, store_id: int | None = None, limit: int = 50
) -> list[JobRecord]:
    """Jobs, newest first."""
    query = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
    if state is not None:
        query = query.where(jobs.c.state == state)
    if store_id is not None:
        query = query.where(jobs.c.store_id == store_id)
    async with db.read() as conn:
        return [JobRecord.from_row(r) for r in (await conn.execute(query)).mappings()]


async def stats(db: Database, now: datetime) -> dict[str, float]:
    """Queue depth, oldest queued age in seconds and dead count."""
    async with db.read() as conn:
        depth, oldest = (
            await conn.execute(
                select(func.count(), func.min(jobs.c.created_at)).where(jobs.c.state == QUEUED)
            )
        ).one()
        dead = (await conn.execute(select(func.count()).where(jobs.c.state == DEAD))).scalar_one()
    age = 0.0
    if oldest is not None:
        from bcpay.storage.schema import UTCDateTime

        oldest_aware = UTCDateTime().process_result_value(oldest, db.sqlalchemy_dialect)
        assert oldest_aware is not None
        age = max(0.0, (now - oldest_aware).total_seconds())
    return {"depth": float(depth), "oldest_age": age, "dead": float(dead)}
