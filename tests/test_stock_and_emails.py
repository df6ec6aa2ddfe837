"""Whether cancelled orders return stock (GET /v3/settings/inventory), and the order e-mail steps nobody can check."""

from __future__ import annotations

import html as html_lib
from collections.abc import AsyncIterator

import httpx
import pytest

from bcpay import channels, operations, provisioning, stores
from bcpay.clients.bigcommerce import InventorySettings, Malformed
from bcpay.errors import UpstreamRejected
from bcpay.sandbox.bc_channels import add_channel
from bcpay.sandbox.bc_settings import set_inventory
from bcpay.storage import queries as q
from bcpay.storage.records import StoreRecord
from tests.test_bcapp import CLIENT_SECRET, open_settings
from tests.world import STORE_HASH, World, open_world

NAME = "stock of cancelled orders"


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key, app={"client_secret": CLIENT_SECRET}) as w:
        await w.add_store()
        yield w


async def store_of(world: World) -> StoreRecord:
    async with world.rt.db.read() as conn:
        return await q.require_store(conn, STORE_HASH)


async def test_the_fake_answers_global_and_channel_inventory_settings_as_the_spec_says(world: World) -> None:
    """Global values; a channel's unset fields are null (inherited); an unknown channel is a 422."""
    add_channel(world.bc, STORE_HASH, name="Outlet", url="https://outlet.example.com", channel_id=2)
    set_inventory(world.bc, STORE_HASH, channel_id=2, refund_order_stock_adjustment=False)
    bc = world.rt.bigcommerce(await store_of(world))
    assert await bc.inventory_settings() == InventorySettings("order_placed", True)
    assert await bc.inventory_settings(2) == InventorySettings(None, False)
    assert (await bc.inventory_settings(2)).over(await bc.inventory_settings()) == InventorySettings("order_placed", False)
    with pytest.raises(UpstreamRejected) as refused:
        await bc.inventory_settings(9)
    assert refused.value.status == 422
    sent = [r for r in world.bc.requests if r.path.endswith("/v3/settings/inventory")]
    assert [r.query for r in sent] == ["", "channel_id=2", "channel_id=2", "", "channel_id=9"]


def test_inventory_settings_of_another_shape_are_malformed() -> None:
    """An unknown stock behaviour or a non-boolean adjustment is refused, naming the field."""
    with pytest.raises(Malformed, match="update_stock_behavior 'never' is not one of"):
        InventorySettings.from_json({"update_stock_behavior": "never"})
    with pytest.raises(Malformed, match="refund_order_stock_adjustment is not a boolean"):
        InventorySettings.from_json({"refund_order_stock_adjustment": "yes"})


async def test_a_store_that_returns_stock_passes_without_steps(world: World) -> None:
    check = await provisioning.check_inventory(world.rt, await store_of(world))
    assert (check.name, check.ok, check.detail, check.fix) == (NAME, True, "a cancelled order returns its stock", [])


async def test_a_store_that_keeps_the_stock_of_cancelled_orders_is_warned_with_the_control_panel_step(
    world: World,
) -> None:
    """Global setting off: a warning (doctor still passes) naming what bcpay's cancels then cost, and the step."""
    set_inventory(world.bc, STORE_HASH, refund_order_stock_adjustment=False)
    check = await provisioning.check_inventory(world.rt, await store_of(world))
    assert check.ok and check.detail == (
        "a cancelled order does not return its stock on Test Shop (1): "
        "the unpaid orders bcpay cancels keep their items off sale")
    assert check.fix[0] == "Open https://shop.example.com/manage/settings/inventory (Settings > Inventory)."
    assert "refund_order_stock_adjustment" in check.fix[1] and len(check.fix) == 3

    set_inventory(world.bc, STORE_HASH, update_stock_behavior="order_completed_or_shipped")
    check = await provisioning.check_inventory(world.rt, await store_of(world))
    assert check.fix == []  # stock is taken only when the order ships: an unpaid order holds none


async def test_a_storefront_with_its_own_inventory_settings_is_checked_on_its_own(world: World) -> None:
    """Global fine, channel 2 overrides it: the warning names that storefront and the Channel Manager step."""
    add_channel(world.bc, STORE_HASH, name="Outlet", url="https://outlet.example.com", channel_id=2)
    await channels.refresh(world.rt, await store_of(world))
    set_inventory(world.bc, STORE_HASH, channel_id=2, refund_order_stock_adjustment=False)
    check = await provisioning.check_inventory(world.rt, await store_of(world))
    assert check.detail.startswith("a cancelled order does not return its stock on Outlet (2)")
    assert "Test Shop (1)" not in check.detail
    assert any("Channel Manager" in step and "Outlet (2)" in step for step in check.fix)


async def test_doctor_and_provision_show_stock_and_the_email_steps_and_say_doctor_cannot_check_them(
    world: World,
) -> None:
    """The e-mail line passes with advice: the instructions' wording, the paid status e-mail, and why unchecked."""
    store = await store_of(world)
    report = {c.name: c for c in await operations.store_checks(world.rt, store)}
    emails = report["order e-mails"]
    assert emails.ok and "doctor cannot see them" in emails.detail
    assert emails.fix[0].endswith("set its payment instructions to: You will be taken to OKCloud Pay to complete "
                                  "payment. An order not paid within 60 minutes is cancelled.")
    assert "tick the e-mail for Awaiting Fulfillment" in emails.fix[1]
    assert "Cancelled" in emails.fix[2]
    assert report[NAME].ok and not report[NAME].fix

    await stores.update_settings(world.rt, STORE_HASH, {"unpaid_hold": 0})
    store = await store_of(world)
    assert provisioning.instructions_wording(world.rt, store) == "You will be taken to OKCloud Pay to complete payment."
    assert len(provisioning.email_steps(world.rt, store).fix) == 2  # bcpay cancels nothing: no Cancelled e-mail

    names = [c.name for c in await provisioning.provision(world.rt, store)]
    assert names[-2:] == [NAME, "order e-mails"]


async def test_the_settings_page_warns_about_stock_and_shows_the_email_wording(world: World) -> None:
    set_inventory(world.bc, STORE_HASH, refund_order_stock_adjustment=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app), base_url="https://127.0.0.1:8000") as c:
        page = html_lib.unescape(await open_settings(c))
    stock = page.split("<strong>Stock of cancelled orders</strong>", 1)[1].split("</li>\n", 1)[0]
    assert "does not return its stock" in stock
    assert "/manage/settings/inventory (Settings > Inventory)" in stock
    assert '<code id="instructions-wording">You will be taken to OKCloud Pay to complete payment.' in page
    assert "cannot check them" in page and "tick the e-mail for Awaiting Fulfillment" in page
