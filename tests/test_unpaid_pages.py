"""What merchants and shoppers see of the unpaid hold: the settings page, the pay page and the pay link."""

from __future__ import annotations

import html as html_lib
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from bcpay.storage import queries as q
from tests.test_bcapp import CLIENT_SECRET, csrf_of, open_settings, settings_form
from tests.world import STORE_HASH, World, open_world

HOLD = 60


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key, app={"client_secret": CLIENT_SECRET}) as w:
        await w.add_store()
        yield w


@pytest.fixture
async def panel(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """The control-panel iframe's browser (https, so the Secure session cookie is kept)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="https://127.0.0.1:8000") as c:
        yield c


async def cancel_unpaid(world: World) -> dict[str, object]:
    """An abandoned order, cancelled by the hold."""
    order = world.place_order()
    world.travel(timedelta(minutes=HOLD + 1))
    await world.worker.sweep()
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 5
    return order


async def test_the_settings_page_lists_the_orders_cancelled_unpaid_and_edits_the_hold(
    world: World, panel: httpx.AsyncClient
) -> None:
    """The last cancellations, each linked to its order; the hold is a field, and a merchant's 0 stays theirs."""
    order = await cancel_unpaid(world)
    page = html_lib.unescape(await open_settings(panel))
    assert 'id="unpaid_hold" name="unpaid_hold" value="60"' in page
    listed = page.split('<h2 id="unpaid">', 1)[1].split("<h2", 1)[0]
    assert f'/manage/orders/{order["id"]}"' in listed and f"#{order['id']}</a>" in listed
    assert "not paid within 60 minutes; order cancelled" in listed

    saved = await panel.post("/bc/settings", data=settings_form(csrf_of(page), api_secret="", unpaid_hold="0"))
    assert saved.status_code == 303, saved.text
    async with world.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
    assert store.settings["unpaid_hold"] == 0

    bad = await panel.post("/bc/settings", data=settings_form(csrf_of(page), api_secret="", unpaid_hold="1h",
                                                              version=""))
    assert bad.status_code == 400 and "0 (keep it) to 43200" in bad.text and 'value="1h"' in bad.text


async def test_a_settings_form_without_the_hold_leaves_it_as_it_is(world: World, panel: httpx.AsyncClient) -> None:
    """A page opened before the field existed saves the other settings and keeps the store's hold."""
    page = await open_settings(panel)
    saved = await panel.post("/bc/settings", data=settings_form(csrf_of(page)))
    assert saved.status_code == 303
    async with world.rt.db.read() as conn:
        row = await q.require_store(conn, STORE_HASH)
    assert row.settings["unpaid_hold"] == HOLD
