"""Hostile and malformed input: clear errors, no 5xx, nothing changes."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bcpay.sandbox.runner import Sandbox, SandboxOptions
from tests.world import STORE_HASH, STORE_URL, World, open_world

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
