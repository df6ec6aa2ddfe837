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
