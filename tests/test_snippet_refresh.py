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


async def test_a_setting_changed_and_changed_back_gets_its_tag_back(world: World) -> None:
    """Method name "In-Store A" -> "In-Store B" -> "In-Store A": every change gets its update, so the store ends
    on A's tag; the job that installed A's version before does not stand in the way of the same version again."""
    from bcpay import stores
    from bcpay.snippet import SCRIPT_NAME

    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    await provisioning.install_script(world.rt, store)
    fake = world.bc.store(STORE_HASH)
    tags = []
    for name in ("In-Store A", "In-Store B", "In-Store A"):
        store = await stores.update_settings(world.rt, STORE_HASH, {"method_name": name})
        assert await world.worker.queue_outdated_scripts() == 1, name
        assert await world.run_jobs() == 1
        [ours] = [s for s in fake.scripts.values() if s["name"] == SCRIPT_NAME]
        assert ours["html"] == provisioning.desired_script(world.rt, store).html
        tags.append(ours["html"])
    assert tags[0] == tags[2] != tags[1]
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


async def test_every_host_serves_every_version_a_bcpay_server_has_served(world: World) -> None:
    """After a release, stores' tags still name the previous file until the worker rewrites them, and old
    and new hosts run side by side: a version any server started with is served (immutable, its own
    bytes, so its SRI still matches); a version nobody served, or a malformed hash, is a 404."""
    import hashlib
    from datetime import UTC, datetime

    from bcpay.snippet import asset

    current = asset()
    async with world.rt.db.read() as conn:
        assert await q.snippet_version(conn, current.short_hash) == current.body  # kept at start-up
    old_body = b"/* the previous release's snippet */"
    old_hash = hashlib.sha256(old_body).hexdigest()[:16]
    async with world.rt.db.transaction() as conn:
        assert await q.save_snippet_version(conn, old_hash, old_body, datetime.now(UTC))
        assert not await q.save_snippet_version(conn, old_hash, b"other", datetime.now(UTC))  # kept once
    old = await world.client.get(f"/static/inject.{old_hash}.js")
    assert old.status_code == 200 and old.content == old_body
    assert "immutable" in old.headers["cache-control"] and old.headers["etag"] == f'"{old_hash}"'
    assert old.headers["access-control-allow-origin"] == "*"
    now = await world.client.get(f"/static/inject.{current.short_hash}.js")
    assert now.status_code == 200 and now.content == current.body
    for wanted in ("0123456789abcdef", "not-a-hash", "A" * 16, "%00" * 3):
        assert (await world.client.get(f"/static/inject.{wanted}.js")).status_code == 404, wanted
