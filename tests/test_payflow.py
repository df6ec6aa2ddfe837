"""The payment flow end to end through the server, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bcpay.storage import queries as q
from tests.world import STORE_HASH, World, open_world


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        yield w


async def test_happy_path_ends_in_paid_status_with_note_and_metafield(world: World) -> None:
    """Start, pay at the cashier, notification, job: status 11, note, provider id, metafield."""
    order = world.place_order("19.99")
    answer = await world.start(order)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["amount"] == 1999 and body["currency"] == "USD" and body["state"] == "awaiting_payment"
    assert body["cashier_url"].startswith("http://celerypay.test/cashier/pay_")
    payment_id = body["cashier_url"].rsplit("/", 1)[1]

    await world.cp.pay(payment_id)
    assert await world.cp.deliver_due() >= 1
    assert await world.run_jobs() == 2  # the read-back of the notification, then the order update

    bc_order = world.order(order["id"])
    assert bc_order["status_id"] == 11
    assert bc_order["payment_provider_id"] == payment_id
    assert "OKCloud Pay: paid 19.99 USD" in bc_order["staff_notes"]
    assert len(world.status_puts(order["id"])) == 1
    metafields = world.bc.store(STORE_HASH).metafields
    assert any(m["value"] == payment_id for m in metafields.values() if m["resource_id"] == order["id"])
    status = (await world.status(body["token"])).json()
    assert status["state"] == "paid" and status["cashier_url"] is None


def payment_id_of(body: dict[str, object]) -> str:
    url = body["cashier_url"]
    assert isinstance(url, str)
    return url.rsplit("/", 1)[1]


async def paid_order(world: World, total: str = "19.99") -> tuple[dict[str, object], dict[str, object]]:
    order = world.place_order(total)
    body = (await world.start(order)).json()
    await world.cp.pay(payment_id_of(body))
    return order, body


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"cart_id": "00000000-0000-4000-8000-000000000000"}, 404, "order_not_found"),
        ({"order_id": 999999}, 404, "order_not_found"),
        ({"store_hash": "zzz999"}, 404, "unknown_store"),
    ],
)
async def test_refusals_that_must_look_like_not_found(world: World, change: dict[str, object], status: int, code: str) -> None:
    """A wrong cart id answers exactly like an unknown order (ids cannot be probed)."""
    order = world.place_order()
    body = {"store_hash": STORE_HASH, "order_id": order["id"], "cart_id": order["cart_id"], **change}
    answer = await world.client.post("/api/v1/payments", json=body)
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == code
    assert world.cp.payments == {}


async def test_wrong_cart_and_unknown_order_answers_are_identical(world: World) -> None:
    order = world.place_order()
    wrong_cart = await world.start(order, cart_id="00000000-0000-4000-8000-000000000000")
    missing = await world.client.post(
        "/api/v1/payments", json={"store_hash": STORE_HASH, "order_id": 987654, "cart_id": order["cart_id"]}
    )
    assert (wrong_cart.status_code, wrong_cart.json()) == (missing.status_code, missing.json())


@pytest.mark.parametrize(
    ("order_kwargs", "code"),
    [({"status_id": 11}, "order_not_awaiting_payment"), ({"payment_method": "Cash on Delivery"}, "wrong_payment_method")],
)
async def test_orders_that_are_not_ours_or_not_awaiting_payment_are_refused(
    world: World, order_kwargs: dict[str, object], code: str
) -> None:
    order = world.place_order(**order_kwargs)
    answer = await world.start(order)
    assert answer.status_code == 422 and answer.json()["error"]["code"] == code
    assert world.cp.payments == {}


async def test_too_old_order_is_refused(world: World) -> None:
    from datetime import UTC, datetime, timedelta

    order = world.place_order(created=datetime.now(UTC) - timedelta(days=3))
    answer = await world.start(order)
    assert answer.json()["error"]["code"] == "order_too_old"


async def test_store_without_credentials_is_refused(db_url: str, secret_key: str) -> None:
    async with open_world(db_url, secret_key) as w:
        await w.add_store(configure=False)
        answer = await w.start(w.place_order())
        assert answer.status_code == 409 and answer.json()["error"]["code"] == "store_not_configured"


async def test_double_clicks_reuse_one_pending_attempt(world: World) -> None:
    """Same cashier URL, one CeleryPay payment, however often the snippet asks."""
    import asyncio

    order = world.place_order()
    answers = await asyncio.gather(*(world.start(order) for _ in range(8)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["cashier_url"] for a in answers}) == 1
    assert len({a.json()["token"] for a in answers}) == 1
    assert len(world.cp.payments) == 1


async def test_already_paid_order_never_gets_a_new_cashier_url(world: World) -> None:
    order, _body = await paid_order(world)
    await world.cp.deliver_due()
    await world.run_jobs()
    again = await world.start(order)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_paid"
    assert again.json()["payment"]["state"] == "paid"
    assert again.json()["payment"]["cashier_url"] is None
    assert len(world.cp.payments) == 1


async def test_duplicate_notifications_apply_once(world: World) -> None:
    """Fifty deliveries of the same event: 2xx each, one status PUT."""
    order, body = await paid_order(world)
    event = world.events_of(payment_id_of(body))[-1]
    outcomes = [(await world.notify(event)).json()["outcome"] for _ in range(50)]
    assert outcomes[0] == "queued" and set(outcomes[1:]) == {"duplicate"}
    await world.run_jobs()
    await world.run_jobs()
    assert len(world.status_puts(order["id"])) == 1
    assert world.order(order["id"])["status_id"] == 11


async def test_out_of_order_events_never_move_state_back(world: World) -> None:
    """A late, older event (pending copy, failed) after success changes nothing."""
    order, body = await paid_order(world)
    pid = payment_id_of(body)
    [succeeded] = world.events_of(pid)
    stale_failed = {**succeeded, "id": "evt_latefailed0001", "type": "payment.failed",
                    "data": {**succeeded["data"], "status": "failed", "paid_amount": None,
                             "failure_code": "card_declined"}}
    assert (await world.notify(succeeded)).json()["outcome"] == "queued"
    assert (await world.notify(stale_failed)).json()["outcome"] == "queued"
    await world.run_jobs()
    async with world.rt.db.read() as conn:
        checked = {e["event_id"]: e["outcome"] for e in await q.list_events(conn, limit=10)}
    assert checked == {succeeded["id"]: "applied", stale_failed["id"]: "stale"}  # CeleryPay said succeeded twice
    status = (await world.status(body["token"])).json()
    assert status["state"] == "paid"
    assert world.order(order["id"])["status_id"] == 11


async def test_amount_mismatch_goes_to_manual_verification_never_paid(world: World) -> None:
    order = world.place_order("19.99")
    body = (await world.start(order)).json()
    await world.cp.pay(payment_id_of(body), amount=999)
    await world.cp.deliver_due()
    await world.run_jobs()
    bc_order = world.order(order["id"])
    assert bc_order["status_id"] == 12
    assert "paid amount 999 differs from the order total 1999" in bc_order["staff_notes"]
    assert [p["status_id"] for p in world.status_puts(order["id"])] == [12]
    assert (await world.status(body["token"])).json()["state"] == "under_review"


async def test_an_order_edited_after_the_payment_started_is_not_marked_paid(world: World) -> None:
    """The shopper pays the old total on an open cashier page; the order now owes more: manual verification."""
    order = world.place_order("50.00")
    body = (await world.start(order)).json()
    world.order(order["id"])["total_inc_tax"] = "80.0000"  # the merchant edits the order meanwhile
    await world.cp.pay(payment_id_of(body))
    await world.cp.deliver_due()
    await world.run_jobs()
    bc_order = world.order(order["id"])
    assert [p["status_id"] for p in world.status_puts(order["id"])] == [12]
    assert "paid 50.00 USD but the order now totals 80.00 USD" in bc_order["staff_notes"]
    assert (await world.status(body["token"])).json()["state"] == "under_review"
    from bcpay.storage import queries as q

    async with world.rt.db.read() as conn:
        [anomaly] = await q.list_anomalies(conn)
    assert anomaly["kind"] == "amount_mismatch" and anomaly["amount"] == 5000


async def test_an_order_edited_to_a_total_with_no_whole_minor_units_is_a_mismatch(
    db_url: str, secret_key: str
) -> None:
    """1500.5 JPY cannot equal any capture: manual verification at once, not a job retried until dead."""
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        order = w.place_order("1357")
        w.order(order["id"])["currency_code"] = w.order(order["id"])["default_currency_code"] = "JPY"
        body = (await w.start(order)).json()
        assert body["amount"] == 1357 and body["currency"] == "JPY", body
        w.order(order["id"])["total_inc_tax"] = "1500.5000"
        await w.cp.pay(payment_id_of(body))
        await w.cp.deliver_due()
        await w.run_jobs()
        assert [p["status_id"] for p in w.status_puts(order["id"])] == [12]
        assert "but the order now totals 1500.5000 JPY" in w.order(order["id"])["staff_notes"]


async def test_a_payment_for_an_order_deleted_meanwhile_is_an_anomaly_not_a_dead_job(world: World) -> None:
    from bcpay import outbox
    from bcpay.storage import queries as q

    order = world.place_order("19.99")
    body = (await world.start(order)).json()
    del world.bc.store(STORE_HASH).orders[order["id"]]  # the merchant deletes the order
    await world.cp.pay(payment_id_of(body))
    await world.cp.deliver_due()
    await world.run_jobs()
    async with world.rt.db.read() as conn:
        [anomaly] = await q.list_anomalies(conn)
    assert anomaly["kind"] == "order_gone" and anomaly["amount"] == 1999
    assert await outbox.list_jobs(world.rt.db, state=outbox.DEAD) == []


async def test_a_currency_swapped_in_a_signed_event_is_not_applied(world: World) -> None:
    """The event says JPY; CeleryPay says the payment took 19.99 USD: that is what counts."""
    order = world.place_order("19.99")
    body = (await world.start(order)).json()
    pid = payment_id_of(body)
    await world.cp.pay(pid)
    [event] = world.events_of(pid)
    forged = {**event, "id": "evt_currencyswap01", "data": {**event["data"], "currency": "JPY"}}
    assert (await world.notify(forged)).json()["outcome"] == "queued"
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 11
    assert (await world.status(body["token"])).json()["currency"] == "USD"


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [({"secret": "x" * 40}, 401, "no signature matches"),
     ({"timestamp": 1_000_000_000}, 401, "timestamp outside the tolerance window")],
)
async def test_forged_or_stale_signatures_are_rejected_and_change_nothing(
    world: World, kwargs: dict[str, object], status: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused with 401, and logged with the reason (the operator's only trace of a stale secret or clock)."""
    order, body = await paid_order(world)
    [event] = world.events_of(payment_id_of(body))
    with caplog.at_level("WARNING", logger="bcpay.notifications"):
        answer = await world.notify(event, **kwargs)  # type: ignore[arg-type]
    assert answer.status_code == status
    assert answer.json()["error"]["code"] == "invalid_signature"
    assert [r.getMessage() for r in caplog.records if r.name == "bcpay.notifications"] == [
        f"CeleryPay notification for store {STORE_HASH} refused: {reason}"]
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 7
    assert (await world.status(body["token"])).json()["state"] in ("awaiting_payment", "paid")


async def test_rotated_secret_keeps_old_signatures_valid_for_the_window(world: World) -> None:
    from bcpay import stores
    from tests.world import MERCHANT_ID, MERCHANT_SECRET

    new_secret = "n" * 40
    world.cp.add_merchant(MERCHANT_ID, new_secret, old_secret=MERCHANT_SECRET)
    await stores.configure_merchant(world.rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=new_secret)
    _order, body = await paid_order(world)
    [event] = world.events_of(payment_id_of(body))
    assert (await world.notify(event, secret=MERCHANT_SECRET)).status_code == 200
    other = {**event, "id": "evt_newsecret00001"}
    assert (await world.notify(other, secret=new_secret)).status_code == 200


async def test_unknown_store_and_garbage_bodies_get_clear_errors(world: World) -> None:
    answer = await world.client.post("/notify/celerypay/nosuchstore", content=b"{}")
    assert answer.status_code == 404
    answer = await world.notify({}, raw=b"not json at all")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_celerypay_object"
    big = await world.client.post(f"/notify/celerypay/{STORE_HASH}", content=b"x" * 300_000)
    assert big.status_code == 413


async def test_paid_after_the_merchant_cancelled_is_an_anomaly_not_a_status_change(world: World) -> None:
    from bcpay.storage import queries as q

    order = world.place_order()
    body = (await world.start(order)).json()
    world.bc.set_order_status(STORE_HASH, order["id"], 5)
    await world.cp.pay(payment_id_of(body))
    await world.cp.deliver_due()
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 5
    assert world.status_puts(order["id"]) == []
    async with world.rt.db.read() as conn:
        anomalies = await q.list_anomalies(conn)
    assert [(a["kind"], a["amount"]) for a in anomalies] == [("paid_after_cancel", 1999)]


async def test_paid_after_cancel_refunded_automatically_leaves_the_cancelled_order_alone(
    db_url: str, secret_key: str
) -> None:
    """The money goes back, and the order the merchant cancelled stays Cancelled (not Refunded)."""
    async with open_world(db_url, secret_key, payments={"refund_duplicates": "auto"}) as w:
        await w.add_store()
        order = w.place_order("19.99")
        body = (await w.start(order)).json()
        w.bc.set_order_status(STORE_HASH, order["id"], 5)
        await w.cp.pay(payment_id_of(body))
        await w.cp.deliver_due()
        await w.run_jobs()
        await w.cp.deliver_due()  # refund.succeeded
        await w.run_jobs()
        assert w.cp.payment_record(payment_id_of(body)).refunded_amount == 1999
        assert w.order(order["id"])["status_id"] == 5 and w.status_puts(order["id"]) == []


async def test_second_capture_for_a_paid_order_is_a_double_payment_anomaly(world: World) -> None:
    """A first attempt we held as failed turns out captured after the second paid."""
    from sqlalchemy import update

    from bcpay.storage import queries as q
    from bcpay.storage.schema import payments

    order = world.place_order()
    first = (await world.start(order)).json()
    async with world.rt.db.transaction() as conn:  # as if its creation had been given up locally
        await conn.execute(update(payments).where(payments.c.token == first["token"]).values(status="failed"))
    second = (await world.start(order)).json()
    assert second["token"] != first["token"]
    await world.cp.pay(payment_id_of(second))
    await world.cp.deliver_due()
    await world.run_jobs()
    await world.cp.pay(payment_id_of(first))
    await world.cp.deliver_due()
    await world.run_jobs()
    assert len(world.status_puts(order["id"])) == 1
    async with world.rt.db.read() as conn:
        anomalies = await q.list_anomalies(conn)
    assert [(a["kind"], a["amount"]) for a in anomalies] == [("double_payment", 1999)]


async def test_bigcommerce_down_during_notification_then_recovers_once(world: World) -> None:
    """The notification is acknowledged; the job retries; one PUT once BigCommerce is back."""
    from datetime import timedelta

    order, _body = await paid_order(world)
    world.bc.chaos.error_rate = 1.0
    assert await world.cp.deliver_due() == 1
    assert world.cp.deliveries[-1].status_code == 200
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 7
    world.bc.chaos.error_rate = 0.0
    later = world.rt.now() + timedelta(hours=1)
    world.rt.clock = lambda: later
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 11
    assert len(world.status_puts(order["id"])) == 1


async def test_status_poll_resolves_a_payment_whose_notification_never_came(world: World) -> None:
    order = world.place_order()
    body = (await world.start(order)).json()
    await world.cp.pay(payment_id_of(body))  # no deliver_due: the notification is lost
    status = (await world.status(body["token"])).json()
    assert status["state"] == "paid"
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 11


async def test_failed_payment_then_a_new_attempt_succeeds(world: World) -> None:
    order = world.place_order()
    first = (await world.start(order)).json()
    await world.cp.decline(payment_id_of(first))
    await world.cp.deliver_due()
    assert (await world.status(first["token"])).json()["state"] == "failed"
    second = (await world.start(order)).json()
    assert second["token"] != first["token"] and second["state"] == "awaiting_payment"
    await world.cp.pay(payment_id_of(second))
    await world.cp.deliver_due()
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 11
    merchant_nos = sorted(p["merchant_order_no"] for p in world.cp.payments.values())
    assert merchant_nos == [f"{STORE_HASH}-{order['id']}-1", f"{STORE_HASH}-{order['id']}-2"]
    # The first attempt's page (a link the shopper kept) shows the paid one, never "try again".
    page = await world.client.get(f"/pay/{first['token']}")
    assert page.status_code == 303 and page.headers["location"] == f"/pay/{second['token']}"
    again = await world.client.post(f"/pay/{first['token']}")
    assert again.status_code == 303 and again.headers["location"] == f"/pay/{second['token']}"


async def test_a_payment_paid_before_its_notification_is_not_offered_again(world: World) -> None:
    """The shopper paid; the notification is still on its way; a new tab of the confirmation page starts
    again: CeleryPay is asked before the cashier is offered, and the answer is "already paid"."""
    order = world.place_order()
    first = (await world.start(order)).json()
    await world.cp.pay(payment_id_of(first))  # nothing delivered yet
    again = await world.start(order)
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_paid"
    assert again.json()["payment"]["token"] == first["token"] and again.json()["payment"]["state"] == "paid"


async def test_expired_payment_cancels_the_order_when_configured(db_url: str, secret_key: str) -> None:
    async with open_world(db_url, secret_key, payments={"on_expired": "cancel"}) as w:
        await w.add_store()
        order = w.place_order()
        body = (await w.start(order)).json()
        record = w.cp.payment_record(payment_id_of(body))
        record.expires_at = 0  # type: ignore[assignment]
        assert await w.cp.expire_due()
        await w.cp.deliver_due()
        await w.run_jobs()
        assert w.order(order["id"])["status_id"] == 5
        assert "expired unpaid" in w.order(order["id"])["staff_notes"]


async def pay_through_the_page(world: World, path: str) -> None:
    """Press Pay now on a pay page, pay at the cashier it leads to, and let bcpay apply it."""
    go = await world.client.post(path)
    assert go.status_code == 303 and go.headers["location"].startswith("http://celerypay.test/cashier/pay_")
    await world.cp.pay(go.headers["location"].rsplit("/", 1)[1])
    await world.cp.deliver_due()
    await world.run_jobs()


async def test_pay_link_for_an_order_that_never_reached_the_cashier(world: World) -> None:
    """Ops send the link; the shopper's Pay now goes to the cashier; paying settles the order."""
    from bcpay import payflow

    order = world.place_order("5.00")
    link = await payflow.pay_link(world.rt, STORE_HASH, order["id"])
    assert link.startswith("http://127.0.0.1:8000/pay/")
    assert await payflow.pay_link(world.rt, STORE_HASH, order["id"]) == link
    path = link.removeprefix("http://127.0.0.1:8000")
    page = await world.client.get(path)
    assert page.status_code == 200 and "5.00 USD" in page.text and "Pay now" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    await pay_through_the_page(world, path)
    assert world.order(order["id"])["status_id"] == 11
    # Back from the cashier, this shopper (no BigCommerce session, maybe another device) comes back to
    # bcpay's page, not to a store confirmation page that cannot show the order.
    back = await world.client.get(f"{path}/return?celerypay_status=succeeded")
    assert back.status_code == 303 and back.headers["location"] == path
    page = await world.client.get(path)
    assert "Payment received" in page.text and "Pay now" not in page.text


async def test_a_pay_link_opened_hours_later_still_reads_as_unpaid_and_pays(world: World) -> None:
    """The link's attempt never reached CeleryPay, so the first look after the creation grace gives it up
    (not_created); the shopper must still see an order to pay, not "the payment did not go through"."""
    from datetime import timedelta

    from bcpay import payflow

    order = world.place_order("5.00")
    link = await payflow.pay_link(world.rt, STORE_HASH, order["id"])
    path = link.removeprefix("http://127.0.0.1:8000")
    world.travel(timedelta(hours=3))
    page = await world.client.get(path)
    assert page.status_code == 200 and "Pay now" in page.text and "5.00 USD" in page.text
    assert "did not go through" not in page.text and "never created" not in page.text
    token = path.rsplit("/", 1)[1]
    polled = (await world.client.get(f"/api/v1/payments/{token}")).json()
    assert polled["state"] == "awaiting_payment" and polled["status"] == "failed"  # given up, shown unpaid
    await pay_through_the_page(world, path)
    assert world.order(order["id"])["status_id"] == 11
    # The given-up link, opened again once the order is paid, leads to the paid attempt's page.
    again = await world.client.get(path)
    assert again.status_code == 303 and again.headers["location"] != path
    assert "Payment received" in (await world.client.get(again.headers["location"])).text


async def test_the_pay_page_shows_only_its_own_words_for_an_error(world: World) -> None:
    """``?error=`` is anyone's to write: a known code gets its fixed text, anything else the generic one."""
    from bcpay import payflow

    order = world.place_order("5.00")
    path = (await payflow.pay_link(world.rt, STORE_HASH, order["id"])).removeprefix("http://127.0.0.1:8000")
    final = await world.client.get(path + "?error=order_not_awaiting_payment")
    assert "This order no longer awaits payment" in final.text and "try again" not in final.text
    planted = await world.client.get(path + "?error=Call%20%2B1-555-0100%20to%20pay%20by%20phone")
    assert "555-0100" not in planted.text and "We could not start the payment. Please try again" in planted.text
    assert "role=\"alert\"" not in (await world.client.get(path)).text


async def test_return_hop_sends_the_shopper_to_the_confirmation_page_or_bcpay(world: World) -> None:
    from bcpay import stores

    order = world.place_order()
    body = (await world.start(order)).json()
    back = await world.client.get(f"/pay/{body['token']}/return?celerypay_status=succeeded")
    assert back.status_code == 303
    assert back.headers["location"] == f"https://shop.example.com/checkout/order-confirmation#bcpay_token={body['token']}"
    await stores.update_settings(world.rt, STORE_HASH, {"return_to": "bcpay"})
    back = await world.client.get(f"/pay/{body['token']}/return")
    assert back.headers["location"] == f"/pay/{body['token']}"
    assert (await world.client.get("/pay/nosuchtoken/return")).status_code == 404


async def test_a_lost_creation_answer_with_a_changed_body_finds_the_payment(world: World) -> None:
    """The retried creation conflicts on its Idempotency-Key; the payment is found by order number."""
    from sqlalchemy import update

    from bcpay.storage import queries as q
    from bcpay.storage.schema import payments

    order = world.place_order()
    first = (await world.start(order)).json()
    async with world.rt.db.transaction() as conn:
        # as if CeleryPay's answer had been lost, and the store renamed meanwhile (a new body)
        await conn.execute(update(payments).where(payments.c.token == first["token"])
                           .values(status="creating", celerypay_id=None, cashier_url=None))
        store = await q.require_store(conn, STORE_HASH)
        await q.update_store(conn, store.id, world.rt.now(), name="Renamed Shop")
    again = await world.start(order)
    assert again.status_code == 200, again.text
    assert again.json()["token"] == first["token"]
    assert again.json()["cashier_url"] == first["cashier_url"]
    assert len(world.cp.payments) == 1


async def test_a_job_slower_than_its_lease_is_cut_short_and_retried(db_url: str, secret_key: str) -> None:
    """No second worker may run a job whose first run outlived the lease; it retries instead."""
    from datetime import timedelta

    from bcpay import outbox

    async with open_world(db_url, secret_key, outbox={"lease_seconds": 6, "backoff_base": 0.1}) as w:
        await w.add_store()
        order = w.place_order()
        body = (await w.start(order)).json()
        await w.cp.pay(payment_id_of(body))
        w.bc.chaos.latency = 1.5  # each BigCommerce call now outlasts the 1 s budget
        await w.cp.deliver_due()
        await w.run_jobs()
        [job] = [j for j in await outbox.list_jobs(w.rt.db) if j.kind == "mark_paid"]
        assert job.state == outbox.QUEUED and "took longer than" in (job.last_error or "")
        w.bc.chaos.latency = 0.0
        later = w.rt.now() + timedelta(seconds=5)
        w.rt.clock = lambda: later
        await w.run_jobs()
        assert w.order(order["id"])["status_id"] == 11
        assert len(w.status_puts(order["id"])) == 1


async def test_a_job_that_keeps_timing_out_backs_off_like_any_other_transient_failure(
    db_url: str, secret_key: str,
) -> None:
    """BigCommerce slower than a job's budget for a while: each timeout waits twice as long as the one before,
    as a 5xx would, so an incident of some minutes does not use up every attempt at a fixed short pace."""
    from datetime import timedelta

    import pytest

    from bcpay import outbox

    async with open_world(db_url, secret_key, outbox={"lease_seconds": 6, "backoff_base": 0.1}) as w:
        await w.add_store()
        order = w.place_order()
        body = (await w.start(order)).json()
        await w.cp.pay(payment_id_of(body))
        w.bc.chaos.latency = 1.5  # each BigCommerce call outlasts the 1 s budget
        await w.cp.deliver_due()
        waits = []
        for _ in range(3):
            await w.run_jobs()
            [job] = [j for j in await outbox.list_jobs(w.rt.db) if j.kind == "mark_paid"]
            assert job.state == outbox.QUEUED and "took longer than" in (job.last_error or "")
            waits.append((job.run_after - job.updated_at).total_seconds())
            w.travel(timedelta(seconds=waits[-1]))
        assert waits == pytest.approx([0.1, 0.2, 0.4])
        assert job.attempts == 3


async def test_a_poll_that_finds_it_still_pending_records_the_check_and_nothing_else(world: World) -> None:
    """CeleryPay is asked (last_checked_at moves), the attempt row is otherwise untouched; a later poll sees it paid."""
    from datetime import timedelta

    from sqlalchemy import select, update

    from bcpay.storage.schema import audit_log, payments

    order = world.place_order()
    body = (await world.start(order)).json()
    long_ago = world.rt.now() - timedelta(minutes=5)

    async def row() -> Any:
        async with world.rt.db.read() as conn:
            return (await conn.execute(select(payments).where(payments.c.token == body["token"]))).mappings().one()

    async def backdate() -> None:
        async with world.rt.db.transaction() as conn:
            await conn.execute(update(payments).where(payments.c.token == body["token"]).values(
                last_checked_at=long_ago))

    async def audit_lines() -> int:
        async with world.rt.db.read() as conn:
            return len((await conn.execute(select(audit_log))).all())

    await backdate()
    before, lines = await row(), await audit_lines()
    assert (await world.status(body["token"])).json()["state"] == "awaiting_payment"
    after = await row()
    assert after["last_checked_at"] > long_ago
    assert (after["updated_at"], after["status"]) == (before["updated_at"], "pending")
    assert await audit_lines() == lines

    await world.cp.pay(payment_id_of(body))  # the notification is lost
    await backdate()
    assert (await world.status(body["token"])).json()["state"] == "paid"
    assert (await row())["status"] == "succeeded"


async def test_payments_polled_in_step_ask_celerypay_in_different_rounds(db_url: str, secret_key: str) -> None:
    """Thirty payments looked up together, then polled round after round: each asks CeleryPay again no
    sooner than the interval and by 1.5 times it, and the look-ups fall in several rounds, not one."""
    import random
    from datetime import timedelta

    from sqlalchemy import select

    from bcpay.storage.schema import payments

    async with open_world(db_url, secret_key, payments={"status_poll_interval": 10}) as w:
        await w.add_store()
        w.rt.rng = random.Random(20261126)
        tokens = [(await w.start(w.place_order())).json()["token"] for _ in range(30)]

        async def checked() -> dict[str, Any]:
            async with w.rt.db.read() as conn:
                rows = (await conn.execute(select(payments.c.token, payments.c.last_checked_at))).all()
            return dict(rows)

        # bcpay's clock stands still within a round (a slow machine must not move a look-up to another round).
        start = w.rt.now() + timedelta(seconds=60)
        w.rt.clock = lambda: start
        for token in tokens:  # every one is due: all ask CeleryPay in this round
            await w.status(token)
        first = await checked()
        assert all(first[token] == start for token in tokens)
        asked_in: dict[str, int] = {}
        for second in range(1, 17):  # a poll round every second
            w.rt.clock = lambda second=second: start + timedelta(seconds=second)
            for token in tokens:
                await w.status(token)
            now = await checked()
            asked_in.update({t: second for t in tokens if t not in asked_in and now[t] != first[t]})

    assert set(asked_in) == set(tokens)
    assert min(asked_in.values()) >= 10 and max(asked_in.values()) <= 15
    assert len(set(asked_in.values())) >= 3, asked_in


async def test_a_poll_answers_what_bcpay_knows_when_celerypay_refuses_the_lookup(world: World) -> None:
    """A 401 from CeleryPay (its secret was rotated and ours is stale) is no 502 for the shopper."""
    from datetime import timedelta

    from sqlalchemy import update

    from bcpay.storage.schema import payments
    from tests.world import MERCHANT_ID

    order = world.place_order()
    body = (await world.start(order)).json()
    world.cp.add_merchant(MERCHANT_ID, "n" * 40)  # CeleryPay now only accepts a secret bcpay does not have
    async with world.rt.db.transaction() as conn:  # the last check long ago: this poll asks CeleryPay
        await conn.execute(update(payments).where(payments.c.token == body["token"]).values(
            last_checked_at=world.rt.now() - timedelta(minutes=5)))
    answer = await world.status(body["token"])
    assert answer.status_code == 200 and answer.json()["state"] == "awaiting_payment"
    page = await world.client.get(f"/pay/{body['token']}")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


async def test_the_conditional_update_the_never_created_sweep_uses_leaves_an_attempt_that_moved_on(
    world: World,
) -> None:
    """update_payment_if, which the sweep uses to fail a stale 'creating' attempt: one that became pending
    meanwhile stays pending (the race itself is not staged here)."""
    from bcpay.storage import queries as q

    order = world.place_order()
    body = (await world.start(order)).json()
    async with world.rt.db.read() as conn:
        attempt = await q.get_payment_by_token(conn, body["token"])
    assert attempt is not None and attempt.status == "pending"
    async with world.rt.db.transaction() as conn:
        changed = await q.update_payment_if(conn, attempt.id, "creating", status="failed", failure_code="not_created")
        assert changed is False
        assert (await q.get_payment(conn, attempt.id)).status == "pending"
        assert await q.update_payment_if(conn, attempt.id, "pending", outcome="x") is True


async def test_every_job_about_a_payment_is_about_its_order(db_url: str, secret_key: str) -> None:
    """Jobs of two attempts of one order read and write the same order: each names the order as
    its subject, so no two of them run at once (``outbox.claim``)."""
    from sqlalchemy import update

    from bcpay import outbox
    from bcpay.storage import queries as q
    from bcpay.storage.schema import payments

    async with open_world(db_url, secret_key, payments={"on_expired": "cancel", "refund_duplicates": "auto"}) as w:
        await w.add_store()
        mismatched, doubled, expired = w.place_order(), w.place_order(), w.place_order()
        await w.cp.pay(payment_id_of((await w.start(mismatched)).json()), amount=999)
        first = (await w.start(doubled)).json()
        async with w.rt.db.transaction() as conn:  # as if its creation had been given up locally
            await conn.execute(update(payments).where(payments.c.token == first["token"]).values(status="failed"))
        await w.cp.pay(payment_id_of((await w.start(doubled)).json()))
        await w.cp.deliver_due()
        await w.run_jobs()
        await w.cp.pay(payment_id_of(first))
        w.cp.payment_record(payment_id_of((await w.start(expired)).json())).expires_at = 0  # type: ignore[assignment]
        assert await w.cp.expire_due()
        await w.cp.deliver_due()
        await w.run_jobs()
        await w.cp.deliver_due()
        await w.run_jobs()
        jobs = await outbox.list_jobs(w.rt.db, limit=100)
        async with w.rt.db.read() as conn:
            store = await q.require_store(conn, STORE_HASH)
            orders = {j.id: (await q.get_payment(conn, j.payload["payment_id"])).order_id for j in jobs}
    effects = sorted(j.kind for j in jobs if j.kind != "check_event")  # and one read-back per notification
    assert effects == ["cancel_order", "mark_mismatch", "mark_paid", "refund", "refund_status"]
    assert {j.subject for j in jobs} == {f"order:{store.id}:{o['id']}" for o in (mismatched, doubled, expired)}
    assert all(j.subject == f"order:{store.id}:{orders[j.id]}" for j in jobs)
