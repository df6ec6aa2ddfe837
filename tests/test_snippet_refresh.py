"""The storefront snippet stays current on every store without an operator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bcpay import provisioning
from bcpay.storage import queries as q
from tests.world import STORE_HASH, World, open_world


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        yield w


async def test_after_a_release_changes_the_snippet_every_store_gets_the_new_tag(world: World) -> None:
    """The tag names the snippet by its hash and only the current file is served: the worker's sweep
    queues one update per store whose installed tag is not the current one, and only one."""
    from sqlalchemy import update as sql_update

    from bcpay.snippet import SCRIPT_NAME
    from bcpay.storage.schema import stores as stores_table

    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    await provisioning.install_script(world.rt, store)
    fake = world.bc.store(STORE_HASH)
    [ours] = [s for s in fake.scripts.values() if s["name"] == SCRIPT_NAME]
    assert await world.worker.queue_outdated_scripts() == 0  # current: nothing to do
    old_tag = ours["html"].replace(".js\"", "-old.js\"", 1)
    ours["html"] = old_tag  # what the previous release installed
    async with world.rt.db.transaction() as conn:
        await conn.execute(sql_update(stores_table).values(script_hash="0" * 64))
    assert await world.worker.queue_outdated_scripts() == 1
    assert await world.worker.queue_outdated_scripts() == 0  # one job per store and version
    assert await world.run_jobs() == 1
    [ours] = [s for s in fake.scripts.values() if s["name"] == SCRIPT_NAME]
    assert ours["html"] != old_tag and ours["html"] == provisioning.desired_script(world.rt, store).html
    assert await world.worker.queue_outdated_scripts() == 0


async def test_a_worker_of_another_version_gives_the_refresh_back(world: World) -> None:
    """A rolling deploy: the job names the tag it was queued for. A worker whose own tag differs neither
    installs its tag nor marks the job done; it gives the job back, uncounted, for a worker that can."""
    from sqlalchemy import update as sql_update

    from bcpay import outbox
    from bcpay.snippet import SCRIPT_NAME
    from bcpay.storage.schema import stores as stores_table

    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    await provisioning.install_script(world.rt, store)
    fake = world.bc.store(STORE_HASH)
    [ours] = [s for s in fake.scripts.values() if s["name"] == SCRIPT_NAME]
    ours["html"] = old_tag = ours["html"].replace(".js\"", "-old.js\"", 1)
    async with world.rt.db.transaction() as conn:
        await conn.execute(sql_update(stores_table).values(script_hash="0" * 64))
        await outbox.enqueue(conn, "refresh_script", {"digest": "f" * 64}, now=world.rt.now(), store_id=store.id,
                             dedupe_key="refresh_script:newer-release")
    assert await world.run_jobs() == 1
    [job] = await outbox.list_jobs(world.rt.db, state=outbox.QUEUED)
    assert job.attempts == 0 and job.run_after > world.rt.now() and "NotForThisWorker" in (job.last_error or "")
    assert [s["html"] for s in fake.scripts.values() if s["name"] == SCRIPT_NAME] == [old_tag]
