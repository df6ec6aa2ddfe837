"""Hostile and malformed input: clear errors, no 5xx, nothing changes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcpay import install, outbox, stores
from bcpay.provisioning import WEBHOOK_SECRET_HEADER
from bcpay.sandbox.bc_apps import revoke_tokens, signed_payload_jwt, uninstall_app
from bcpay.sandbox.runner import Sandbox, SandboxOptions
from bcpay.server.app import create_app
from bcpay.signatures import sign_notification
from bcpay.storage import queries as q
from bcpay.storage.records import StoreRecord
from tests.builders import REMOVE, bc_jwt
from tests.world import MERCHANT_ID, MERCHANT_SECRET, PUBLIC_URL, STORE_HASH, STORE_URL, World, open_world

OTHER_HASH = "other456"
OTHER_URL = "https://other.example.com"
OTHER_MERCHANT = "mch_OtherMerchant000002"
OTHER_SECRET = "o" * 20 + "ther-secret-for-tests-0123456789"
OTHER_TOKEN = "bc-access-token-of-the-other-store"

WEIRD = ["", " ", "\x00", "null\x00byte", "é☃𝄞", "‮rtl", "a" * 10_000, "../../etc/passwd", "<script>x</script>",
         "1; DROP TABLE payments", "{{checkout.order.id}}", "-1", "0", "1e309", "NaN",
         "²", "١٢٣"]  # digits to str.isdigit(), not to int() or not ASCII


@pytest.fixture
async def world(sqlite_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(sqlite_url, secret_key) as w:
        await w.add_store()
        yield w


@pytest.mark.parametrize("field", ["store_hash", "order_id", "cart_id"])
@pytest.mark.parametrize("value", [*WEIRD, None, 3.5, True, [], {}, -5, 10**30])
async def test_weird_values_in_every_start_field_get_a_4xx(world: World, field: str, value: object) -> None:
    order = world.place_order()
    body = {"store_hash": STORE_HASH, "order_id": order["id"], "cart_id": order["cart_id"], field: value}
    answer = await world.client.post("/api/v1/payments", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert answer.json()["error"]["code"]
    assert world.cp.payments == {}


@pytest.mark.parametrize(
    ("content", "ctype", "code"),
    [(b"<xml/>", "application/xml", "unsupported_media_type"), (b"{", "application/json", "invalid_json"),
     (b"[]", "application/json", "invalid_json"), (b"\xff\xfe", "application/json", "invalid_json"),
     (b'{"a":1}' * 20000, "application/json", "body_too_large"),
     (b"[" * 60_000, "application/json", "invalid_json")],  # deeper than the JSON parser recurses
)
async def test_malformed_bodies_get_clear_errors(world: World, content: bytes, ctype: str, code: str) -> None:
    answer = await world.client.post("/api/v1/payments", content=content, headers={"Content-Type": ctype})
    assert answer.json()["error"]["code"] == code
    assert answer.status_code in (400, 413)


@given(st.dictionaries(st.sampled_from(["store_hash", "order_id", "cart_id", "x"]),
                       st.one_of(st.text(), st.integers(), st.none(), st.booleans(), st.floats(allow_nan=True))))
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_random_json_never_5xx(body: dict[str, object]) -> None:
    """Hypothesis over the start endpoint, against a fresh in-process world per run."""

    async def run() -> int:
        import tempfile

        from bcpay.crypto import generate_key
        from bcpay.storage.db import Database
        from bcpay.storage.migrate import upgrade

        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/h.db"
            db = Database(url)
            await upgrade(db)
            await db.dispose()
            async with open_world(url, generate_key()) as w:
                await w.add_store()
                return (await w.client.post("/api/v1/payments", content=json.dumps(body))).status_code

    assert asyncio.run(run()) < 500


async def test_guessing_someone_elses_order_reveals_nothing(world: World) -> None:
    """Every guess answers the same 404, whether the order exists or not."""
    victim = world.place_order("99.00")
    real = victim["cart_id"]
    near_miss = real[:-1] + ("1" if real.endswith("0") else "0")  # one character off, never the real one
    answers = set()
    for order_id in (victim["id"], victim["id"] + 1, 123456):
        for cart in ("00000000-0000-4000-8000-000000000000", near_miss):
            answer = await world.client.post(
                "/api/v1/payments", json={"store_hash": STORE_HASH, "order_id": order_id, "cart_id": cart}
            )
            answers.add((answer.status_code, answer.text))
    assert answers == {(404, json.dumps({"error": {"code": "order_not_found", "message": "no such order"}},
                                        separators=(",", ":")))}
    assert world.cp.payments == {}


async def test_foreign_origin_is_refused_even_with_valid_data(world: World) -> None:
    order = world.place_order()
    answer = await world.client.post(
        "/api/v1/payments", json={"store_hash": STORE_HASH, "order_id": order["id"], "cart_id": order["cart_id"]},
        headers={"Origin": "https://evil.example"},
    )
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in answer.headers
    assert world.cp.payments == {}
    ok = await world.start(order)
    assert ok.headers["access-control-allow-origin"] == STORE_URL


async def test_a_flood_from_one_ip_is_rate_limited(sqlite_url: str, secret_key: str) -> None:
    async with open_world(sqlite_url, secret_key, server={"rate_limit_per_ip": 5}) as w:
        await w.add_store()
        codes = [(await w.client.get("/api/v1/payments/nosuchtoken")).status_code for _ in range(12)]
        assert codes[:5] == [404] * 5 and set(codes[5:]) == {429}
        limited = await w.client.get("/api/v1/payments/nosuchtoken")
        assert int(limited.headers["retry-after"]) >= 1
        assert (await w.client.get("/healthz")).status_code == 200  # health is never limited
        assert (await w.client.get("/metrics")).status_code == 429  # it counts rows in the database
        # The snippet must be able to read the 429 (status, Retry-After) from the store's origin.
        cors = await w.client.get("/api/v1/payments/nosuchtoken", headers={"Origin": STORE_URL})
        assert cors.status_code == 429 and cors.headers["access-control-allow-origin"] == STORE_URL
        assert "Retry-After" in cors.headers["access-control-expose-headers"]


async def test_null_bytes_and_unicode_in_paths_are_handled(db_url: str, secret_key: str) -> None:
    """On PostgreSQL too, where a NUL byte in a text parameter is a driver error, not a miss."""
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        for path in ("/api/v1/payments/%00", "/api/v1/payments/a%00b", "/api/v1/payments/%E2%98%83", "/pay/%00",
                     "/pay/%00/return", "/pay/a%00b/return", "/pay/" + "a" * 500, "/notify/celerypay/ABC",
                     "/notify/celerypay/%00"):
            method = "POST" if path.startswith("/notify") else "GET"
            answer = await w.client.request(method, path, content=b"{}")
            assert 400 <= answer.status_code < 500, (path, answer.status_code)
        posted = await w.client.post("/pay/a%00b")
        assert posted.status_code < 500 and w.cp.payments == {}


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox(SandboxOptions(port_base=0)) as sb:
        yield sb


async def test_a_slow_body_does_not_block_other_requests(sandbox: Sandbox) -> None:
    """A client trickling a body holds only its own connection."""
    host, port = sandbox.urls.bcpay.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    slow = socket.create_connection((host, int(port)))
    slow.setblocking(False)
    await loop.sock_sendall(slow, b"POST /api/v1/payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: 1000\r\n\r\n{\"store_hash\":")
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(5):
            assert (await http.get(sandbox.urls.bcpay + "/healthz")).status_code == 200
    slow.close()


async def test_metrics_answer_only_their_token_when_one_is_set(sqlite_url: str, secret_key: str) -> None:
    async with open_world(sqlite_url, secret_key) as open_:
        assert (await open_.client.get("/metrics")).status_code == 200  # no token set: open, as before
    async with open_world(sqlite_url, secret_key, server={"metrics_token": "m" * 32}) as w:
        for header in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer " + "m" * 31},
                       {"Authorization": "Bearer é".encode("latin-1")}):
            refused = await w.client.get("/metrics", headers=header)
            assert refused.status_code == 401 and "bcpay_" not in refused.text
        ok = await w.client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32})
        assert ok.status_code == 200 and "bcpay_outbox_depth" in ok.text


async def test_junk_payment_starts_stop_spending_the_stores_bigcommerce_quota(sqlite_url: str, secret_key: str) -> None:
    """Each start reads the order from BigCommerce. Past the budget of look-ups that find nothing, orders
    bcpay has never seen wait (429, no BigCommerce call); a shopper resuming a known order goes on."""
    async with open_world(sqlite_url, secret_key, server={"failed_lookups_per_minute": 3}) as w:
        await w.add_store()
        known = w.place_order("5.00")
        assert (await w.start(known)).status_code == 200

        def bc_calls() -> int:
            return sum(w.rt.metrics.value("bcpay_bigcommerce_calls_total", status=s) for s in ("2xx", "4xx", "5xx"))

        before = bc_calls()
        junk = [(await w.client.post("/api/v1/payments", json={
            "store_hash": STORE_HASH, "order_id": 900_000 + i, "cart_id": "00000000-0000-4000-8000-000000000000",
        })).status_code for i in range(6)]
        assert junk == [404, 404, 404, 429, 429, 429]
        assert bc_calls() - before == 3
        limited = await w.client.post("/api/v1/payments", json={
            "store_hash": STORE_HASH, "order_id": 900_100, "cart_id": "00000000-0000-4000-8000-000000000000"})
        assert limited.json()["error"]["code"] == "rate_limited" and int(limited.headers["retry-after"]) >= 1
        assert (await w.start(known)).status_code == 200  # known to bcpay: resumed as before
        fresh = w.place_order("7.00")
        assert (await w.start(fresh)).status_code == 429  # new orders wait while the budget refills


# --- app callbacks: replayed JWTs, unconfirmed uninstalls, unsigned webhooks ---------------------------------

APP_SCOPES = ("store_v2_orders store_v2_content store_v2_information_read_only store_payments_methods_read "
              "store_v2_transactions_read_only")


async def install_app(w: World) -> None:
    """BigCommerce's install of the app: the OAuth code at /bc/auth, then the snippet and hooks."""
    app = w.settings.app
    code = w.bc.issue_oauth_code(STORE_HASH, client_id=app.client_id, client_secret=app.client_secret.get(),
                                 redirect_uri=f"{PUBLIC_URL}/bc/auth", scope=APP_SCOPES)
    answer = await w.client.get("/bc/auth", params={"code": code, "scope": APP_SCOPES,
                                                    "context": f"stores/{STORE_HASH}"})
    assert answer.status_code == 303, answer.text
    await stores.configure_merchant(w.rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=MERCHANT_SECRET)


async def store_row(w: World) -> StoreRecord:
    async with w.rt.db.read() as conn:
        return await q.require_store(conn, STORE_HASH)


@contextlib.asynccontextmanager
async def other_instance(w: World) -> AsyncIterator[httpx.AsyncClient]:
    """A second bcpay process: its own app and Database on the same database and fakes."""
    app = create_app(w.settings, http=w.rt.http, run_worker=False)
    async with app.router.lifespan_context(app):
        assert app.state.runtime.db is not w.rt.db
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as client:
            yield client


async def test_a_used_callback_jwt_is_refused_by_every_callback_on_every_instance(db_url: str, secret_key: str) -> None:
    """A /bc/load link (it sits in the iframe URL and the browser history for a day) replayed to
    /bc/uninstall or /bc/remove_user, on this process or another, is a 401 and wipes nothing; so is a
    callback JWT without a jti. A fresh JWT works once, whichever process sees it first."""
    async with open_world(db_url, secret_key) as w:
        await install_app(w)
        client_id = w.settings.app.client_id
        load = signed_payload_jwt(w.bc, STORE_HASH, client_id, user_id=42, user_email="clerk@example.com")
        assert (await w.client.get("/bc/load", params={"signed_payload_jwt": load})).status_code == 303
        before = await store_row(w)
        async with other_instance(w) as other:
            for client in (w.client, other):
                for path in ("/bc/uninstall", "/bc/remove_user", "/bc/load"):
                    replayed = await client.get(path, params={"signed_payload_jwt": load})
                    assert replayed.status_code == 401 and "already used" in replayed.text, (path, replayed.text)
            no_jti = bc_jwt(secret=w.settings.app.client_secret.get(), aud=client_id, sub=f"stores/{STORE_HASH}",
                            now=int(time.time()), jti=REMOVE)
            for path in ("/bc/uninstall", "/bc/remove_user"):
                refused = await other.get(path, params={"signed_payload_jwt": no_jti})
                assert refused.status_code == 401 and "no jti" in refused.text
            after = await store_row(w)
            assert after.installed and after.access_token_enc == before.access_token_enc
            assert after.celerypay_secret_enc == before.celerypay_secret_enc
            assert await install.find_user(w.rt, after, 42) is not None

            fresh = signed_payload_jwt(w.bc, STORE_HASH, client_id, user_id=42)
            first, second = await asyncio.gather(*(c.get("/bc/remove_user", params={"signed_payload_jwt": fresh})
                                                   for c in (w.client, other)))
            assert sorted((first.status_code, second.status_code)) == [200, 401]
            assert await install.find_user(w.rt, after, 42) is None


async def test_an_uninstall_bigcommerce_does_not_confirm_keeps_the_store_until_it_does(
    db_url: str, secret_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An uninstall callback (a fresh JWT, as signed with a leaked client secret) and a correctly signed
    store/app/uninstalled webhook, while BigCommerce still takes the store's token: the token and the
    CeleryPay secrets stay, the log says why without a secret, and the outbox asks again later. Once
    BigCommerce refuses the token (401), that job forgets the store."""
    async with open_world(db_url, secret_key) as w:
        await install_app(w)
        before = await store_row(w)
        token = w.rt.vault.open(before.access_token_enc or "")
        caplog.set_level(logging.INFO, logger="bcpay")
        jwt_ = signed_payload_jwt(w.bc, STORE_HASH, w.settings.app.client_id)
        answer = await w.client.get("/bc/uninstall", params={"signed_payload_jwt": jwt_})
        assert answer.status_code == 200 and answer.text == "pending"
        [delivery] = await w.bc.fire_webhook(w.client, STORE_HASH, "store/app/uninstalled", {"type": "store", "id": 1})
        assert delivery.status == 200
        kept = await store_row(w)
        assert kept.installed and kept.access_token_enc == before.access_token_enc and kept.has_credentials
        assert "BigCommerce still accepts the store's API token" in caplog.text
        for secret in (token, MERCHANT_SECRET, w.settings.app.client_secret.get()):
            assert secret not in caplog.text
        [job] = await outbox.list_jobs(w.rt.db, state=outbox.QUEUED)
        assert job.kind == "confirm_uninstall" and token not in json.dumps(job.payload)

        w.travel(timedelta(seconds=61))
        assert await w.run_jobs() == 1
        [job] = await outbox.list_jobs(w.rt.db, state=outbox.QUEUED)
        assert job.attempts == 1 and "token_still_valid" in (job.last_error or "")
        assert (await store_row(w)).has_credentials

        revoke_tokens(w.bc, STORE_HASH, client_id=w.settings.app.client_id)  # now BigCommerce uninstalled it
        w.travel(timedelta(seconds=61))
        assert await w.run_jobs() == 1
        gone = await store_row(w)
        assert not gone.installed and gone.access_token_enc is None and gone.celerypay_secret_enc is None
        assert [j.state for j in await outbox.list_jobs(w.rt.db)] == [outbox.DONE]


async def test_an_uninstall_in_bigcommerce_forgets_the_store_at_once(db_url: str, secret_key: str) -> None:
    """End to end through the fake: BigCommerce revokes the token, sends the signed webhook and calls
    /bc/uninstall; bcpay sees the 401 and forgets the store's secrets, once."""
    async with open_world(db_url, secret_key) as w:
        await install_app(w)
        [hook] = await uninstall_app(w.bc, w.client, STORE_HASH, client_id=w.settings.app.client_id,
                                     uninstall_url=f"{PUBLIC_URL}/bc/uninstall")
        assert hook.status == 200
        gone = await store_row(w)
        assert not gone.installed and gone.access_token_enc is None and gone.celerypay_secret_enc is None
        assert gone.webhook_secret_enc is None
        assert await outbox.list_jobs(w.rt.db, state=outbox.QUEUED) == []


async def test_an_app_stores_webhook_without_its_signature_is_refused(db_url: str, secret_key: str) -> None:
    """For an app install BigCommerce signs every callback (Standard Webhooks): the secret header alone,
    copied from a hook listing or a log, is not enough."""
    async with open_world(db_url, secret_key) as w:
        await install_app(w)
        order = w.place_order()
        await w.start(order)
        w.bc.set_order_status(STORE_HASH, order["id"], 5)
        hook_secret = w.rt.vault.open((await store_row(w)).webhook_secret_enc or "")
        body = json.dumps({"scope": "store/order/statusUpdated", "store_id": "1", "producer": f"stores/{STORE_HASH}",
                           "hash": "unsigned-1", "created_at": int(time.time()),
                           "data": {"type": "order", "id": order["id"]}}).encode()
        for scope_body in (body, body.replace(b"store/order/statusUpdated", b"store/app/uninstalled")):
            answer = await w.client.post(f"/webhooks/bigcommerce/{STORE_HASH}", content=scope_body,
                                         headers={WEBHOOK_SECRET_HEADER: hook_secret,
                                                  "Content-Type": "application/json"})
            assert answer.status_code == 401 and "webhook-id" in answer.text
        assert await outbox.list_jobs(w.rt.db, state=None) == []
        assert (await store_row(w)).installed
        [signed] = await w.bc.fire_webhook(w.client, STORE_HASH, "store/order/statusUpdated",
                                           {"type": "order", "id": order["id"]})
        assert signed.status == 200  # the fake signs for the app, as BigCommerce does


# --- CeleryPay notifications: a hint, never the truth ------------------------------------------------------


def forged(w: World, pid: str, event_id: str, **data: Any) -> dict[str, Any]:
    """An event about a real payment, its data made up, to be signed with the store's (leaked) secret."""
    payment = {**w.cp.payments[pid], **data}
    return {"id": event_id, "object": "event", "type": f"payment.{payment['status']}",
            "created_at": "2026-11-25T19:10:02Z", "data": payment}


async def test_a_validly_signed_capture_of_a_pending_payment_moves_nothing(db_url: str, secret_key: str) -> None:
    """CeleryPay says pending; the event says succeeded: no order update, no capture applied."""
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        order = w.place_order("19.99")
        body = (await w.start(order)).json()
        pid = body["cashier_url"].rsplit("/", 1)[1]
        event = forged(w, pid, "evt_forgedcapture01", status="succeeded", paid_amount=1999,
                       paid_at="2026-11-25T19:10:00Z")
        answer = await w.notify(event)
        assert answer.status_code == 200 and answer.json()["outcome"] == "queued"
        await w.run_jobs()
        assert w.order(order["id"])["status_id"] == 7 and w.status_puts(order["id"]) == []
        async with w.rt.db.read() as conn:
            [attempt] = await q.order_attempts(conn, (await store_row(w)).id, order["id"])
            [stored] = await q.find_events(conn, event["id"])
        assert attempt.status == "pending" and attempt.paid_amount is None and attempt.outcome is None
        assert stored["outcome"] == "stale"
        assert {j.kind for j in await outbox.list_jobs(w.rt.db, state=None)} == {"check_event"}


@pytest.mark.parametrize("claimed", [999, 1_000_000])
async def test_a_forged_paid_amount_is_never_applied(db_url: str, secret_key: str, claimed: int) -> None:
    """The shopper paid 19.99; an event claims another amount (a mismatch, or a fortune): CeleryPay's
    figure is the one stored and checked, so the order is paid and nothing is flagged."""
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        order = w.place_order("19.99")
        pid = (await w.start(order)).json()["cashier_url"].rsplit("/", 1)[1]
        await w.cp.pay(pid)
        assert (await w.notify(forged(w, pid, "evt_forgedamount01", paid_amount=claimed))).status_code == 200
        await w.run_jobs()
        async with w.rt.db.read() as conn:
            attempt = await q.find_payment(conn, celerypay_id=pid)
            assert await q.list_anomalies(conn) == []
        assert attempt is not None and attempt.paid_amount == 1999 and attempt.outcome == "applied"
        assert [p["status_id"] for p in w.status_puts(order["id"])] == [11]


async def test_a_forged_failure_does_not_close_the_shoppers_open_payment(db_url: str, secret_key: str) -> None:
    """Applied from an event's data, a made-up failure would end the attempt the shopper is paying: the
    snippet shows "failed" and the shopper may pay twice. CeleryPay says pending, so it stays open, and the
    real capture marks the order paid once."""
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        order = w.place_order("19.99")
        body = (await w.start(order)).json()
        pid = body["cashier_url"].rsplit("/", 1)[1]
        await w.notify(forged(w, pid, "evt_forgedfailure1", status="failed", failure_code="card_declined"))
        await w.run_jobs()
        assert (await w.status(body["token"])).json()["state"] == "awaiting_payment"
        await w.cp.pay(pid)
        await w.cp.deliver_due()
        await w.run_jobs()
        assert [p["status_id"] for p in w.status_puts(order["id"])] == [11]


async def test_celerypay_api_down_while_the_notification_arrives_loses_nothing(db_url: str, secret_key: str) -> None:
    """The notification is answered 2xx once stored, whatever CeleryPay's API does; the read-back retries
    in the outbox and the order is marked paid once the API is back, exactly once."""
    async with open_world(db_url, secret_key, outbox={"backoff_base": 1.0}) as w:
        await w.add_store()
        order = w.place_order("19.99")
        pid = (await w.start(order)).json()["cashier_url"].rsplit("/", 1)[1]
        await w.cp.pay(pid)
        w.cp.fail_next(6, status=503)  # two jobs' worth of tries (max_retries = 2)
        assert await w.cp.deliver_due() == 1
        assert [d.status_code for d in w.cp.deliveries] == [200]
        for _ in range(2):
            await w.run_jobs()
            [job] = await outbox.list_jobs(w.rt.db, state=outbox.QUEUED)
            assert job.kind == "check_event" and "UpstreamUnavailable" in (job.last_error or "")
            assert w.order(order["id"])["status_id"] == 7
            w.travel(timedelta(seconds=(job.run_after - w.rt.now()).total_seconds() + 1))
        await w.run_jobs()
        assert [p["status_id"] for p in w.status_puts(order["id"])] == [11]
        assert await outbox.list_jobs(w.rt.db, state=outbox.QUEUED) == []


# --- one store's traffic never silences another's ------------------------------------------------------------


async def test_the_same_event_id_and_webhook_hash_in_two_stores_are_both_processed(
    db_url: str, secret_key: str
) -> None:
    """A store's merchant (or a leak of its secret) sends an event with another store's event id first, and a
    hook delivery with its hash: the other store's real ones are still processed. Within one store a repeat
    is still a duplicate."""
    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        w.bc.add_store(OTHER_HASH, secure_url=OTHER_URL, name="Other Shop", access_token=OTHER_TOKEN)
        w.cp.add_merchant(OTHER_MERCHANT, OTHER_SECRET)
        await stores.register(w.rt, OTHER_HASH, access_token=OTHER_TOKEN, source="api_account",
                              scopes=" ".join(stores.REQUIRED_SCOPES))
        await stores.configure_merchant(w.rt, OTHER_HASH, merchant_id=OTHER_MERCHANT, api_secret=OTHER_SECRET)
        order = w.place_order("19.99")
        pid = (await w.start(order)).json()["cashier_url"].rsplit("/", 1)[1]
        await w.cp.pay(pid)
        [real] = w.events_of(pid)

        ts = int(time.time())
        squat = json.dumps({**real, "data": {**real["data"], "id": "pay_" + "Z" * 24}}).encode()
        early = await w.client.post(f"/notify/celerypay/{OTHER_HASH}", content=squat, headers={
            "CeleryPay-Merchant": OTHER_MERCHANT, "CeleryPay-Timestamp": str(ts),
            "CeleryPay-Signature": sign_notification(OTHER_SECRET, ts, squat), "Content-Type": "application/json"})
        assert early.status_code == 200 and early.json()["event_id"] == real["id"]
        assert (await w.notify(real)).json()["outcome"] == "queued"
        assert (await w.notify(real)).json()["outcome"] == "duplicate"
        await w.run_jobs()
        assert [p["status_id"] for p in w.status_puts(order["id"])] == [11]

        change = {"scope": "store/order/statusUpdated", "store_id": "1", "hash": "same-hash", "created_at": ts,
                  "data": {"type": "order", "id": order["id"]}}
        async with w.rt.db.read() as conn:
            sealed = {h: (await q.require_store(conn, h)).webhook_secret_enc for h in (OTHER_HASH, STORE_HASH)}
        answers = []
        for store_hash in (OTHER_HASH, STORE_HASH, STORE_HASH):
            hook_body = json.dumps({**change, "producer": f"stores/{store_hash}"}).encode()
            answer = await w.client.post(f"/webhooks/bigcommerce/{store_hash}", content=hook_body, headers={
                WEBHOOK_SECRET_HEADER: w.rt.vault.open(sealed[store_hash] or ""), "Content-Type": "application/json"})
            answers.append(answer.status_code)
        assert answers == [200, 200, 200]
        async with w.rt.db.read() as conn:
            ids = [(await q.require_store(conn, h)).id for h in (OTHER_HASH, STORE_HASH)]
        queued = await outbox.list_jobs(w.rt.db, state=outbox.QUEUED)
        assert sorted((j.kind, j.store_id) for j in queued) == [("order_status_changed", i) for i in sorted(ids)]


# --- metrics, the install callback, tokens in logs ------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "bcpay.example.com"])
async def test_metrics_need_their_token_off_loopback(sqlite_url: str, secret_key: str, host: str) -> None:
    """Started some other way than `serve` (which refuses), a server on a public address without
    server.metrics_token still answers /metrics to nobody."""
    async with open_world(sqlite_url, secret_key, server={"host": host}) as w:
        refused = await w.client.get("/metrics")
        assert refused.status_code == 401 and "bcpay_" not in refused.text
        assert "server.metrics_token" in refused.json()["error"]["message"]
    async with open_world(sqlite_url, secret_key, server={"host": host, "metrics_token": "m" * 32}) as w:
        ok = await w.client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 32})
        assert ok.status_code == 200 and "bcpay_outbox_depth" in ok.text
    for loopback in ("127.0.0.1", "::1", "localhost", "[::1]"):
        async with open_world(sqlite_url, secret_key, server={"host": loopback}) as w:
            assert (await w.client.get("/metrics")).status_code == 200


@pytest.mark.parametrize("params", [
    {}, {"code": "x"}, {"code": "\x00", "context": "stores/abc123"}, {"code": "c" * 5000, "context": "stores/abc123"},
    {"code": "abc", "context": "stores/../../etc"}, {"code": "é☃", "scope": "<script>", "context": "stores/abc123"},
])
async def test_junk_install_callbacks_get_a_clear_page(sqlite_url: str, secret_key: str,
                                                        params: dict[str, str]) -> None:
    async with open_world(sqlite_url, secret_key) as w:
        answer = await w.client.get("/bc/auth", params=params)
        assert 400 <= answer.status_code < 500, answer.text
        assert "OKCloud Pay could not be installed" in answer.text and "Nothing was installed" in answer.text
        assert "<script>" not in answer.text
        async with w.rt.db.read() as conn:
            assert await q.list_stores(conn) == []


async def test_the_install_callback_is_rate_limited_per_client(sqlite_url: str, secret_key: str) -> None:
    """Each /bc/auth makes bcpay call BigCommerce's OAuth endpoint: a flood of junk codes from one client
    is answered 429 with a clear page, without calling BigCommerce; another client still installs."""
    async with open_world(sqlite_url, secret_key, server={"install_attempts_per_minute": 3}) as w:
        params = {"code": "junk", "scope": APP_SCOPES, "context": f"stores/{STORE_HASH}"}
        codes = [(await w.client.get("/bc/auth", params=params)).status_code for _ in range(6)]
        assert codes[:3] == [400] * 3 and codes[3:] == [429] * 3
        limited = await w.client.get("/bc/auth", params=params)
        assert "Too many installation attempts" in limited.text and int(limited.headers["retry-after"]) >= 1
        assert sum(r.path == "/oauth2/token" for r in w.bc.requests) == 0  # the fake records API calls only
        other = httpx.AsyncClient(transport=httpx.ASGITransport(app=w.app, client=("203.0.113.9", 4000)),
                                  base_url=PUBLIC_URL)
        async with other:
            app = w.settings.app
            code = w.bc.issue_oauth_code(STORE_HASH, client_id=app.client_id, client_secret=app.client_secret.get(),
                                         redirect_uri=f"{PUBLIC_URL}/bc/auth", scope=APP_SCOPES)
            installed = await other.get("/bc/auth", params={**params, "code": code})
            assert installed.status_code == 303, installed.text


async def test_no_log_line_carries_a_payment_token(db_url: str, secret_key: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A payment's token opens its pay page: the 5xx branch, warnings and refusals log route templates only."""
    from sqlalchemy import update

    from bcpay.storage.schema import stores as stores_table

    async with open_world(db_url, secret_key) as w:
        await w.add_store()
        body = (await w.start(w.place_order())).json()
        token = body["token"]
        async with w.rt.db.transaction() as conn:  # a secret sealed under another key: a 500 on every look-up
            await conn.execute(update(stores_table).values(celerypay_secret_enc="gAAAAA-not-a-sealed-secret"))
        caplog.set_level(logging.DEBUG)
        w.bc.chaos.error_rate = 1.0  # and BigCommerce down
        answers = [await w.client.get(f"/api/v1/payments/{token}", headers={"Origin": STORE_URL}),
                   await w.client.get(f"/pay/{token}"), await w.client.post(f"/pay/{token}"),
                   await w.client.get(f"/pay/{token}/return?celerypay_payment_id=x&celerypay_status=succeeded"),
                   await w.client.get(f"/pay/{token}x"), await w.client.get(f"/api/v1/payments/{token}x")]
        assert answers[0].status_code == 500, answers[0].text
        ours = [r for r in caplog.records if r.name.startswith("bcpay")]  # httpx's lines are the test client's
        assert any("on GET /api/v1/payments/{token}" in r.getMessage() for r in ours)  # the 5xx branch logged
        for record in ours:
            assert token not in record.getMessage() and token not in (record.exc_text or ""), record.getMessage()
