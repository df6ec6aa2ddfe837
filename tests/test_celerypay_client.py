"""The CeleryPay client: signing, retries, error mapping and strict parsing."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx
from builders import (
    MERCHANT_ID,
    PAYMENT_ID,
    REFUND_ID,
    SECRET,
    event_json,
    payment_json,
    refund_json,
)

from bcpay.clients.celerypay import CeleryPayClient, Event, Payment, Refund, parse_event
from bcpay.clients.http import backoff, should_retry
from bcpay.config import Secret
from bcpay.errors import (
    InvalidInputError,
    RateLimited,
    UpstreamConflict,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)

BASE = "https://gw.celerypay.test/api"  # a path prefix that must be signed too


class Clock:
    """A wall clock that ticks one second per reading."""

    def __init__(self, start: int = 1_795_000_000) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1
        return float(self.now)


class Sleeps:
    """Records requested sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(http: httpx.AsyncClient, sleeps: Sleeps) -> CeleryPayClient:
    return CeleryPayClient(
        http,
        base_url=BASE,
        merchant_id=MERCHANT_ID,
        api_secret=Secret(SECRET),
        clock=Clock(),
        sleep=sleeps,
        jitter=lambda: 0.5,
    )


def expected_signature(request: httpx.Request) -> str:
    """Recompute the contract signature independently of bcpay.signatures."""
    ts = request.headers["CeleryPay-Timestamp"]
    message = f"{ts}.{request.method}.{request.url.raw_path.decode()}.".encode() + request.content
    return "v1=" + hmac.new(SECRET.encode(), message, hashlib.sha256).hexdigest()


def error(status: int, code: str, **extra: Any) -> httpx.Response:
    return httpx.Response(
        status,
        json={"error": {"code": code, "message": f"{code} happened", "param": None, **extra}},
    )


CREATE = {
    "merchant_order_no": "abc123xyz-100-1",
    "amount": 1999,
    "currency": "USD",
    "notify_url": "https://bcpay.example/notify",
    "return_url": "https://shop.example/return",
    "idempotency_key": "pay-abc123xyz-100-1",
}


# --- signing ----------------------------------------------------------------------


@respx.mock
async def test_create_payment_signs_the_exact_bytes_it_sends(client: CeleryPayClient) -> None:
    """Headers per contract; the signature covers prefix path and the compact JSON body sent."""
    route = respx.post(f"{BASE}/v1/payments").mock(
        return_value=httpx.Response(201, json=payment_json())
    )
    payment = await client.create_payment(
        **CREATE, description="Order #100", metadata={"order_id": "100"}
    )
    assert payment.id == PAYMENT_ID and payment.status == "pending"
    request = route.calls.last.request
    assert request.url.raw_path == b"/api/v1/payments"
    assert (
        request.content
        == json.dumps(
            {k: v for k, v in CREATE.items() if k != "idempotency_key"}
            | {"description": "Order #100", "metadata": {"order_id": "100"}},
            separators=(",", ":"),
        ).encode()
    )
    assert request.headers["CeleryPay-Merchant"] == MERCHANT_ID
    assert request.headers["CeleryPay-Timestamp"] == "1795000001"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "pay-abc123xyz-100-1"
    assert request.headers["CeleryPay-Signature"] == expected_signature(request)


@respx.mock
async def test_find_payment_signs_the_percent_encoded_query(client: CeleryPayClient) -> None:
    """A ':' in merchant_order_no is sent and signed as %3A, prefix included; GET has no body."""
    route = respx.get(f"{BASE}/v1/payments").mock(
        return_value=httpx.Response(
            200, json={"object": "list", "data": [payment_json(merchant_order_no="abc:7")]}
        )
    )
    payment = await client.find_payment("abc:7")
    assert payment is not None and payment.merchant_order_no == "abc:7"
    request = route.calls.last.request
    assert request.url.raw_path == b"/api/v1/payments?merchant_order_no=abc%3A7"
    assert request.content == b"" and "Idempotency-Key" not in request.headers
    ts = request.headers["CeleryPay-Timestamp"]
    by_hand = hmac.new(
        SECRET.encode(),
        f"{ts}.GET./api/v1/payments?merchant_order_no=abc%3A7.".encode(),
        hashlib.sha256,
    ).hexdigest()
    assert request.headers["CeleryPay-Signature"] == "v1=" + by_hand


@respx.mock
async def test_find_payment_returns_none_when_the_list_is_empty(client: CeleryPayClient) -> None:
    """Zero elements means no payment with that number."""
    respx.get(f"{BASE}/v1/payments").mock(
        return_value=httpx.Response(200, json={"object": "list", "data": []})
    )
    assert await client.find_payment("abc123xyz-1-1") is None


@respx.mock
async def test_find_payment_refuses_another_orders_payment(client: CeleryPayClient) -> None:
    """A search answer for a different number is a broken upstream, not our payment."""
    respx.get(f"{BASE}/v1/payments").mock(
        return_value=httpx.Response(
            200, json={"object": "list", "data": [payment_json(merchant_order_no="other")]}
        )
    )
    with pytest.raises(UpstreamUnavailable, match="another order's payment") as info:
        await client.find_payment("abc123xyz-1-1")
    assert info.value.code == "bad_upstream_response"


# --- retries -------------------------------------------------------------------------


@respx.mock
async def test_retries_keep_key_and_body_but_refresh_timestamp_and_signature(
    client: CeleryPayClient, sleeps: Sleeps
) -> None:
    """5xx, timeout, then 201: same key and body, fresh timestamp and signature."""
    route = respx.post(f"{BASE}/v1/payments").mock(
        side_effect=[
            error(503, "unavailable"),
            httpx.ReadTimeout("slow"),
            httpx.Response(201, json=payment_json()),
        ]
    )
    await client.create_payment(**CREATE)
    requests = [c.request for c in route.calls]
    assert len(requests) == 3
    assert {r.headers["Idempotency-Key"] for r in requests} == {"pay-abc123xyz-100-1"}
    assert len({r.content for r in requests}) == 1
    assert len({r.headers["CeleryPay-Timestamp"] for r in requests}) == 3
    assert len({r.headers["CeleryPay-Signature"] for r in requests}) == 3
    assert all(r.headers["CeleryPay-Signature"] == expected_signature(r) for r in requests)
    assert sleeps.calls == [0.25, 0.5]  # full jitter pinned at 0.5: 0.5*2**0*0.5, 0.5*2**1*0.5


@respx.mock
async def test_429_honours_retry_after(client: CeleryPayClient, sleeps: Sleeps) -> None:
    """A 429 waits the Retry-After seconds, then succeeds."""
    limited = httpx.Response(
        429, headers={"Retry-After": "7"}, json={"error": {"code": "rate_limited"}}
    )
    respx.get(f"{BASE}/v1/payments/{PAYMENT_ID}").mock(
        side_effect=[limited, httpx.Response(200, json=payment_json())]
    )
    assert (await client.get_payment(PAYMENT_ID)).id == PAYMENT_ID
    assert sleeps.calls == [7.0]


@respx.mock
async def test_persistent_429_ends_as_rate_limited(client: CeleryPayClient, sleeps: Sleeps) -> None:
    """After max_retries the RateLimited error reaches the caller with retry_after."""
    route = respx.get(f"{BASE}/v1/payments/{PAYMENT_ID}").mock(
        return_value=httpx.Response(
            429, headers={"Retry-After": "2"}, json={"error": {"code": "rate_limited"}}
        )
    )
    with pytest.raises(RateLimited) as info:
        await client.get_payment(PAYMENT_ID)
    assert info.value.retry_after == 2.0 and info.value.code == "rate_limited"
    assert route.call_count == 5 and sleeps.calls == [2.0] * 4


@respx.mock
async def test_persistent_5xx_ends_as_unavailable_after_max_retries(
    client: CeleryPayClient, sleeps: Sleeps
) -> None:
    """Retries stop at max_retries (4): five attempts, then UpstreamUnavailable with status."""
    route = respx.get(f"{BASE}/v1/payments/{PAYMENT_ID}").mock(return_value=error(500, "internal"))
    with pytest.raises(UpstreamUnavailable) as info:
        await client.get_payment(PAYMENT_ID)
    assert route.call_count == 5 and info.value.status == 500 and info.value.service == "celerypay"
    assert sleeps.calls == [0.25, 0.5, 1.0, 2.0]


@respx.mock
async def test_connection_errors_end_as_unavailable_from_the_transport_error(
    client: CeleryPayClient,
) -> None:
    """A connection that never works raises UpstreamUnavailable chained to the httpx error."""
    respx.get(f"{BASE}/v1/payments/{PAYMENT_ID}").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(UpstreamUnavailable, match="could not be reached") as info:
        await client.get_payment(PAYMENT_ID)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@respx.mock
@pytest.mark.parametrize(
    "status, code",
    [(400, "invalid_request"), (401, "invalid_signature"), (422, "currency_not_supported")],
)
async def test_other_4xx_are_never_retried(client: CeleryPayClient, status: int, code: str) -> None:
    """4xx other than 429: one attempt, UpstreamRejected with the upstream code and param."""
    route = respx.post(f"{BASE}/v1/payments").mock(
        return_value=httpx.Response(
            status,
            json={"error": {"code": code, "message": "no", "param": "currency"}},
            headers={"X-Request-Id": "req_1"},
        )
    )
    with pytest.raises(UpstreamRejected) as info:
        await client.create_payment(**CREATE)
    assert route.call_count == 1
    err = info.value
    assert (err.status, err.code, err.param, err.request_id) == (status, code, "currency", "req_1")
    assert SECRET not in str(err) and SECRET not in repr(err)


@respx.mock
async def test_duplicate_order_no_carries_the_existing_payment_id(client: CeleryPayClient) -> None:
    """409 duplicate_order_no -> UpstreamConflict with payment_id from the error object."""
    respx.post(f"{BASE}/v1/payments").mock(
        return_value=error(409, "duplicate_order_no", payment_id=PAYMENT_ID)
    )
    with pytest.raises(UpstreamConflict) as info:
        await client.create_payment(**CREATE)
    assert info.value.payment_id == PAYMENT_ID and info.value.code == "duplicate_order_no"


@respx.mock
async def test_404_is_upstream_not_found(client: CeleryPayClient) -> None:
    """GET of an unknown payment: UpstreamNotFound."""
    respx.get(f"{BASE}/v1/payments/{PAYMENT_ID}").mock(return_value=error(404, "not_found"))
    with pytest.raises(UpstreamNotFound):
        await client.get_payment(PAYMENT_ID)


@respx.mock
async def test_malformed_json_on_success_is_a_bad_upstream_response(
    client: CeleryPayClient,
) -> None:
    """A 200 whose body is not JSON: UpstreamUnavailable(bad_upstream_response), not retried."""
    route = respx.get(f"{BASE}/v1/payments/{PAYMENT_ID}").mock(
        return_value=httpx.Response(200, content=b"<html>oops")
    )
    with pytest.raises(UpstreamUnavailable) as info:
        await client.get_payment(PAYMENT_ID)
    assert info.value.code == "bad_upstream_response" and route.call_count == 1


@respx.mock
async def test_a_payment_breaking_the_contract_is_a_bad_upstream_response(
    client: CeleryPayClient,
) -> None:
    """Valid JSON with an unknown status is refused, not passed on."""
    respx.get(f"{BASE}/v1/payments/{PAYMENT_ID}").mock(
        return_value=httpx.Response(200, json=payment_json(status="authorized"))
    )
    with pytest.raises(UpstreamUnavailable, match="status 'authorized'") as info:
        await client.get_payment(PAYMENT_ID)
    assert info.value.code == "bad_upstream_response"


# --- other calls ------------------------------------------------------------------------


@respx.mock
async def test_cancel_and_refund_calls_use_their_paths_and_keys(client: CeleryPayClient) -> None:
    """cancel, create_refund and get_refund hit the contract paths and parse the answers."""
    cancel = respx.post(f"{BASE}/v1/payments/{PAYMENT_ID}/cancel").mock(
        return_value=httpx.Response(200, json=payment_json(status="cancelled"))
    )
    create = respx.post(f"{BASE}/v1/payments/{PAYMENT_ID}/refunds").mock(
        return_value=httpx.Response(201, json=refund_json())
    )
    get = respx.get(f"{BASE}/v1/payments/{PAYMENT_ID}/refunds/{REFUND_ID}").mock(
        return_value=httpx.Response(200, json=refund_json(status="succeeded"))
    )
    assert (
        await client.cancel_payment(PAYMENT_ID, idempotency_key="cancel-1")
    ).status == "cancelled"
    refund = await client.create_refund(
        PAYMENT_ID,
        amount=500,
        merchant_refund_no="abc-100-r1",
        idempotency_key="refund-1",
        reason="customer asked",
    )
    assert isinstance(refund, Refund) and refund.amount == 500
    assert (await client.get_refund(PAYMENT_ID, REFUND_ID)).status == "succeeded"
    assert cancel.calls.last.request.headers["Idempotency-Key"] == "cancel-1"
    assert json.loads(create.calls.last.request.content) == {
        "amount": 500,
        "merchant_refund_no": "abc-100-r1",
        "reason": "customer asked",
    }
    assert get.calls.last.request.headers["CeleryPay-Signature"] == expected_signature(
        get.calls.last.request
    )


@respx.mock
async def test_ping_with_a_wrong_secret_reports_invalid_signature(client: CeleryPayClient) -> None:
    """ping makes a signed search; a 401 surfaces as UpstreamRejected invalid_signature."""
    respx.get(f"{BASE}/v1/payments").mock(return_value=httpx.Response(401, json={}))
    with pytest.raises(UpstreamRejected) as info:
        await client.ping()
    assert info.value.code == "invalid_signature" and info.value.status == 401


@respx.mock
async def test_ping_succeeds_when_the_search_answers(client: CeleryPayClient) -> None:
    """An empty search result proves the credentials work."""
    route = respx.get(f"{BASE}/v1/payments").mock(
        return_value=httpx.Response(200, json={"object": "list", "data": []})
    )
    await client.ping()
    assert route.calls.last.request.url.params["merchant_order_no"] == "bcpay-ping"


# --- input validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"amount": 0},
        {"amount": -1},
        {"amount": True},
        {"amount": 19.99},
        {"currency": "usd"},
        {"currency": "US"},
        {"idempotency_key": ""},
        {"idempotency_key": "a" * 65},
        {"idempotency_key": "bad key"},
        {"merchant_order_no": "has space"},
        {"description": "x" * 256},
        {"expires_in": 299},
        {"expires_in": 86401},
        {"metadata": {f"k{i}": "v" for i in range(21)}},
        {"metadata": {"k" * 41: "v"}},
        {"metadata": {"k": "v" * 501}},
        {"customer": {"phone": "1"}},
    ],
)
@respx.mock(assert_all_called=False)
async def test_invalid_input_is_refused_before_any_call(
    client: CeleryPayClient, change: dict[str, Any]
) -> None:
    """Out-of-contract input raises InvalidInputError and sends nothing."""
    route = respx.post(f"{BASE}/v1/payments").mock(
        return_value=httpx.Response(201, json=payment_json())
    )
    with pytest.raises(InvalidInputError):
        await client.create_payment(**(CREATE | change))
    assert route.call_count == 0


@pytest.mark.parametrize(
    "payment_id", ["pay_short", "../admin", f"{PAYMENT_ID}/refunds", "PAY_" + "a" * 24]
)
async def test_hostile_payment_ids_never_reach_the_path(
    client: CeleryPayClient, payment_id: str
) -> None:
    """A payment id that could change the path is refused."""
    with pytest.raises(InvalidInputError, match="payment_id"):
        await client.get_payment(payment_id)


def test_the_client_repr_never_shows_the_secret(http: httpx.AsyncClient) -> None:
    """repr names the merchant and URL, never the secret."""
    client = CeleryPayClient(http, base_url=BASE, merchant_id=MERCHANT_ID, api_secret=SECRET)
    assert SECRET not in repr(client) and MERCHANT_ID in repr(client)


# --- models ------------------------------------------------------------------------------


def test_payment_from_json_parses_times_and_keeps_raw() -> None:
    """Timestamps become aware datetimes; the raw dict is kept but not compared."""
    payment = Payment.from_json(
        payment_json(status="succeeded", paid_amount=1999, paid_at="2026-11-25T19:10:00Z")
    )
    assert (
        payment.paid_at is not None and payment.paid_at.isoformat() == "2026-11-25T19:10:00+00:00"
    )
    assert payment.raw["status"] == "succeeded" and "raw" not in repr(payment)
    assert payment == Payment.from_json(
        payment_json(
            status="succeeded", paid_amount=1999, paid_at="2026-11-25T19:10:00Z", extra="x"
        )
    )


@pytest.mark.parametrize(
    "change",
    [
        {"id": "pay_123"},
        {"object": "refund"},
        {"amount": "1999"},
        {"amount": 0},
        {"status": "paid"},
        {"paid_amount": -1},
        {"refunded_amount": None},
        {"metadata": {"a": 1}},
        {"created_at": "yesterday"},
        {"currency": "usd"},
        {"cashier_url": None},
        {"amount": True},
    ],
)
def test_payment_from_json_rejects_contract_violations(change: dict[str, Any]) -> None:
    """Wrong types, prefixes, enums or timestamps raise InvalidInputError."""
    with pytest.raises(InvalidInputError, match="malformed CeleryPay object"):
        Payment.from_json(payment_json(**change))


def test_parse_event_for_a_payment_event() -> None:
    """payment.* events carry the payment as data."""
    event = parse_event(json.dumps(event_json()).encode())
    assert isinstance(event, Event) and event.type == "payment.succeeded"
    assert event.payment.paid_amount == 1999 and event.refund is None


def test_parse_event_for_a_refund_event_takes_the_payment_from_the_refund() -> None:
    """refund.* events carry the refund as data and the payment in data.payment."""
    body = event_json(
        type="refund.succeeded",
        data=refund_json(
            status="succeeded",
            payment=payment_json(
                status="partially_refunded", paid_amount=1999, refunded_amount=500
            ),
        ),
    )
    event = parse_event(json.dumps(body).encode())
    assert event.refund is not None and event.refund.status == "succeeded"
    assert event.payment.status == "partially_refunded" and event.payment.refunded_amount == 500


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b"\xff\xfe",
        json.dumps(event_json(id="evt-1")).encode(),
        json.dumps(event_json(type="payment.created")).encode(),
        json.dumps(event_json(type="refund.succeeded", data=refund_json())).encode(),
        json.dumps(event_json(data=None)).encode(),
    ],
)
def test_parse_event_rejects_malformed_events(body: bytes) -> None:
    """Non-JSON, wrong ids or types, a refund event without its payment: InvalidInputError."""
    with pytest.raises(InvalidInputError):
        parse_event(body)


# --- policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, exc, idempotent, expected",
    [
        (429, None, False, True),
        (503, None, True, True),
        (503, None, False, False),
        (500, None, True, True),
        (400, None, True, False),
        (404, None, True, False),
        (409, None, True, False),
        (None, httpx.ConnectError("x"), True, True),
        (None, httpx.ReadTimeout("x"), False, False),
        (None, ValueError("x"), True, False),
    ],
)
def test_should_retry_policy(
    status: int | None, exc: Exception | None, idempotent: bool, expected: bool
) -> None:
    """429 always; 5xx and transport errors only when repeating is safe; never other 4xx."""
    assert should_retry(status, exc, method_idempotent=idempotent) is expected


def test_backoff_is_full_jitter_capped() -> None:
    """Delay is jitter * min(cap, base * 2**attempt)."""
    assert [backoff(a, jitter=lambda: 1.0) for a in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff(3, jitter=lambda: 0.0) == 0.0
    assert backoff(10_000, jitter=lambda: 0.5) == 15.0
