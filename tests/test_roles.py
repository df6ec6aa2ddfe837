"""Who may act on a store's money (issue 19, item 3): roles, the audit rows, the sandbox-environment warning."""

from __future__ import annotations

import getpass
import json
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from bcpay import roles, stores
from bcpay.install import AppUser
from bcpay.storage import queries as q
from bcpay.storage.schema import refunds, settings_audit, store_users
from tests import test_bcapp, test_cli
from tests.test_bcapp import csrf_of, open_settings, settings_form, snapshot
from tests.test_cli import MERCHANT_ID as CLI_MERCHANT
from tests.test_cli import STORE_HASH as CLI_STORE
from tests.test_cli import Env
from tests.world import MERCHANT_ID, MERCHANT_SECRET, STORE_HASH, World, open_world

# The settings-page world and the CLI's, as those modules make them.
world, panel = test_bcapp.world, test_bcapp.panel
env, servers = test_cli.env, test_cli.servers

OWNER = {"id": 1, "email": "owner@example.com"}
CLERK = {"id": 42, "email": "clerk@example.com"}
CONTROLS = re.compile(r"<(?:input|select|button)\b(?![^>]*type=\"hidden\")[^>]*>")


def as_clerk() -> dict[str, Any]:
    """/bc/load claims of a control-panel user who is not the owner."""
    return {"user": CLERK, "owner": OWNER}


def as_owner() -> dict[str, Any]:
    return {"user": OWNER, "owner": OWNER}


async def paid_payment(w: World) -> tuple[int, int]:
    """An order paid through the whole flow; (payment row id, order id)."""
    order = w.place_order("20.00")
    pid = (await w.start(order)).json()["cashier_url"].rsplit("/", 1)[1]
    await w.cp.pay(pid)
    await w.cp.deliver_due()
    await w.run_jobs()
    async with w.rt.db.read() as conn:
        store = await q.require_store(conn, STORE_HASH)
        [attempt] = await q.order_attempts(conn, store.id, order["id"])
    return attempt.id, order["id"]


def test_only_the_owner_and_allowed_users_may_act() -> None:
    """The one rule every face calls."""
    assert roles.may_act(AppUser(1, 1, "o@x", is_owner=True))
    assert roles.may_act(AppUser(1, 2, "a@x", is_owner=False, may_act=True))
    assert not roles.may_act(AppUser(1, 3, "c@x", is_owner=False))
    assert not roles.may_act(None)
    with pytest.raises(roles.NotAllowed, match="read-only for you"):
        roles.require(AppUser(1, 3, "c@x", is_owner=False))


async def test_a_user_who_is_not_the_owner_sees_the_page_read_only_and_every_change_is_refused(
    world: World, panel: httpx.AsyncClient,
) -> None:
    """Every form control is disabled, and each POST (save, refund, resolve, provision, revoke the old secret,
    who may act) answers 403 not_allowed and changes nothing, even with a valid CSRF token."""
    await world.add_store()
    payment_id, order_id = await paid_payment(world)
    async with world.rt.db.transaction() as conn:
        store = await q.require_store(conn, STORE_HASH)
        await q.record_anomaly(conn, store_id=store.id, order_id=order_id, payment_id=payment_id,
                               kind="double_payment", amount=100, currency="USD", detail="test", now=world.rt.now())
        [anomaly] = await q.list_anomalies(conn, store_id=store.id)
    html = await open_settings(panel, **as_clerk())
    assert 'id="read-only"' in html
    controls = CONTROLS.findall(html)
    assert controls and all(" disabled" in c for c in controls), [c for c in controls if " disabled" not in c]
    token = csrf_of(html)
    before = await snapshot(world)
    calls_before = len(world.bc.put_log)
    for path, extra in (
        ("/bc/settings", settings_form(None, merchant_id="mch_Attacker000000000001", environment="production")),
        ("/bc/settings/refund", {"payment_id": str(payment_id), "amount": "20.00", "confirm": "yes",
                                 "key": "settings-" + "k" * 24}),
        (f"/bc/settings/anomalies/{anomaly['id']}/resolve", {"note": "mine now"}),
        ("/bc/settings/provision", {}),
        ("/bc/settings/revoke-old-secret", {}),
        ("/bc/settings/users/42/access", {"allowed": "yes"}),
    ):
        answer = await panel.post(path, data={**extra, "csrf": token})
        assert answer.status_code == 403, (path, answer.text[:300])
        assert answer.headers["x-bcpay-error"] == "not_allowed", path
        assert "Only the store owner" in answer.text
    assert await snapshot(world) == before
    assert len(world.bc.put_log) == calls_before
    async with world.rt.db.read() as conn:
        assert (await conn.execute(select(settings_audit))).mappings().all() == []
        assert (await conn.execute(select(refunds))).mappings().all() == []


async def test_the_owner_allows_a_user_who_can_then_act_and_every_change_is_an_audit_row(
    world: World, panel: httpx.AsyncClient,
) -> None:
    """The owner's page lists the users; allowing the clerk lets the clerk save; the page shows who changed
    what and when; making the clerk read-only again refuses the clerk's next save."""
    await world.add_store(configure=False)
    await open_settings(panel, **as_clerk())  # the clerk has opened the app once
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app),
                                 base_url="https://127.0.0.1:8000") as owner:
        page = await open_settings(owner, **as_owner())
        assert 'id="team"' in page and "clerk@example.com" in page
        allowed = await owner.post("/bc/settings/users/42/access", data={"csrf": csrf_of(page), "allowed": "yes"})
        assert allowed.status_code == 303
        clerk_page = await open_settings(panel, **as_clerk())
        assert 'id="read-only"' not in clerk_page and 'id="team"' not in clerk_page  # only the owner grants
        saved = await panel.post("/bc/settings", data=settings_form(csrf_of(clerk_page), environment="production"))
        assert saved.status_code == 303, saved.text[:500]

        shown = (await owner.get("/bc/settings")).text
        audit = shown[shown.index('id="audit"'):]
        assert "user:42 clerk@example.com" in audit and "settings saved" in audit
        assert f"merchant id - -&gt; {MERCHANT_ID}" in audit and "new API secret" in audit
        assert "environment sandbox -&gt; production" in audit
        assert "user:1 owner@example.com" in audit and "user allowed" in audit
        assert MERCHANT_SECRET not in shown

        page = (await owner.get("/bc/settings")).text
        withdrawn = await owner.post("/bc/settings/users/42/access", data={"csrf": csrf_of(page), "allowed": "no"})
        assert withdrawn.status_code == 303
    clerk_page = await open_settings(panel, **as_clerk())
    refused = await panel.post("/bc/settings", data=settings_form(csrf_of(clerk_page), method_name="Other"))
    assert refused.status_code == 403
    async with world.rt.db.read() as conn:
        rows = (await conn.execute(select(settings_audit).order_by(settings_audit.c.id))).mappings().all()
        users = {r["user_id"]: r["may_act"] for r in (await conn.execute(select(store_users))).mappings()}
    assert [r["action"] for r in rows] == ["user_allowed", "settings_saved", "user_disallowed"]
    assert users == {1: False, 42: False}


async def test_refunds_resolutions_and_provisioning_from_the_page_are_audited(
    world: World, panel: httpx.AsyncClient,
) -> None:
    """Each money action done by the owner from the settings page leaves its row."""
    await world.add_store()
    payment_id, order_id = await paid_payment(world)
    page = await open_settings(panel, **as_owner())
    first = await panel.post("/bc/settings/refund", data={"csrf": csrf_of(page), "payment_id": str(payment_id),
                                                          "amount": "5.00"})
    key = re.search(r'name="key" value="([^"]+)"', first.text)
    assert key, first.text[:500]
    done = await panel.post("/bc/settings/refund", data={"csrf": csrf_of(first.text), "payment_id": str(payment_id),
                                                         "amount": "5.00", "confirm": "yes", "key": key.group(1)})
    assert done.status_code == 303, done.text[:500]
    async with world.rt.db.read() as conn:
        rows = (await conn.execute(select(settings_audit))).mappings().all()
    assert [(r["actor"], r["action"], r["detail"]) for r in rows] == [
        ("user:1 owner@example.com", "refund", f"order #{order_id}: 5.00 USD")]


async def test_a_sandbox_store_outside_sandbox_mode_is_warned_of_and_its_paid_orders_say_no_money_moved(
    sqlite_url: str, secret_key: str,
) -> None:
    """A store on CeleryPay's sandbox environment in a deployment not in sandbox mode: the settings page warns,
    and the staff note of each order it marks paid starts "CeleryPay sandbox: no money moved"; a production
    store's note does not."""
    async with open_world(sqlite_url, secret_key) as w:
        await w.add_store()
        async with w.rt.db.read() as conn:
            store = await q.require_store(conn, STORE_HASH)
        assert store.environment == "sandbox" and not w.settings.app.sandbox
        assert stores.sandbox_warning(w.settings, store)
        _, order_id = await paid_payment(w)
        assert w.order(order_id)["staff_notes"].startswith("CeleryPay sandbox: no money moved")
        assert w.order(order_id)["status_id"] == 11

        await stores.configure_merchant(w.rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=None,
                                        environment="production")
        async with w.rt.db.read() as conn:
            store = await q.require_store(conn, STORE_HASH)
        assert stores.sandbox_warning(w.settings, store) is None


async def test_the_settings_page_shows_the_sandbox_warning(world: World, panel: httpx.AsyncClient) -> None:
    await world.add_store()
    page = await open_settings(panel, **as_owner())
    assert 'id="sandbox-warning"' in page
    await stores.configure_merchant(world.rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=None,
                                    environment="production")
    assert 'id="sandbox-warning"' not in await open_settings(panel, **as_owner())


def test_cli_changes_are_audited_as_the_os_user_and_sandbox_stores_are_warned_of(env: Env) -> None:
    """`stores configure` writes audit rows naming cli:<os user>; `stores list` and
    `doctor` warn of a store on the CeleryPay sandbox environment (doctor's exit code does not change for it)."""
    env.add_store()
    listed = env.ok("stores", "list")
    assert "sandbox (!)" in listed.stdout and "uses the CeleryPay sandbox environment" in listed.stderr
    assert json.loads(env.ok("stores", "list", "--json").stdout)[0]["warning"]
    report = json.loads(env.cli("doctor", CLI_STORE, "--json").stdout)
    [warning] = [c for c in report["checks"] if c["name"] == "CeleryPay environment"]
    assert warning["ok"] and "no money moves" in warning["detail"] and warning["fix"]
    env.ok("stores", "configure", CLI_STORE, "--on-expired", "cancel")
    rows = env.query(select(settings_audit).order_by(settings_audit.c.id))
    actor = f"cli:{getpass.getuser()}"
    assert [(r["actor"], r["action"]) for r in rows] == [(actor, "settings_saved"), (actor, "settings_saved")]
    assert rows[0]["detail"] == f"merchant id {CLI_MERCHANT}; new API secret"
    assert rows[1]["detail"] == "on_expired cancel"
    env.ok("stores", "configure", CLI_STORE, "--merchant-id", CLI_MERCHANT, "--keep-secret", "--environment",
           "production")
    assert "(!)" not in env.ok("stores", "list").stdout
