"""Multi-storefront: every storefront channel of a store takes OKCloud Pay (reference section 11)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bcpay import channels, provisioning, stores
from bcpay.sandbox.bc_channels import add_channel, set_site, update_channel
from bcpay.snippet import SCRIPT_NAME
from bcpay.storage import channel_queries as cq
from bcpay.storage import queries as q
from bcpay.storage.records import StoreRecord
from tests.world import STORE_HASH, STORE_URL, World, open_world

OUTLET = "https://outlet.example.com"
OUTLET_CHECKOUT = "https://checkout.outlet.example.com"
CLOSED = "https://closed.example.com"


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        add_channel(w.bc, STORE_HASH, name="Outlet", url=OUTLET, checkout_url=OUTLET_CHECKOUT)
        add_channel(w.bc, STORE_HASH, name="Closed", url=CLOSED, status="inactive")
        yield w


async def store_of(world: World) -> StoreRecord:
    async with world.rt.db.read() as conn:
        return await q.require_store(conn, STORE_HASH)


def our_scripts(world: World) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    for script in world.bc.store(STORE_HASH).scripts.values():
        if script["name"] == SCRIPT_NAME:
            found.setdefault(script["channel_id"], []).append(script)
    return found


async def start_on(world: World, order: dict[str, Any], origin: str) -> Any:
    body = {"store_hash": STORE_HASH, "order_id": order["id"], "cart_id": order["cart_id"]}
    return await world.client.post("/api/v1/payments", json=body, headers={"Origin": origin})


async def test_a_three_channel_store_gets_a_snippet_per_active_channel_and_pays_on_each(world: World) -> None:
    """Provision reads the channels and their sites; channels 1 and 2 get one snippet each, the inactive one
    none; an order on channel 2 is paid from channel 2's origin and the shopper goes back to its checkout."""
    checks = await provisioning.provision(world.rt, await store_of(world))
    assert [c.name for c in checks if not c.ok] == []
    scripts = our_scripts(world)
    assert sorted(scripts) == [1, 2] and all(len(v) == 1 for v in scripts.values())
    assert all(s["consent_category"] == "essential" and s["enabled"] for v in scripts.values() for s in v)
    async with world.rt.db.read() as conn:
        rows = {c.channel_id: c for c in await cq.list_channels(conn, (await store_of(world)).id)}
    assert {k: (c.status, c.site_url) for k, c in rows.items()} == {
        1: ("active", STORE_URL), 2: ("active", OUTLET), 3: ("inactive", CLOSED)}
    assert rows[2].script_uuid == scripts[2][0]["uuid"] and rows[3].script_uuid is None

    for channel_id, origin, back_to in ((1, STORE_URL, STORE_URL), (2, OUTLET, OUTLET_CHECKOUT)):
        order = world.place_order("12.00", channel_id=channel_id)
        answer = await start_on(world, order, origin)
        assert answer.status_code == 200, answer.text
        token = answer.json()["token"]
        await world.cp.pay(answer.json()["cashier_url"].rsplit("/", 1)[1])
        await world.cp.deliver_due()
        await world.run_jobs()
        assert world.order(order["id"])["status_id"] == 11
        back = await world.client.get(f"/pay/{token}/return")
        assert back.headers["location"] == f"{back_to}/checkout/order-confirmation#bcpay_token={token}"

    # Provisioning again changes nothing: no duplicate on any channel.
    before = {k: [s["uuid"] for s in v] for k, v in our_scripts(world).items()}
    await provisioning.provision(world.rt, await store_of(world))
    assert {k: [s["uuid"] for s in v] for k, v in our_scripts(world).items()} == before


async def test_a_channel_added_while_the_server_runs_gets_its_snippet_from_the_webhook(world: World) -> None:
    """store/channel/created reaches the server, the job reads the channels and installs the new snippet;
    switching the channel off (store/channel/updated) removes that channel's copy and no other."""
    store = await store_of(world)
    await provisioning.provision(world.rt, store)
    await world.run_jobs()
    new = add_channel(world.bc, STORE_HASH, name="Pop-up", url="https://popup.example.com")
    [delivery] = await world.bc.fire_webhook(world.client, STORE_HASH, "store/channel/created",
                                             {"type": "channel", "id": new["id"]})
    assert delivery.status == 200
    assert await world.run_jobs() == 1
    assert sorted(our_scripts(world)) == [1, 2, new["id"]]
    order = world.place_order("5.00", channel_id=new["id"])
    assert (await start_on(world, order, "https://popup.example.com")).status_code == 200

    kept = {k: v[0]["uuid"] for k, v in our_scripts(world).items() if k != new["id"]}
    update_channel(world.bc, STORE_HASH, new["id"], status="inactive")
    await world.bc.fire_webhook(world.client, STORE_HASH, "store/channel/updated", {"type": "channel", "id": new["id"]})
    assert await world.run_jobs() == 1
    assert {k: v[0]["uuid"] for k, v in our_scripts(world).items()} == kept


async def test_a_channel_webhook_without_a_channel_id_is_refused_and_changes_nothing(world: World) -> None:
    """Hostile or malformed: data.id must be a channel id; nothing is queued."""
    await provisioning.provision(world.rt, await store_of(world))
    for data in ({"type": "channel"}, {"type": "channel", "id": "2"}, {"type": "channel", "id": True}):
        [delivery] = await world.bc.fire_webhook(world.client, STORE_HASH, "store/channel/created", data)
        assert delivery.status == 400
    assert await world.run_jobs() == 0


async def test_a_channels_domain_changed_moves_cors_and_the_return_hop(world: World) -> None:
    """A site's URL changes without any webhook: the next read (here the sweep, once the channels are older than
    channels.MAX_AGE) makes the new domain the one allowed and the one shoppers return to."""
    from datetime import timedelta

    await provisioning.provision(world.rt, await store_of(world))
    await stores.update_settings(world.rt, STORE_HASH, {"unpaid_hold": 0})  # the order outlives the travel
    set_site(world.bc, STORE_HASH, 2, url="https://new-outlet.example.com")
    order = world.place_order("7.00", channel_id=2)
    assert (await start_on(world, order, "https://new-outlet.example.com")).status_code == 403
    world.travel(channels.MAX_AGE + timedelta(minutes=1))
    await world.worker.sweep()
    await world.run_jobs()
    world.app.state.origins._loaded = 0.0  # the CORS cache's 30 s
    answer = await start_on(world, order, "https://new-outlet.example.com")
    assert answer.status_code == 200, answer.text
    assert (await start_on(world, order, OUTLET)).status_code == 403
    token = answer.json()["token"]
    back = await world.client.get(f"/pay/{token}/return")
    # No custom checkout URL any more: BigCommerce's fallback, the default channel's primary URL.
    assert back.headers["location"].startswith(f"{STORE_URL}/checkout/order-confirmation#")


async def test_an_order_on_channel_2_pays_when_channel_1_does_not_offer_the_method(world: World) -> None:
    """Channel 1 switched off for OKCloud Pay (its snippet removed, its orders refused); channel 2 names the
    method "Pay with OKCloud" and its orders pay."""
    store = await store_of(world)
    await provisioning.provision(world.rt, store)
    await channels.configure(world.rt, store, 1, {"offers": False})
    await channels.configure(world.rt, store, 2, {"method_name": "Pay with OKCloud"})
    await provisioning.install_script(world.rt, store)
    scripts = our_scripts(world)
    assert sorted(scripts) == [2] and 'data-method-name="Pay with OKCloud"' in scripts[2][0]["html"]

    refused = world.place_order("9.00", channel_id=1)
    answer = await start_on(world, refused, STORE_URL)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == "wrong_payment_method"
    order = world.place_order("9.00", channel_id=2, payment_method="Pay with OKCloud")
    answer = await start_on(world, order, OUTLET)
    assert answer.status_code == 200, answer.text
    await world.cp.pay(answer.json()["cashier_url"].rsplit("/", 1)[1])
    await world.cp.deliver_due()
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 11


async def test_an_origin_counts_for_its_own_store_only(world: World) -> None:
    """Store B's storefront may not start or read store A's payments; A's own channels may."""
    from bcpay import stores

    await provisioning.provision(world.rt, await store_of(world))
    world.bc.add_store("other9", secure_url="https://other.example.com", name="Other", access_token="other-token")
    await stores.register(world.rt, "other9", access_token="other-token", source="api_account",
                          scopes=" ".join(stores.REQUIRED_SCOPES))
    order = world.place_order("3.00", channel_id=2)
    answer = await start_on(world, order, "https://other.example.com")
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "origin_not_allowed"
    assert world.bc.store(STORE_HASH).orders[order["id"]]["status_id"] == 7
    ok = await start_on(world, order, OUTLET)
    assert ok.status_code == 200
    token = ok.json()["token"]
    assert (await world.client.get(f"/api/v1/payments/{token}",
                                   headers={"Origin": "https://other.example.com"})).status_code == 403
    assert (await world.client.get(f"/api/v1/payments/{token}", headers={"Origin": OUTLET})).status_code == 200
    # The preflight names no store: any installed store's origin passes it, an unknown one does not.
    pre = {"Access-Control-Request-Method": "POST"}
    assert (await world.client.options("/api/v1/payments", headers={**pre, "Origin": OUTLET})).status_code == 204
    assert (await world.client.options("/api/v1/payments",
                                       headers={**pre, "Origin": "https://evil.example"})).status_code == 403


async def test_a_store_installed_before_keeps_its_channel_1_snippet(world: World) -> None:
    """The upgrade: a store with the old snippet on channel 1 and no channel rows. The sweep reads its channels
    and installs channel 2's copy; channel 1's stays the same script (updated in place, never a duplicate)."""
    from bcpay.clients.bigcommerce import ScriptSpec

    store = await store_of(world)
    old = ScriptSpec(name=SCRIPT_NAME, kind="script_tag", html="<script src='old'></script>", channel_id=1)
    uuid = (await world.rt.bigcommerce(store).create_script(old)).uuid
    async with world.rt.db.transaction() as conn:
        await q.update_store(conn, store.id, world.rt.now(), script_uuid=uuid, script_hash="0" * 64)
    await world.worker.sweep()
    await world.run_jobs()
    scripts = our_scripts(world)
    assert sorted(scripts) == [1, 2] and [s["uuid"] for s in scripts[1]] == [uuid]
    assert scripts[1][0]["html"] == provisioning.desired_script(world.rt, store,
                                                                channels.find(await channels.stored(world.rt, store), 1)).html
    await world.worker.sweep()
    assert await world.run_jobs() == 0  # current now: nothing more to do


async def test_the_ten_scripts_limit_is_reported_not_hit(world: World) -> None:
    """Nine other scripts of this app: channel 1 gets the tenth, channel 2 is reported, nothing is refused."""
    from bcpay.clients.bigcommerce import ScriptSpec

    store = await store_of(world)
    bc = world.rt.bigcommerce(store)
    for n in range(9):
        await bc.create_script(ScriptSpec(name=f"other {n}", src=f"https://cdn.example.com/{n}.js",
                                          visibility="storefront"))
    requests_before = len(world.bc.requests)
    action = await provisioning.install_script(world.rt, store)
    assert "channel 1: created" in action and "channel 2: limit" in action
    assert all(r.status < 400 for r in world.bc.requests[requests_before:])
    assert len(world.bc.store(STORE_HASH).scripts) == 10


async def test_install_script_for_one_channel_leaves_the_others_alone(world: World) -> None:
    """`install-script STORE --channel 2` repairs channel 2 only: a second copy there goes, channel 1's stays."""
    store = await store_of(world)
    await provisioning.install_script(world.rt, store)
    spec = provisioning.desired_script(world.rt, store, channels.find(await channels.stored(world.rt, store), 2))
    await world.rt.bigcommerce(store).create_script(spec)  # a hand-made duplicate on channel 2
    one = our_scripts(world)[1][0]["uuid"]
    action = await provisioning.install_script(world.rt, store, channel_id=2)
    scripts = our_scripts(world)
    assert len(scripts[2]) == 1 and [s["uuid"] for s in scripts[1]] == [one]
    assert "channel 2" in action


async def drift(world: World) -> dict[str, provisioning.Check]:
    return {c.name: c for c in await provisioning.check_channels(world.rt, await store_of(world))}


async def test_drift_is_one_line_per_channel_and_each_kind_of_drift_is_named(world: World) -> None:
    """After provision every channel's line passes; then each drift a merchant can cause in Script Manager or
    the payment settings fails its own channel's line with the repair for that channel only."""
    await provisioning.provision(world.rt, await store_of(world))
    lines = await drift(world)
    assert sorted(lines) == ["channel 1 (Test Shop)", "channel 2 (Outlet)", "channel 3 (Closed)"]
    assert all(c.ok for c in lines.values()), lines
    assert lines["channel 3 (Closed)"].detail == "inactive: takes no orders; no snippet, as it should be"
    # No order on channel 2 yet: the store-wide v2 list answers, and says so.
    assert lines["channel 2 (Outlet)"].detail.endswith("(v2; the channel has no order to ask /v3 with)")

    world.place_order("5.00", channel_id=2)
    assert (await drift(world))["channel 2 (Outlet)"].detail == (
        'snippet installed and current; "OKCloud Pay" is offered (v3, for order 101)')
    two = our_scripts(world)[2][0]
    for change, expected in (
        ({"enabled": False}, "snippet installed but disabled"),
        ({"html": "<script>/* edited */</script>"}, "snippet installed but outdated"),
        ({"consent_category": "analytics"}, 'snippet consent category is "analytics", not "essential"'),
    ):
        saved = {k: two[k] for k in change}
        two.update(change)
        lines = await drift(world)
        line = lines["channel 2 (Outlet)"]
        assert not line.ok and line.detail.startswith(expected), line
        assert line.fix == [f"bcpay install-script {STORE_HASH} --channel 2"]
        assert lines["channel 1 (Test Shop)"].ok
        two.update(saved)

    # The method switched off on channel 2 only (per-channel methods). v3 answers without any offline method
    # there; that means "not offered" because v3 lists the offline method for channel 1's order.
    [offline] = [m for m in world.bc.store(STORE_HASH).payment_methods if m.offline]
    offline.channels = {1}
    line = (await drift(world))["channel 2 (Outlet)"]
    assert line.ok and line.detail.endswith("(v2; /v3 lists no offline method)")  # nothing to compare with yet
    world.place_order("6.00", channel_id=1)
    line = (await drift(world))["channel 2 (Outlet)"]
    assert not line.ok and line.detail == ('snippet installed and current; "OKCloud Pay" is not offered at this '
                                           "channel's checkout (v3, for order 101)")
    assert "for the Outlet storefront" in line.fix[0] and "install-script" not in " ".join(line.fix)
    assert (await drift(world))["channel 1 (Test Shop)"].ok


async def test_a_snippet_left_on_a_channel_that_takes_no_orders_is_drift(world: World) -> None:
    """Channel 3 was switched off in the control panel after its snippet went on: the line fails until
    install-script for that channel removes it."""
    store = await store_of(world)
    update_channel(world.bc, STORE_HASH, 3, status="active")
    await channels.refresh(world.rt, store)
    await provisioning.install_script(world.rt, store)
    assert 3 in our_scripts(world)
    update_channel(world.bc, STORE_HASH, 3, status="inactive")
    await channels.refresh(world.rt, store)
    line = (await drift(world))["channel 3 (Closed)"]
    assert not line.ok and line.detail == "inactive: takes no orders, but bcpay's snippet is still on it"
    assert "channel 3: removed" in await provisioning.install_script(world.rt, store, channel_id=3)
    assert (await drift(world))["channel 3 (Closed)"].ok and 3 not in our_scripts(world)


async def test_a_single_channel_store_keeps_its_two_checks(db_url: str, secret_key: str) -> None:
    """Channel 1 only: the same two lines as before multi-storefront, by the same names."""
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        store = await store_of(w)
        await provisioning.install_script(w.rt, store)
        lines = await provisioning.check_channels(w.rt, store)
        assert [(c.name, c.ok) for c in lines] == [("offline payment method", True), ("storefront snippet", True)]


async def test_a_token_without_the_channel_scopes_works_on_channel_1_and_doctor_says_why(
        db_url: str, secret_key: str) -> None:
    """An API account made before channels: reading them answers 403, channel 1 on the store's URL gets the
    snippet, and a line names the missing scopes."""
    from bcpay import stores
    from bcpay.sandbox.bc_state import TokenGrant
    from tests.world import ACCESS_TOKEN

    async with open_world(db_url, secret_key) as w:
        w.bc.store(STORE_HASH).tokens[ACCESS_TOKEN] = TokenGrant("client", frozenset(stores.REQUIRED_SCOPES))
        await w.add_store()
        store = await store_of(w)
        assert await provisioning.install_script(w.rt, store) == "created"
        lines = {c.name: c for c in await provisioning.check_channels(w.rt, store)}
        assert sorted(lines) == ["offline payment method", "storefront channels", "storefront snippet"]
        assert lines["storefront channels"].detail == (
            "not read: the token lacks store_channel_settings_read_only, store_sites_read_only, "
            "so bcpay serves channel 1 only")
        assert lines["storefront snippet"].ok and sorted(our_scripts(w)) == [1]
