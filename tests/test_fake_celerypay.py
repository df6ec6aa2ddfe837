"""The fake CeleryPay follows the gateway contract (reference/celerypay-api.md) to the letter.

Requests are signed by a small helper here, and notifications verified with an
independent HMAC, so the fake is checked against the contract text rather than
against itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from bcpay.errors import ConflictError
from bcpay.sandbox.celerypay import FakeCeleryPay, FakeOptions
from bcpay.sandbox.celerypay_notify import RETRY_SCHEDULE

MERCHANT = "mch_A1b2C3d4E5f6G7h8"
SECRET = "sk_test_0123456789abcdefghijklmnopqrstuv"
OTHER_MERCHANT = "mch_Z9y8X7w6V5u4T3s2"
OTHER_SECRET = "sk_test_other_0123456789abcdefghijklmnop"
NOTIFY_URL = "http://127.0.0.1:8765/celerypay/notify"
RETURN_URL = "http://127.0.0.1:8765/checkout/return?order=42&lang=en"
START = 1_795_000_000.0  # 2026-11-18T11:06:40Z
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
PAYMENT_FIELDS = {
    "id",
    "object",
    "merchant_order_no",
    "amount",
    "currency",
    "status",
    "paid_amount",
    "refunded_amount",
    "cashier_url",
    "return_url",
    "notify_url",
    "description",
    "metadata",
    "failure_code",
    "failure_message",
    "created_at",
    "expires_at",
    "paid_at",
    "updated_at",
}


class Clock:
    """A settable clock: tests move time, nothing sleeps."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Receiver:
    """A merchant notification endpoint that records what arrives and answers as told."""

    def __init__(self) -> None:
        self.received: list[tuple[httpx.Headers, bytes]] = []
        self.statuses: list[int] = []  # answered in turn; 200 once exhausted
        self.app = Starlette(routes=[Route("/celerypay/notify", self._notify, methods=["POST"])])

    async def _notify(self, request: Request) -> Response:
        self.received.append((httpx.Headers(request.headers.raw), await request.body()))
        return Response(status_code=self.statuses.pop(0) if self.statuses else 200)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


def sign(
    method: str,
    target: str,
    body: bytes,
    *,
    secret: str = SECRET,
    timestamp: float = START,
    merchant: str = MERCHANT,
) -> dict[str, str]:
    """The contract's request headers, computed independently of the fake."""
    ts = str(int(timestamp))
    message = f"{ts}.{method}.{target}.".encode() + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return {
        "CeleryPay-Merchant": merchant,
        "CeleryPay-Timestamp": ts,
        "CeleryPay-Signature": f"v1={digest}",
    }


class Api:
    """Signs and sends contract requests to the fake."""

    def __init__(self, client: httpx.AsyncClient, clock: Clock, prefix: str = "") -> None:
        self.client, self.clock, self.prefix = client, clock, prefix
        self.keys = 0

    async def send(
        self,
        method: str,
        target: str,
        payload: Any = None,
        *,
        key: str | None = "auto",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        secret: str = SECRET,
        merchant: str = MERCHANT,
    ) -> httpx.Response:
        body = raw if raw is not None else b"" if payload is None else json.dumps(payload).encode()
        sent = sign(
            method,
            self.prefix + target,
            body,
            secret=secret,
            timestamp=self.clock(),
            merchant=merchant,
        )
        if body:
            sent["Content-Type"] = "application/json"
        if method == "POST" and key is not None:
            self.keys += 1
            sent["Idempotency-Key"] = f"key-{self.keys}" if key == "auto" else key
        sent.update(headers or {})
        return await self.client.request(method, self.prefix + target, content=body, headers=sent)

    async def create(self, *, key: str = "auto", **overrides: Any) -> httpx.Response:
        return await self.send("POST", "/v1/payments", payment_body(**overrides), key=key)


def payment_body(**overrides: Any) -> dict[str, Any]:
    """A valid create-payment body; ``field=DROP`` removes a field."""
    body: dict[str, Any] = {
        "merchant_order_no": "bc-1001:1",
        "amount": 1999,
        "currency": "USD",
        "notify_url": NOTIFY_URL,
        "return_url": RETURN_URL,
        "description": "Order #1001",
        "customer": {"email": "ann@example.com", "name": "Ann"},
        "metadata": {"store_hash": "abc123", "order_id": "1001"},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not DROP}


DROP = object()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
def options() -> FakeOptions:
    return FakeOptions()


@pytest.fixture
async def fake(
    clock: Clock, receiver: Receiver, options: FakeOptions
) -> AsyncIterator[FakeCeleryPay]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app)) as http:
        fake = FakeCeleryPay(options, clock=clock, http=http)
        fake.add_merchant(MERCHANT, SECRET)
        fake.add_merchant(OTHER_MERCHANT, OTHER_SECRET)
        yield fake


@pytest.fixture
async def api(fake: FakeCeleryPay, clock: Clock) -> AsyncIterator[Api]:
    transport = httpx.ASGITransport(app=fake.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://celerypay.test") as client:
        yield Api(client, clock)


async def created(api: Api, **overrides: Any) -> dict[str, Any]:
    response = await api.create(**overrides)
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


# --- creating payments -----------------------------------------------------------------------


async def test_create_answers_201_with_every_contract_field(api: Api) -> None:
    """A created payment is pending and carries exactly the contract's fields."""
    response = await api.create()
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    payment = response.json()
    assert set(payment) == PAYMENT_FIELDS
    assert re.fullmatch(r"pay_[A-Za-z0-9]{24}", payment["id"])
    assert payment | {"id": "-", "cashier_url": "-"} == {
        "id": "-",
        "object": "payment",
        "merchant_order_no": "bc-1001:1",
        "amount": 1999,
        "currency": "USD",
        "status": "pending",
        "paid_amount": None,
        "refunded_amount": 0,
        "cashier_url": "-",
        "return_url": RETURN_URL,
        "notify_url": NOTIFY_URL,
        "description": "Order #1001",
        "metadata": {"store_hash": "abc123", "order_id": "1001"},
        "failure_code": None,
        "failure_message": None,
        "created_at": "2026-11-18T11:06:40Z",
        "expires_at": "2026-11-18T11:36:40Z",
        "paid_at": None,
        "updated_at": "2026-11-18T11:06:40Z",
    }
    assert payment["cashier_url"] == f"http://celerypay.test/cashier/{payment['id']}"


async def test_optional_fields_default_to_empty_and_30_minutes(api: Api) -> None:
    """Without description, metadata or expires_in: "", {} and an 1800 s expiry."""
    payment = await created(api, description=DROP, metadata=DROP, customer=DROP)
    assert (payment["description"], payment["metadata"]) == ("", {})
    assert payment["expires_at"] == "2026-11-18T11:36:40Z"


async def test_replayed_post_returns_the_first_response_without_a_second_payment(
    api: Api, fake: FakeCeleryPay, clock: Clock
) -> None:
    """Same Idempotency-Key and body: same status and bytes, and no new payment."""
    first = await api.create(key="order-1001-create")
    clock.advance(3600)
    again = await api.create(key="order-1001-create")
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(fake.payments) == 1


async def test_idempotency_key_expires_after_24_hours(api: Api, clock: Clock) -> None:
    """After 24 h the key is forgotten: the same body then meets duplicate_order_no."""
    first = await api.create(key="k1")
    clock.advance(24 * 3600 + 1)
    late = await api.create(key="k1")
    assert late.status_code == 409
    assert late.json()["error"]["payment_id"] == first.json()["id"]


async def test_same_key_with_another_body_is_idempotency_conflict(api: Api) -> None:
    """A reused key with a different body answers 409 idempotency_conflict."""
    await api.create(key="k1")
    response = await api.create(key="k1", amount=2000)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"


async def test_reused_order_no_is_duplicate_order_no_with_the_payment_id(api: Api) -> None:
    """A second payment with the same merchant_order_no names the first one."""
    first = await created(api)
    response = await api.create()
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["param"], error["payment_id"]) == (
        "duplicate_order_no",
        "merchant_order_no",
        first["id"],
    )


async def test_order_numbers_are_per_merchant(api: Api) -> None:
    """Another merchant may use the same merchant_order_no."""
    await created(api)
    response = await api.send(
        "POST", "/v1/payments", payment_body(), secret=OTHER_SECRET, merchant=OTHER_MERCHANT
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("overrides", "status", "code", "param"),
    [
        ({"merchant_order_no": DROP}, 400, "invalid_request", "merchant_order_no"),
        ({"merchant_order_no": ""}, 400, "invalid_request", "merchant_order_no"),
        ({"merchant_order_no": "a" * 65}, 400, "invalid_request", "merchant_order_no"),
        ({"merchant_order_no": "order#1"}, 400, "invalid_request", "merchant_order_no"),
        ({"amount": DROP}, 400, "invalid_request", "amount"),
        ({"amount": 0}, 400, "invalid_request", "amount"),
        ({"amount": -5}, 400, "invalid_request", "amount"),
        ({"amount": 19.99}, 400, "invalid_request", "amount"),
        ({"amount": True}, 400, "invalid_request", "amount"),
        ({"amount": "1999"}, 400, "invalid_request", "amount"),
        ({"currency": "usd"}, 400, "invalid_request", "currency"),
        ({"currency": "US"}, 400, "invalid_request", "currency"),
        ({"currency": "CLF"}, 422, "currency_not_supported", "currency"),
        ({"currency": "XAU"}, 422, "currency_not_supported", "currency"),
        ({"currency": "XTS"}, 422, "currency_not_supported", "currency"),
        ({"currency": "ABC"}, 422, "currency_not_supported", "currency"),
        ({"notify_url": "http://shop.example/notify"}, 400, "invalid_request", "notify_url"),
        ({"notify_url": "ftp://127.0.0.1/x"}, 400, "invalid_request", "notify_url"),
        ({"notify_url": "https://user:pw@shop.example/n"}, 400, "invalid_request", "notify_url"),
        ({"return_url": "/relative"}, 400, "invalid_request", "return_url"),
        ({"return_url": DROP}, 400, "invalid_request", "return_url"),
        ({"description": "d" * 256}, 400, "invalid_request", "description"),
        ({"expires_in": 299}, 400, "invalid_request", "expires_in"),
        ({"expires_in": 86401}, 400, "invalid_request", "expires_in"),
        (
            {"customer": {"email": "ann@example.com", "phone": "1"}},
            400,
            "invalid_request",
            "customer.phone",
        ),
        ({"customer": {"name": 7}}, 400, "invalid_request", "customer.name"),
        ({"metadata": {f"k{i}": "v" for i in range(21)}}, 400, "invalid_request", "metadata"),
        ({"metadata": {"k" * 41: "v"}}, 400, "invalid_request", "metadata"),
        ({"metadata": {"k": "v" * 501}}, 400, "invalid_request", "metadata"),
        ({"metadata": {"k": 1}}, 400, "invalid_request", "metadata"),
        ({"colour": "red"}, 400, "invalid_request", "colour"),
    ],
)
async def test_invalid_create_bodies_name_the_param(
    api: Api, fake: FakeCeleryPay, overrides: dict[str, Any], status: int, code: str, param: str
) -> None:
    """Each malformed field is refused with its status, code and param, and nothing is stored."""
    response = await api.create(**overrides)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["param"] == param
    assert isinstance(response.json()["error"]["message"], str)
    assert fake.payments == {}


@pytest.mark.parametrize(
    ("currency", "amount", "shown"),
    [("JPY", 500, "¥500 JPY"), ("KWD", 1234, "1.234 KWD"), ("USD", 123456, "$1,234.56 USD")],
)
async def test_currencies_with_exponent_0_2_3_are_accepted(
    api: Api, currency: str, amount: int, shown: str
) -> None:
    """JPY, USD and KWD are supported and shown in major units on the cashier page."""
    payment = await created(api, currency=currency, amount=amount)
    page = await api.client.get(payment["cashier_url"])
    assert shown in page.text


@pytest.mark.parametrize(
    ("expires_in", "expires_at"), [(300, "2026-11-18T11:11:40Z"), (86400, "2026-11-19T11:06:40Z")]
)
async def test_expires_in_bounds_are_accepted(api: Api, expires_in: int, expires_at: str) -> None:
    """300 and 86400 seconds are both allowed and set expires_at."""
    assert (await created(api, expires_in=expires_in))["expires_at"] == expires_at


async def test_outside_sandbox_http_loopback_urls_are_refused(clock: Clock) -> None:
    """With sandbox=False only https callback URLs are accepted."""
    fake = FakeCeleryPay(FakeOptions(sandbox=False), clock=clock)
    fake.add_merchant(MERCHANT, SECRET)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url="http://celerypay.test"
    ) as client:
        api = Api(client, clock)
        refused = await api.create()
        ok = await api.create(
            notify_url="https://shop.example/n", return_url="https://shop.example/r"
        )
    assert refused.json()["error"]["param"] == "notify_url"
    assert ok.status_code == 201


@pytest.mark.parametrize(
    ("raw", "headers", "param"),
    [
        (b"{not json", {}, None),
        (b"[1]", {}, None),
        (b"", {}, None),
        (b'{"amount": NaN}', {}, None),
        (json.dumps(payment_body()).encode(), {"Content-Type": "text/plain"}, "Content-Type"),
        (json.dumps(payment_body()).encode(), {"Idempotency-Key": "has space"}, "Idempotency-Key"),
        (json.dumps(payment_body()).encode(), {"Idempotency-Key": "k" * 65}, "Idempotency-Key"),
    ],
)
async def test_malformed_requests_are_invalid_request(
    api: Api, raw: bytes, headers: dict[str, str], param: str | None
) -> None:
    """Bad JSON, a wrong Content-Type or a malformed Idempotency-Key answer 400."""
    response = await api.send("POST", "/v1/payments", raw=raw, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] | {"message": ""} == {
        "code": "invalid_request",
        "message": "",
        "param": param,
    }


async def test_post_without_idempotency_key_is_refused(api: Api) -> None:
    """Every POST needs an Idempotency-Key."""
    response = await api.send("POST", "/v1/payments", payment_body(), key=None)
    assert (response.status_code, response.json()["error"]["param"]) == (400, "Idempotency-Key")


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        ({"CeleryPay-Signature": "v1=" + "0" * 64}, "invalid_signature"),
        ({"CeleryPay-Signature": ""}, "invalid_signature"),
        ({"CeleryPay-Merchant": "mch_Unknown000000000000"}, "invalid_signature"),
        ({"CeleryPay-Timestamp": str(int(START) - 301)}, "timestamp_out_of_range"),
        ({"CeleryPay-Timestamp": str(int(START) + 301)}, "timestamp_out_of_range"),
        ({"CeleryPay-Timestamp": "soon"}, "timestamp_out_of_range"),
    ],
)
async def test_unauthenticated_requests_are_401(
    api: Api, fake: FakeCeleryPay, tamper: dict[str, str], code: str
) -> None:
    """A wrong signature, an unknown merchant or a stale timestamp is refused before any work."""
    response = await api.send("POST", "/v1/payments", payment_body(), headers=tamper)
    assert (response.status_code, response.json()["error"]["code"]) == (401, code)
    assert fake.payments == {}


async def test_uppercase_hex_signature_is_refused(api: Api) -> None:
    """The signature is lowercase hex; an upper-cased copy of the right one does not pass."""
    body = json.dumps(payment_body()).encode()
    good = sign("POST", "/v1/payments", body)["CeleryPay-Signature"]
    response = await api.send(
        "POST", "/v1/payments", raw=body, headers={"CeleryPay-Signature": "v1=" + good[3:].upper()}
    )
    assert response.status_code == 401


async def test_timestamp_within_300_seconds_is_accepted(api: Api, clock: Clock) -> None:
    """A request signed 300 s ago still passes."""
    body = json.dumps(payment_body()).encode()
    headers = sign("POST", "/v1/payments", body, timestamp=START - 300)
    headers |= {"Content-Type": "application/json", "Idempotency-Key": "k"}
    response = await api.client.post("/v1/payments", content=body, headers=headers)
    assert response.status_code == 201


async def test_signature_covers_the_body(api: Api) -> None:
    """A body changed after signing fails the signature."""
    body = json.dumps(payment_body()).encode()
    headers = sign("POST", "/v1/payments", body) | {
        "Content-Type": "application/json",
        "Idempotency-Key": "k",
    }
    response = await api.client.post(
        "/v1/payments", content=body.replace(b"1999", b"1998"), headers=headers
    )
    assert response.json()["error"]["code"] == "invalid_signature"


async def test_mounted_under_a_prefix_the_prefix_is_signed(
    fake: FakeCeleryPay, clock: Clock
) -> None:
    """Under /celerypay the signed target includes the prefix, and the cashier URL keeps it."""
    outer = Starlette(routes=[Mount("/celerypay", app=fake.app)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=outer), base_url="http://sandbox.test:8080"
    ) as client:
        api = Api(client, clock, prefix="/celerypay")
        payment = await created(api)
        fetched = await api.send("GET", f"/v1/payments/{payment['id']}")
        unprefixed = sign("GET", f"/v1/payments/{payment['id']}", b"")
        wrong = await client.get(f"/celerypay/v1/payments/{payment['id']}", headers=unprefixed)
        page = await client.get(payment["cashier_url"])
    assert fetched.json() == payment
    assert wrong.json()["error"]["code"] == "invalid_signature"
    assert payment["cashier_url"] == f"http://sandbox.test:8080/celerypay/cashier/{payment['id']}"
    assert f'action="/celerypay/cashier/{payment["id"]}/pay"' in page.text


async def test_root_path_stripped_by_a_proxy_is_still_signed(
    fake: FakeCeleryPay, clock: Clock
) -> None:
    """With root_path set and absent from the path, the prefixed signed target still verifies."""
    transport = httpx.ASGITransport(app=fake.app, root_path="/gw")
    async with httpx.AsyncClient(transport=transport, base_url="http://celerypay.test") as client:
        body = json.dumps(payment_body()).encode()
        headers = sign("POST", "/gw/v1/payments", body) | {
            "Content-Type": "application/json",
            "Idempotency-Key": "k",
        }
        response = await client.post("/v1/payments", content=body, headers=headers)
    assert response.status_code == 201, response.text


# --- reading ---------------------------------------------------------------------------------


async def test_find_by_order_no_signs_the_encoded_query(api: Api) -> None:
    """GET ?merchant_order_no=bc-1001%3A1 finds the payment; the %3A form is what is signed."""
    payment = await created(api)
    found = await api.send("GET", "/v1/payments?merchant_order_no=bc-1001%3A1")
    assert found.json() == {"object": "list", "data": [payment]}
    decoded = sign("GET", "/v1/payments?merchant_order_no=bc-1001:1", b"")
    wrong = await api.client.get("/v1/payments?merchant_order_no=bc-1001%3A1", headers=decoded)
    assert wrong.json()["error"]["code"] == "invalid_signature"


async def test_find_unknown_order_no_is_an_empty_list(api: Api) -> None:
    """No match answers 200 with an empty list; another merchant's order is not visible."""
    await created(api)
    missing = await api.send("GET", "/v1/payments?merchant_order_no=nope")
    other = await api.send(
        "GET",
        "/v1/payments?merchant_order_no=bc-1001%3A1",
        secret=OTHER_SECRET,
        merchant=OTHER_MERCHANT,
    )
    no_param = await api.send("GET", "/v1/payments")
    assert missing.json() == other.json() == {"object": "list", "data": []}
    assert (no_param.status_code, no_param.json()["error"]["param"]) == (400, "merchant_order_no")


async def test_get_unknown_or_foreign_payment_is_404(api: Api) -> None:
    """A payment id of another merchant is as unknown as a made-up one."""
    payment = await created(api)
    foreign = await api.send(
        "GET", f"/v1/payments/{payment['id']}", secret=OTHER_SECRET, merchant=OTHER_MERCHANT
    )
    unknown = await api.send("GET", "/v1/payments/pay_000000000000000000000000")
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"]["code"] == "not_found"


# --- cancel and refunds ----------------------------------------------------------------------


async def test_cancel_pending_then_cancel_again_is_invalid_state(api: Api, clock: Clock) -> None:
    """pending -> cancelled once; a second cancel answers 409 invalid_state."""
    payment = await created(api)
    clock.advance(5)
    cancelled = await api.send("POST", f"/v1/payments/{payment['id']}/cancel")
    again = await api.send("POST", f"/v1/payments/{payment['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["updated_at"] == "2026-11-18T11:06:45Z"
    assert (again.status_code, again.json()["error"]["code"]) == (409, "invalid_state")


async def test_paid_payment_cannot_be_cancelled(api: Api, fake: FakeCeleryPay) -> None:
    """Only a pending payment can be cancelled."""
    payment = await created(api)
    await fake.pay(payment["id"])
    response = await api.send("POST", f"/v1/payments/{payment['id']}/cancel", {})
    assert (response.status_code, response.json()["error"]["code"]) == (409, "invalid_state")


async def refund(api: Api, payment_id: str, amount: int, refund_no: str) -> httpx.Response:
    return await api.send(
        "POST",
        f"/v1/payments/{payment_id}/refunds",
        {"amount": amount, "merchant_refund_no": refund_no, "reason": "requested"},
    )


async def test_partial_then_full_refund(api: Api, fake: FakeCeleryPay) -> None:
    """Refunds start pending, then succeed: the payment goes partially_refunded, then refunded."""
    payment = await created(api)
    await fake.pay(payment["id"])
    first = await refund(api, payment["id"], 500, "r-1")
    assert first.status_code == 201
    created_refund = first.json()
    assert set(created_refund) == {
        "id",
        "object",
        "payment_id",
        "merchant_refund_no",
        "amount",
        "currency",
        "status",
        "created_at",
        "updated_at",
    }
    assert re.fullmatch(r"ref_[A-Za-z0-9]{24}", created_refund["id"])
    assert created_refund | {"id": "-"} == {
        "id": "-",
        "object": "refund",
        "payment_id": payment["id"],
        "merchant_refund_no": "r-1",
        "amount": 500,
        "currency": "USD",
        "status": "pending",
        "created_at": "2026-11-18T11:06:40Z",
        "updated_at": "2026-11-18T11:06:40Z",
    }
    settled = await api.send("GET", f"/v1/payments/{payment['id']}/refunds/{created_refund['id']}")
    assert settled.json()["status"] == "succeeded"
    after_first = (await api.send("GET", f"/v1/payments/{payment['id']}")).json()
    assert (after_first["status"], after_first["refunded_amount"]) == ("partially_refunded", 500)

    second = await refund(api, payment["id"], 1499, "r-2")
    assert second.status_code == 201
    final = (await api.send("GET", f"/v1/payments/{payment['id']}")).json()
    assert (final["status"], final["refunded_amount"]) == ("refunded", 1999)
    refund_events = [e for e in fake.events if e["type"].startswith("refund.")]
    assert [e["type"] for e in refund_events] == ["refund.succeeded", "refund.succeeded"]
    assert refund_events[1]["data"]["payment"]["status"] == "refunded"
    assert refund_events[0]["data"]["id"] == created_refund["id"]

    more = await refund(api, payment["id"], 1, "r-3")
    assert (more.status_code, more.json()["error"]["code"]) == (409, "invalid_state")


async def test_over_refund_counts_pending_refunds(clock: Clock) -> None:
    """The refundable amount is paid - refunded - pending; more is 400 invalid_request."""
    fake = FakeCeleryPay(FakeOptions(refund_auto=False), clock=clock)
    fake.add_merchant(MERCHANT, SECRET)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url="http://celerypay.test"
    ) as client:
        api = Api(client, clock)
        payment = await created(api)
        await fake.pay(payment["id"])
        held = await refund(api, payment["id"], 1500, "r-1")
        too_much = await refund(api, payment["id"], 500, "r-2")
        exact = await refund(api, payment["id"], 499, "r-3")
        pending = await api.send("GET", f"/v1/payments/{payment['id']}/refunds/{held.json()['id']}")
    assert (too_much.status_code, too_much.json()["error"]["param"]) == (400, "amount")
    assert exact.status_code == 201
    assert pending.json()["status"] == "pending"
    assert fake.payments[payment["id"]]["refunded_amount"] == 0


async def test_refund_of_an_unpaid_payment_is_invalid_state(api: Api) -> None:
    """A pending payment is not refundable."""
    payment = await created(api)
    response = await refund(api, payment["id"], 100, "r-1")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "invalid_state")


async def test_reused_merchant_refund_no_is_a_conflict(api: Api, fake: FakeCeleryPay) -> None:
    """merchant_refund_no is unique per merchant; reuse answers 409 naming the first refund."""
    payment = await created(api)
    await fake.pay(payment["id"])
    first = await refund(api, payment["id"], 100, "r-1")
    again = await refund(api, payment["id"], 100, "r-1")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_refund_no"
    assert again.json()["error"]["refund_id"] == first.json()["id"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"merchant_refund_no": "r"}, "amount"),
        ({"amount": 1}, "merchant_refund_no"),
        ({"amount": 0, "merchant_refund_no": "r"}, "amount"),
        ({"amount": 1, "merchant_refund_no": "r", "x": 1}, "x"),
    ],
)
async def test_invalid_refund_bodies_name_the_param(
    api: Api, fake: FakeCeleryPay, body: dict[str, Any], param: str
) -> None:
    """Missing or malformed refund fields answer 400 with param."""
    payment = await created(api)
    await fake.pay(payment["id"])
    response = await api.send("POST", f"/v1/payments/{payment['id']}/refunds", body)
    assert (response.status_code, response.json()["error"]["param"]) == (400, param)


async def test_failed_refund_leaves_the_payment_alone(clock: Clock) -> None:
    """settle_refunds(succeed=False) fails the refund and emits refund.failed."""
    fake = FakeCeleryPay(FakeOptions(refund_auto=False), clock=clock)
    fake.add_merchant(MERCHANT, SECRET)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url="http://celerypay.test"
    ) as client:
        api = Api(client, clock)
        payment = await created(api)
        await fake.pay(payment["id"])
        refund_id = (await refund(api, payment["id"], 100, "r-1")).json()["id"]
        settled = await fake.settle_refunds([refund_id], succeed=False)
    assert settled[0]["status"] == "failed"
    assert fake.events[-1]["type"] == "refund.failed"
    assert fake.events[-1]["data"]["payment"]["status"] == "succeeded"
    assert fake.payments[payment["id"]]["refunded_amount"] == 0


# --- control, faults, rate limit -------------------------------------------------------------


async def test_pay_with_another_amount_makes_a_mismatch(api: Api, fake: FakeCeleryPay) -> None:
    """pay(amount=...) sets paid_amount apart from the requested amount."""
    payment = await created(api)
    paid = await fake.pay(payment["id"], amount=1)
    assert (paid["status"], paid["amount"], paid["paid_amount"]) == ("succeeded", 1999, 1)
    assert paid["paid_at"] == paid["updated_at"] == "2026-11-18T11:06:40Z"
    with pytest.raises(ConflictError, match="is succeeded"):
        await fake.decline(payment["id"])


async def test_decline_sets_the_failure(api: Api, fake: FakeCeleryPay) -> None:
    """decline() fails the payment with a code and a human message."""
    payment = await created(api)
    failed = await fake.decline(payment["id"], "insufficient_funds")
    assert (failed["status"], failed["failure_code"]) == ("failed", "insufficient_funds")
    assert failed["failure_message"] == "The card has insufficient funds."


async def test_lost_answer_is_replayed_on_retry(api: Api, fake: FakeCeleryPay) -> None:
    """A 5xx after the work: the retry with the same key gets the 201, and one payment exists."""
    fake.fail_next(1, status=502, after_work=True)
    lost = await api.create(key="k1")
    retried = await api.create(key="k1")
    assert lost.status_code == 502
    assert retried.status_code == 201
    assert list(fake.payments) == [retried.json()["id"]]


async def test_fault_before_work_is_not_remembered(api: Api, fake: FakeCeleryPay) -> None:
    """A 5xx before the work stores nothing; the retry creates the payment."""
    fake.fail_next(1)
    failed = await api.create(key="k1")
    retried = await api.create(key="k1")
    assert (failed.status_code, retried.status_code) == (503, 201)
    assert len(fake.payments) == 1


async def test_rate_limit_answers_429_with_retry_after(api: Api, clock: Clock) -> None:
    """The 101st request within a second is 429 with Retry-After; a second later it passes."""
    answers = [await api.send("GET", "/v1/payments?merchant_order_no=x") for _ in range(101)]
    assert {r.status_code for r in answers[:100]} == {200}
    limited = answers[100]
    assert (limited.status_code, limited.json()["error"]["code"]) == (429, "rate_limited")
    assert limited.headers["Retry-After"] == "1"
    other = await api.send(
        "GET", "/v1/payments?merchant_order_no=x", secret=OTHER_SECRET, merchant=OTHER_MERCHANT
    )
    assert other.status_code == 200
    clock.advance(1)
    assert (await api.send("GET", "/v1/payments?merchant_order_no=x")).status_code == 200


async def test_unknown_endpoint_is_json_404(api: Api) -> None:
    """Paths outside the contract answer the contract's error shape."""
    response = await api.client.get("/v2/nothing")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")


# --- cashier page ----------------------------------------------------------------------------


def redirect_query(response: httpx.Response) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(response.headers["location"])
    return f"{parts.scheme}://{parts.netloc}{parts.path}", parse_qsl(parts.query)


async def test_cashier_page_shows_the_order_and_three_buttons(api: Api) -> None:
    """The hosted page names the order, the amount, OKCloud Pay, and offers Pay/Decline/Abandon."""
    payment = await created(api, merchant_order_no="bc-7:2")
    page = await api.client.get(payment["cashier_url"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "OKCloud Pay" in page.text
    assert '<dd data-testid="merchant-order-no">bc-7:2</dd>' in page.text
    assert "$19.99 USD" in page.text
    for action, label in (("pay", "Pay"), ("decline", "Decline"), ("abandon", "Abandon")):
        assert f'<form method="post" action="/cashier/{payment["id"]}/{action}">' in page.text
        assert f">{label}</button>" in page.text


async def test_cashier_escapes_merchant_text(api: Api) -> None:
    """Description text is HTML-escaped on the page."""
    payment = await created(api, description="<script>alert(1)</script>")
    page = await api.client.get(payment["cashier_url"])
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


@pytest.mark.parametrize(
    ("action", "status"), [("pay", "succeeded"), ("decline", "failed"), ("abandon", "pending")]
)
async def test_cashier_buttons_redirect_303_to_the_return_url(
    api: Api, fake: FakeCeleryPay, action: str, status: str
) -> None:
    """Each button sends the browser back with the id and status appended to the existing query."""
    payment = await created(api, return_url="https://shop.example/return?order=42&note=a%20b#top")
    response = await api.client.post(f"/cashier/{payment['id']}/{action}")
    assert response.status_code == 303
    assert response.headers["location"] == (
        "https://shop.example/return?order=42&note=a%20b"
        f"&celerypay_payment_id={payment['id']}&celerypay_status={status}#top"
    )
    assert fake.payments[payment["id"]]["status"] == status


async def test_return_url_without_a_query_gets_one(api: Api) -> None:
    """A bare return_url gets ?celerypay_payment_id=...&celerypay_status=..."""
    payment = await created(api, return_url="https://shop.example/return")
    response = await api.client.post(f"/cashier/{payment['id']}/pay")
    assert redirect_query(response) == (
        "https://shop.example/return",
        [("celerypay_payment_id", payment["id"]), ("celerypay_status", "succeeded")],
    )


async def test_paying_a_cancelled_payment_shows_a_clear_page(api: Api, fake: FakeCeleryPay) -> None:
    """A cancelled payment cannot be paid: 409 page, no buttons, payment unchanged."""
    payment = await created(api)
    await api.send("POST", f"/v1/payments/{payment['id']}/cancel")
    response = await api.client.post(f"/cashier/{payment['id']}/pay")
    assert response.status_code == 409
    assert "This payment was cancelled by the merchant." in response.text
    assert ">Pay</button>" not in response.text
    assert fake.payments[payment["id"]]["status"] == "cancelled"


async def test_unknown_payment_cashier_page_is_404(api: Api) -> None:
    """A made-up payment id gets a 404 page."""
    response = await api.client.get("/cashier/pay_000000000000000000000000")
    assert response.status_code == 404
    assert "Payment not found" in response.text


# --- expiry ----------------------------------------------------------------------------------


async def test_expire_due_expires_only_payments_past_their_time(
    api: Api, fake: FakeCeleryPay, clock: Clock
) -> None:
    """expire_due moves pending payments past expires_at to expired and emits payment.expired."""
    short = await created(api, merchant_order_no="o-1", expires_in=300)
    long = await created(api, merchant_order_no="o-2", expires_in=3600)
    clock.advance(299)
    assert await fake.expire_due() == []
    clock.advance(1)
    assert await fake.expire_due() == [short["id"]]
    assert fake.payments[short["id"]]["status"] == "expired"
    assert fake.payments[long["id"]]["status"] == "pending"
    assert [e["type"] for e in fake.events] == ["payment.expired"]
    page = await api.client.post(f"/cashier/{short['id']}/pay")
    assert page.status_code == 409
    assert "This payment has expired." in page.text


async def test_cashier_expires_an_overdue_payment_on_sight(
    api: Api, fake: FakeCeleryPay, clock: Clock
) -> None:
    """Opening the page after expires_at expires the payment instead of offering Pay."""
    payment = await created(api, expires_in=300)
    clock.advance(301)
    page = await api.client.get(payment["cashier_url"])
    assert "Payment expired" in page.text
    assert ">Pay</button>" not in page.text
    assert fake.payments[payment["id"]]["status"] == "expired"


async def test_time_scale_shortens_expiry(clock: Clock) -> None:
    """With time_scale 60 a 30-minute payment expires after 30 s, and expires_at says so."""
    fake = FakeCeleryPay(FakeOptions(time_scale=60), clock=clock)
    fake.add_merchant(MERCHANT, SECRET)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake.app), base_url="http://celerypay.test"
    ) as client:
        payment = await created(Api(client, clock))
    assert payment["expires_at"] == "2026-11-18T11:07:10Z"
    clock.advance(30)
    assert await fake.expire_due() == [payment["id"]]


# --- notifications ---------------------------------------------------------------------------


def verify(headers: httpx.Headers, body: bytes, secret: str) -> bool:
    """The receiver's side of the contract, written independently: any v1 entry may match."""
    expected = hmac.new(
        secret.encode(), f"{headers['CeleryPay-Timestamp']}.".encode() + body, hashlib.sha256
    ).hexdigest()
    entries = [e.strip() for e in headers["CeleryPay-Signature"].split(",")]
    return any(hmac.compare_digest(e, f"v1={expected}") for e in entries)


async def test_notification_is_signed_and_shaped_per_contract(
    api: Api, fake: FakeCeleryPay, receiver: Receiver, clock: Clock
) -> None:
    """payment.succeeded is POSTed to notify_url, signed over `{ts}.{body}`, the payment as data."""
    payment = await created(api)
    clock.advance(10)
    await fake.pay(payment["id"])
    assert receiver.received == []  # nothing goes out before deliver_due
    clock.advance(2)
    assert await fake.deliver_due() == 1
    [(headers, body)] = receiver.received
    assert headers["CeleryPay-Merchant"] == MERCHANT
    assert headers["CeleryPay-Timestamp"] == str(int(START) + 12)
    assert headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"v1=[0-9a-f]{64}", headers["CeleryPay-Signature"])
    assert verify(headers, body, SECRET)
    assert not verify(headers, body + b" ", SECRET)
    event = json.loads(body)
    assert set(event) == {"id", "object", "type", "created_at", "data"}
    assert re.fullmatch(r"evt_[A-Za-z0-9]{24}", event["id"])
    assert (event["object"], event["type"], event["created_at"]) == (
        "event",
        "payment.succeeded",
        "2026-11-18T11:06:50Z",
    )
    assert event["data"] == fake.payments[payment["id"]]
    assert fake.deliveries[0].ok and fake.deliveries[0].attempt == 1


async def test_every_state_change_emits_its_event(api: Api, fake: FakeCeleryPay) -> None:
    """Cancel, decline and pay each emit the matching event type once."""
    a = await created(api, merchant_order_no="a")
    b = await created(api, merchant_order_no="b")
    c = await created(api, merchant_order_no="c")
    await api.send("POST", f"/v1/payments/{a['id']}/cancel")
    await fake.decline(b["id"])
    await fake.pay(c["id"])
    assert [(e["type"], e["data"]["id"]) for e in fake.events] == [
        ("payment.cancelled", a["id"]),
        ("payment.failed", b["id"]),
        ("payment.succeeded", c["id"]),
    ]


@pytest.mark.parametrize("options", [FakeOptions(time_scale=60)])
async def test_failed_deliveries_follow_the_retry_schedule_then_stop(
    api: Api, fake: FakeCeleryPay, receiver: Receiver, clock: Clock
) -> None:
    """Non-2xx is retried after 15 s, 1 min, ... 24 h (over time_scale): nine retries, then stop."""
    receiver.statuses = [500] * 10
    payment = await created(api)
    await fake.pay(payment["id"])
    await fake.deliver_due()
    for wait in RETRY_SCHEDULE:
        clock.advance(wait / 60 - 0.01)
        assert await fake.deliver_due() == 0
        clock.advance(0.01)
        assert await fake.deliver_due() == 1
    clock.advance(10 * 86400)
    assert await fake.deliver_due() == 0
    times = [d.at for d in fake.deliveries]
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(times)]
    assert gaps == [round(w / 60, 6) for w in (15, 60, 300, 900, 3600, 10800, 21600, 43200, 86400)]
    assert [d.attempt for d in fake.deliveries] == list(range(1, 11))
    assert {d.status_code for d in fake.deliveries} == {500}
    assert fake.outbox.abandoned == [fake.events[0]["id"]]
    assert len(receiver.received) == 10


async def test_delivery_succeeds_on_a_retry(
    api: Api, fake: FakeCeleryPay, receiver: Receiver, clock: Clock
) -> None:
    """After a 503 and a 302, the third attempt's 204 ends the retries."""
    receiver.statuses = [503, 302, 204]
    await fake.pay((await created(api))["id"])
    await fake.deliver_due()
    clock.advance(15)
    await fake.deliver_due()
    clock.advance(60)
    await fake.deliver_due()
    clock.advance(100_000)
    assert await fake.deliver_due() == 0
    assert [d.status_code for d in fake.deliveries] == [503, 302, 204]
    assert fake.outbox.pending == []


async def test_unreachable_receiver_is_a_failed_delivery(api: Api, clock: Clock) -> None:
    """A transport error is recorded and retried like a non-2xx answer."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        fake = FakeCeleryPay(clock=clock, http=http)
        fake.add_merchant(MERCHANT, SECRET)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=fake.app), base_url="http://celerypay.test"
        ) as client:
            payment = await created(Api(client, clock))
        await fake.pay(payment["id"])
        await fake.deliver_due()
    [attempt] = fake.deliveries
    assert (attempt.status_code, attempt.ok) == (None, False)
    assert attempt.error == "ConnectError: connection refused"
    assert fake.outbox.pending[0]["attempt"] == 2
    assert fake.outbox.pending[0]["due"] == START + 15


@pytest.mark.parametrize("options", [FakeOptions(notify_delay=5)])
async def test_notify_delay_holds_the_first_attempt(
    api: Api, fake: FakeCeleryPay, receiver: Receiver, clock: Clock
) -> None:
    """Nothing is delivered before notify_delay has passed."""
    await fake.pay((await created(api))["id"])
    clock.advance(4.9)
    assert await fake.deliver_due() == 0
    clock.advance(0.1)
    assert await fake.deliver_due() == 1
    assert len(receiver.received) == 1


@pytest.mark.parametrize("options", [FakeOptions(duplicates=2)])
async def test_duplicates_deliver_each_event_again(
    api: Api, fake: FakeCeleryPay, receiver: Receiver
) -> None:
    """duplicates=2 sends every event three times with the same id and body."""
    await fake.pay((await created(api))["id"])
    assert await fake.deliver_due() == 3
    bodies = [body for _, body in receiver.received]
    assert len(bodies) == 3 and len(set(bodies)) == 1
    assert all(verify(h, b, SECRET) for h, b in receiver.received)


@pytest.mark.parametrize("options", [FakeOptions(reorder=True, seed=7)])
async def test_reorder_delivers_a_payments_events_out_of_order(
    api: Api, fake: FakeCeleryPay, receiver: Receiver
) -> None:
    """reorder holds a payment's due events and delivers them all, not in emission order."""
    payment = await created(api)
    await fake.pay(payment["id"])
    for n in range(3):
        await refund(api, payment["id"], 100, f"r-{n}")
    emitted = [e["id"] for e in fake.events]
    assert len(emitted) == 4
    assert await fake.deliver_due() == 4
    arrived = [e["id"] for e in receiver.events()]
    assert sorted(arrived) == sorted(emitted)
    assert arrived != emitted


async def test_reorder_is_deterministic_for_a_seed(clock: Clock) -> None:
    """Two fakes with the same seed deliver the same permutation."""
    orders = []
    for _ in range(2):
        receiver = Receiver()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app)) as http:
            fake = FakeCeleryPay(FakeOptions(reorder=True, seed=3), clock=clock, http=http)
            fake.add_merchant(MERCHANT, SECRET)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=fake.app), base_url="http://celerypay.test"
            ) as client:
                api = Api(client, clock)
                payment = await created(api)
                await fake.pay(payment["id"])
                for n in range(4):
                    await refund(api, payment["id"], 10, f"r-{n}")
            await fake.deliver_due()
        emitted = {e["id"]: i for i, e in enumerate(fake.events)}
        orders.append([emitted[e["id"]] for e in receiver.events()])
    assert orders[0] == orders[1]
    assert orders[0] != sorted(orders[0])


async def test_rotation_signs_with_both_secrets_new_first_for_24_hours(
    api: Api, fake: FakeCeleryPay, receiver: Receiver, clock: Clock
) -> None:
    """During a rotation two v1 entries sign the event: the new secret's, then the old one's."""
    new_secret = "sk_test_rotated_0123456789abcdefghijklm"
    fake.add_merchant(MERCHANT, new_secret, old_secret=SECRET)
    payment = await api.send("POST", "/v1/payments", payment_body(), secret=new_secret)
    await fake.pay(payment.json()["id"])
    await fake.deliver_due()
    headers, body = receiver.received[0]
    ts = headers["CeleryPay-Timestamp"].encode()
    entries = headers["CeleryPay-Signature"].split(",")
    assert entries == [
        "v1=" + hmac.new(new_secret.encode(), ts + b"." + body, hashlib.sha256).hexdigest(),
        "v1=" + hmac.new(SECRET.encode(), ts + b"." + body, hashlib.sha256).hexdigest(),
    ]
    old_signed = await api.send("GET", f"/v1/payments/{payment.json()['id']}")
    assert old_signed.status_code == 401  # requests are signed with the current secret only

    clock.advance(24 * 3600)
    await api.send(
        "POST",
        f"/v1/payments/{payment.json()['id']}/refunds",
        {"amount": 1, "merchant_refund_no": "r-1"},
        secret=new_secret,
    )
    await fake.deliver_due()
    headers, body = receiver.received[-1]
    assert headers["CeleryPay-Signature"].count("v1=") == 1
    assert verify(headers, body, new_secret) and not verify(headers, body, SECRET)


# --- admin API -------------------------------------------------------------------------------


async def test_admin_api_drives_the_fake_across_processes(
    api: Api, fake: FakeCeleryPay, receiver: Receiver, clock: Clock
) -> None:
    """/_fake lets another process add a merchant, pay, expire, deliver and read the log."""
    client = api.client
    added = await client.post(
        "/_fake/merchants", json={"merchant_id": "mch_Adm1n0000000000000", "api_secret": "x" * 32}
    )
    assert added.status_code == 201
    assert "mch_Adm1n0000000000000" in fake.merchants
    payment = await created(api)
    paid = await client.post(f"/_fake/payments/{payment['id']}/pay", json={"amount": 999})
    assert (paid.json()["status"], paid.json()["paid_amount"]) == ("succeeded", 999)
    again = await client.post(f"/_fake/payments/{payment['id']}/decline")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "invalid_state")
    missing = await client.post("/_fake/payments/pay_nope/abandon")
    assert missing.status_code == 404
    assert (await client.post("/_fake/deliver")).json() == {"attempts": 1}
    events = (await client.get("/_fake/events")).json()["data"]
    deliveries = (await client.get("/_fake/deliveries")).json()["data"]
    assert [e["type"] for e in events] == ["payment.succeeded"]
    assert deliveries[0] | {"at": 0} == {
        "url": NOTIFY_URL,
        "event_id": events[0]["id"],
        "event_type": "payment.succeeded",
        "payment_id": payment["id"],
        "attempt": 1,
        "status_code": 200,
        "error": None,
        "at": 0,
        "ok": True,
    }
    other = await created(api, merchant_order_no="o-2", expires_in=300)
    clock.advance(300)
    assert (await client.post("/_fake/expire")).json() == {"expired": [other["id"]]}
    bad = await client.post("/_fake/merchants", json={"merchant_id": "bad", "api_secret": "x" * 32})
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_request")


async def test_add_merchant_refuses_malformed_credentials(fake: FakeCeleryPay) -> None:
    """merchant_id and api_secret follow the contract's shapes."""
    from bcpay.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="merchant_id must be"):
        fake.add_merchant("mch_short", SECRET)
    with pytest.raises(InvalidInputError, match="at least 32 printable ASCII"):
        fake.add_merchant(MERCHANT, "short")


async def test_run_background_expires_and_delivers_until_cancelled(
    api: Api, fake: FakeCeleryPay, receiver: Receiver, clock: Clock
) -> None:
    """Each loop turn expires overdue payments and delivers due events; cancelling stops it."""
    payment = await created(api, expires_in=300)
    clock.advance(300)
    naps: list[float] = []

    async def sleep(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await fake.run_background(interval=0.25, sleep=sleep)
    assert naps == [0.25, 0.25]
    assert fake.payments[payment["id"]]["status"] == "expired"
    assert [e["type"] for e in receiver.events()] == ["payment.expired"]
