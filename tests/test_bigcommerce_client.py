"""The BigCommerce client: requests, pagination, retries, error mapping and parsing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from builders import STORE_HASH, order_json

from bcpay.clients.bigcommerce import (
    BigCommerceClient,
    Hook,
    OAuthToken,
    ScriptSpec,
    exchange_oauth_code,
)
from bcpay.config import Secret
from bcpay.errors import (
    InvalidInputError,
    RateLimited,
    UpstreamConflict,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamUnavailable,
)

API = "https://api.bc.test"
BASE = f"{API}/stores/{STORE_HASH}"
TOKEN = "bc-access-token-0123456789abcdef"


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
def seen() -> list[int]:
    return []


@pytest.fixture
def client(http: httpx.AsyncClient, sleeps: Sleeps, seen: list[int]) -> BigCommerceClient:
    return BigCommerceClient(
        http,
        api_url=API,
        store_hash=STORE_HASH,
        access_token=Secret(TOKEN),
        sleep=sleeps,
        jitter=lambda: 1.0,
        on_response=lambda r: seen.append(r.status_code),
    )


def v3(data: Any, page: int = 1, total_pages: int = 1) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "data": data,
            "meta": {
                "pagination": {
                    "total": 0,
                    "count": len(data) if isinstance(data, list) else 1,
                    "per_page": 250,
                    "current_page": page,
                    "total_pages": total_pages,
                }
            },
        },
    )


# --- orders -------------------------------------------------------------------------


@respx.mock
async def test_get_order_sends_auth_headers_and_parses_the_order(client: BigCommerceClient) -> None:
    """X-Auth-Token and Accept are sent; the order parses with the transactional currency."""
    route = respx.get(f"{BASE}/v2/orders/100").mock(
        return_value=httpx.Response(200, json=order_json())
    )
    order = await client.get_order(100)
    request = route.calls.last.request
    assert (
        request.headers["X-Auth-Token"] == TOKEN and request.headers["Accept"] == "application/json"
    )
    assert order.id == 100 and order.status_id == 7 and order.total_inc_tax == Decimal("19.9900")
    assert (order.currency, order.display_currency) == ("USD", "EUR")
    assert order.payment_provider_id is None and order.email == "ada@example.com"
    assert order.date_created == datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    assert order.payment_method == "OKCloud Pay" and order.cart_id is not None


@pytest.mark.parametrize(
    "change",
    [
        {"total_inc_tax": "abc"},
        {"total_inc_tax": "NaN"},
        {"total_inc_tax": 19.99},
        {"id": "100"},
        {"date_created": "yesterday"},
        {"default_currency_code": None},
        {"payment_provider_id": [1]},
    ],
)
@respx.mock
async def test_a_malformed_order_is_a_bad_upstream_response(
    client: BigCommerceClient, change: dict[str, Any]
) -> None:
    """An order off the documented shape raises UpstreamUnavailable(bad_upstream_response)."""
    respx.get(f"{BASE}/v2/orders/100").mock(
        return_value=httpx.Response(200, json=order_json(**change))
    )
    with pytest.raises(UpstreamUnavailable) as info:
        await client.get_order(100)
    assert info.value.code == "bad_upstream_response"


@respx.mock
async def test_numeric_payment_provider_ids_become_strings(client: BigCommerceClient) -> None:
    """payment_provider_id is 'string or number': always a string here."""
    respx.get(f"{BASE}/v2/orders/100").mock(
        return_value=httpx.Response(200, json=order_json(payment_provider_id=12345))
    )
    assert (await client.get_order(100)).payment_provider_id == "12345"


@respx.mock
async def test_update_order_puts_only_the_given_fields(client: BigCommerceClient) -> None:
    """PUT body holds exactly the fields passed, with JSON content type."""
    route = respx.put(f"{BASE}/v2/orders/100").mock(
        return_value=httpx.Response(200, json=order_json(status_id=11, payment_provider_id="pay_x"))
    )
    order = await client.update_order(100, status_id=11, payment_provider_id="pay_x")
    request = route.calls.last.request
    assert json.loads(request.content) == {"status_id": 11, "payment_provider_id": "pay_x"}
    assert request.headers["Content-Type"] == "application/json"
    assert order.status_id == 11


async def test_update_order_without_fields_is_refused(client: BigCommerceClient) -> None:
    """An empty PUT would be a pointless call: refused."""
    with pytest.raises(InvalidInputError):
        await client.update_order(100)


@respx.mock
async def test_iter_orders_follows_pages_until_a_short_page(client: BigCommerceClient) -> None:
    """Full pages continue, a shorter page ends; filters and RFC 2822 dates are sent."""
    route = respx.get(f"{BASE}/v2/orders").mock(
        side_effect=[
            httpx.Response(200, json=[order_json(id=1), order_json(id=2)]),
            httpx.Response(200, json=[order_json(id=3)]),
        ]
    )
    since = datetime(2026, 11, 1, tzinfo=UTC)
    ids = [
        o.id
        async for o in client.iter_orders(
            status_id=7, min_date_created=since, payment_method="OKCloud Pay", page_size=2
        )
    ]
    assert ids == [1, 2, 3] and route.call_count == 2
    params = route.calls[1].request.url.params
    assert params["page"] == "2" and params["limit"] == "2" and params["status_id"] == "7"
    assert params["min_date_created"] == "Sun, 01 Nov 2026 00:00:00 GMT"
    assert params["payment_method"] == "OKCloud Pay" and params["sort"] == "id:asc"


@respx.mock
async def test_iter_orders_stops_at_a_204_empty_page(client: BigCommerceClient) -> None:
    """A 204 with an empty body is the end of the list."""
    route = respx.get(f"{BASE}/v2/orders").mock(
        side_effect=[
            httpx.Response(200, json=[order_json(id=1), order_json(id=2)]),
            httpx.Response(204),
        ]
    )
    assert [o.id async for o in client.iter_orders(page_size=2)] == [1, 2]
    assert route.call_count == 2


async def test_iter_orders_refuses_naive_dates(client: BigCommerceClient) -> None:
    """A naive datetime has no meaning for the API: refused."""
    with pytest.raises(InvalidInputError):
        [o async for o in client.iter_orders(min_date_created=datetime(2026, 1, 1))]


@respx.mock
async def test_statuses_methods_and_store_info_parse(client: BigCommerceClient) -> None:
    """The small v2 reads map to their dataclasses."""
    respx.get(f"{BASE}/v2/order_statuses").mock(
        return_value=httpx.Response(
            200,
            json=[
                {
                    "id": 11,
                    "name": "Awaiting Fulfillment",
                    "system_label": "Awaiting Fulfillment",
                    "custom_label": "Paid",
                    "system_description": "",
                    "order": 1,
                }
            ],
        )
    )
    respx.get(f"{BASE}/v2/payments/methods").mock(
        return_value=httpx.Response(
            200, json=[{"code": "testgateway", "name": "Test Payment Gateway", "test_mode": True}]
        )
    )
    respx.get(f"{BASE}/v2/store").mock(
        return_value=httpx.Response(
            200,
            json={
                "id": "1001",
                "domain": "shop.example",
                "secure_url": "https://shop.example",
                "name": "Shop",
                "currency": "USD",
                "control_panel_base_url": "https://store-abc123xyz.mybigcommerce.com",
            },
        )
    )
    statuses = await client.order_statuses()
    assert [(s.id, s.custom_label) for s in statuses] == [(11, "Paid")]
    methods = await client.payment_methods()
    assert [(m.code, m.test_mode) for m in methods] == [("testgateway", True)]
    info = await client.store_info()
    assert (info.id, info.secure_url, info.currency) == ("1001", "https://shop.example", "USD")


# --- v3 ------------------------------------------------------------------------------


def metafield(id: int, key: str = "payment_id", value: str = "pay_1") -> dict[str, Any]:
    return {
        "id": id,
        "namespace": "bcpay",
        "key": key,
        "value": value,
        "permission_set": "app_only",
        "description": "",
        "resource_type": "order",
        "resource_id": 100,
    }


@respx.mock
async def test_v3_lists_follow_every_page(client: BigCommerceClient) -> None:
    """meta.pagination total_pages drives the page loop."""
    route = respx.get(f"{BASE}/v3/orders/100/metafields").mock(
        side_effect=[
            v3([metafield(1, "a")], page=1, total_pages=2),
            v3([metafield(2, "b")], page=2, total_pages=2),
        ]
    )
    fields = await client.list_order_metafields(100)
    assert [m.key for m in fields] == ["a", "b"]
    assert [c.request.url.params["page"] for c in route.calls] == ["1", "2"]


@respx.mock
async def test_upsert_metafield_creates_when_absent(client: BigCommerceClient) -> None:
    """No (namespace, key) yet: POST with the documented fields."""
    respx.get(f"{BASE}/v3/orders/100/metafields").mock(return_value=v3([]))
    post = respx.post(f"{BASE}/v3/orders/100/metafields").mock(return_value=v3(metafield(9)))
    result = await client.upsert_order_metafield(
        100, namespace="bcpay", key="payment_id", value="pay_1"
    )
    assert result.id == 9
    assert json.loads(post.calls.last.request.content) == {
        "permission_set": "app_only",
        "namespace": "bcpay",
        "key": "payment_id",
        "value": "pay_1",
    }


@respx.mock
async def test_upsert_metafield_updates_when_present(client: BigCommerceClient) -> None:
    """An existing (namespace, key): the create answers 409, then it is PUT by its id."""
    create = respx.post(f"{BASE}/v3/orders/100/metafields").mock(
        return_value=httpx.Response(409, json={"title": "duplicate"})
    )
    listing = respx.get(f"{BASE}/v3/orders/100/metafields").mock(return_value=v3([metafield(5)]))
    put = respx.put(f"{BASE}/v3/orders/100/metafields/5").mock(
        return_value=v3(metafield(5, value="pay_2"))
    )
    result = await client.upsert_order_metafield(
        100, namespace="bcpay", key="payment_id", value="pay_2"
    )
    assert result.value == "pay_2" and put.call_count == 1 and create.call_count == 1
    assert listing.calls.last.request.url.params["namespace"] == "bcpay"


@respx.mock
async def test_upsert_metafield_recovers_from_a_concurrent_create(
    client: BigCommerceClient,
) -> None:
    """409 on create (someone else made it): re-read and PUT."""
    respx.get(f"{BASE}/v3/orders/100/metafields").mock(return_value=v3([metafield(7)]))
    respx.post(f"{BASE}/v3/orders/100/metafields").mock(
        return_value=httpx.Response(409, json={"title": "dup"})
    )
    put = respx.put(f"{BASE}/v3/orders/100/metafields/7").mock(return_value=v3(metafield(7)))
    assert (
        await client.upsert_order_metafield(100, namespace="bcpay", key="payment_id", value="pay_1")
    ).id == 7
    assert put.call_count == 1


SCRIPT = {
    "uuid": "095be615-a8ad-4c33-8e9c-c7612fbf6c9f",
    "name": "bcpay",
    "kind": "src",
    "src": "https://bcpay.example/s.js",
    "visibility": "order_confirmation",
    "location": "footer",
    "enabled": True,
    "channel_id": 1,
    "integrity_hashes": ["sha384-abc"],
}


@respx.mock
async def test_script_calls(client: BigCommerceClient) -> None:
    """Create, update, list and delete scripts on /v3/content/scripts."""
    spec = ScriptSpec(
        name="bcpay", src="https://bcpay.example/s.js", integrity_hashes=("sha384-abc",)
    )
    create = respx.post(f"{BASE}/v3/content/scripts").mock(return_value=v3(SCRIPT))
    update = respx.put(f"{BASE}/v3/content/scripts/{SCRIPT['uuid']}").mock(return_value=v3(SCRIPT))
    respx.get(f"{BASE}/v3/content/scripts").mock(return_value=v3([SCRIPT]))
    delete = respx.delete(f"{BASE}/v3/content/scripts/{SCRIPT['uuid']}").mock(
        return_value=httpx.Response(204)
    )
    assert (await client.create_script(spec)).uuid == SCRIPT["uuid"]
    assert json.loads(create.calls.last.request.content)["integrity_hashes"] == ["sha384-abc"]
    await client.update_script(str(SCRIPT["uuid"]), spec)
    assert update.call_count == 1
    assert [s.name for s in await client.list_scripts()] == ["bcpay"]
    await client.delete_script(str(SCRIPT["uuid"]))
    assert delete.call_count == 1


async def test_a_hostile_script_uuid_is_refused(client: BigCommerceClient) -> None:
    """A uuid that could change the path never reaches the request."""
    with pytest.raises(InvalidInputError):
        await client.delete_script("../../orders/1")


HOOK = {
    "id": 22,
    "client_id": "c",
    "store_hash": STORE_HASH,
    "scope": "store/order/created",
    "destination": "https://bcpay.example/bc/webhook",
    "is_active": True,
    "headers": {"X-Bcpay-Token": "s3cret"},
    "created_at": 1,
    "updated_at": 1,
}


@respx.mock
async def test_hook_calls_and_hook_repr_hides_headers(client: BigCommerceClient) -> None:
    """Create/update/list/delete hooks; header secrets stay out of the repr."""
    create = respx.post(f"{BASE}/v3/hooks").mock(return_value=v3(HOOK))
    update = respx.put(f"{BASE}/v3/hooks/22").mock(return_value=v3(HOOK | {"is_active": False}))
    respx.get(f"{BASE}/v3/hooks").mock(return_value=v3([HOOK]))
    respx.delete(f"{BASE}/v3/hooks/22").mock(return_value=httpx.Response(200, json={"data": HOOK}))
    hook = await client.create_hook(
        scope="store/order/created",
        destination=str(HOOK["destination"]),
        headers={"X-Bcpay-Token": "s3cret"},
    )
    assert (
        isinstance(hook, Hook)
        and hook.headers == {"X-Bcpay-Token": "s3cret"}
        and "s3cret" not in repr(hook)
    )
    assert json.loads(create.calls.last.request.content) == {
        "scope": "store/order/created",
        "destination": HOOK["destination"],
        "is_active": True,
        "headers": {"X-Bcpay-Token": "s3cret"},
    }
    assert (await client.update_hook(22, is_active=False)).is_active is False
    assert json.loads(update.calls.last.request.content) == {"is_active": False}
    assert [h.id for h in await client.list_hooks()] == [22]
    await client.delete_hook(22)
    with pytest.raises(InvalidInputError):
        await client.update_hook(22, client_id="x")


# --- errors and retries --------------------------------------------------------------------


@respx.mock
async def test_429_waits_the_reset_header_then_retries(
    client: BigCommerceClient, sleeps: Sleeps, seen: list[int]
) -> None:
    """X-Rate-Limit-Time-Reset-Ms is honoured (ms -> s); the hook sees every answer."""
    respx.get(f"{BASE}/v2/orders/100").mock(
        side_effect=[
            httpx.Response(429, headers={"X-Rate-Limit-Time-Reset-Ms": "1500"}),
            httpx.Response(200, json=order_json()),
        ]
    )
    assert (await client.get_order(100)).id == 100
    assert sleeps.calls == [1.5] and seen == [429, 200]


@respx.mock
async def test_a_429_without_quota_headers_retries_after_x_retry_after_or_a_second(
    client: BigCommerceClient, sleeps: Sleeps
) -> None:
    """Platform load (no X-Rate-Limit-* headers, reference section 9): retried, never a crash; X-Retry-After,
    which older docs name, is the wait when sent."""
    respx.get(f"{BASE}/v2/orders/100").mock(
        side_effect=[httpx.Response(429), httpx.Response(429, headers={"X-Retry-After": "4"}),
                     httpx.Response(200, json=order_json())]
    )
    assert (await client.get_order(100)).id == 100
    assert sleeps.calls == [1.0, 4.0]


@respx.mock
async def test_post_creations_are_retried_on_429(client: BigCommerceClient, sleeps: Sleeps) -> None:
    """A 429 means nothing was created, so even a POST is retried."""
    route = respx.post(f"{BASE}/v3/hooks").mock(
        side_effect=[httpx.Response(429, headers={"X-Rate-Limit-Time-Reset-Ms": "200"}), v3(HOOK)]
    )
    await client.create_hook(
        scope="store/order/created", destination="https://x.example/h", headers={}
    )
    assert route.call_count == 2 and sleeps.calls == [0.2]


@respx.mock
@pytest.mark.parametrize("status", [502, 503, 504])
async def test_gets_and_puts_retry_gateway_errors(
    client: BigCommerceClient, sleeps: Sleeps, status: int
) -> None:
    """502/503/504 back off and retry for idempotent methods."""
    respx.get(f"{BASE}/v2/orders/100").mock(
        side_effect=[httpx.Response(status), httpx.Response(200, json=order_json())]
    )
    put = respx.put(f"{BASE}/v2/orders/100").mock(
        side_effect=[httpx.Response(status), httpx.Response(200, json=order_json())]
    )
    await client.get_order(100)
    await client.update_order(100, status_id=11)
    assert put.call_count == 2 and sleeps.calls == [0.5, 0.5]


@respx.mock
@pytest.mark.parametrize(
    "failure", [httpx.Response(503), httpx.ConnectError("reset"), httpx.ReadTimeout("slow")]
)
async def test_post_creations_are_not_retried_on_5xx_or_transport_errors(
    client: BigCommerceClient, failure: Any
) -> None:
    """A POST that may have created something is never repeated: one attempt, then an error."""
    route = respx.post(f"{BASE}/v3/content/scripts").mock(side_effect=[failure, v3(SCRIPT)])
    with pytest.raises(UpstreamUnavailable):
        await client.create_script(ScriptSpec(name="bcpay", src="https://x.example/s.js"))
    assert route.call_count == 1


@respx.mock
async def test_500_is_not_retried_even_for_get(client: BigCommerceClient) -> None:
    """Only 502/503/504 are transient for BigCommerce; a 500 is reported at once."""
    route = respx.get(f"{BASE}/v2/orders/100").mock(return_value=httpx.Response(500, text="boom"))
    with pytest.raises(UpstreamUnavailable) as info:
        await client.get_order(100)
    assert route.call_count == 1 and info.value.body == "boom"


@respx.mock
async def test_timeouts_retry_then_give_up_with_the_cause(
    client: BigCommerceClient, sleeps: Sleeps
) -> None:
    """Timeouts retry up to max_retries (5), then UpstreamUnavailable from the timeout."""
    route = respx.get(f"{BASE}/v2/orders/100").mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(UpstreamUnavailable, match="timed out") as info:
        await client.get_order(100)
    assert route.call_count == 6 and isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert sleeps.calls == [0.5, 1.0, 2.0, 4.0, 8.0]


@respx.mock
@pytest.mark.parametrize(
    "status, error",
    [
        (400, UpstreamRejected),
        (401, UpstreamRejected),
        (403, UpstreamRejected),
        (404, UpstreamNotFound),
        (409, UpstreamConflict),
        (422, UpstreamRejected),
    ],
)
async def test_4xx_map_to_rejections_without_retry(
    client: BigCommerceClient, status: int, error: type[Exception]
) -> None:
    """Each 4xx maps to its error once, with status, body and request id, never the token."""
    route = respx.get(f"{BASE}/v2/orders/100").mock(
        return_value=httpx.Response(
            status, json={"status": status, "title": "nope"}, headers={"X-Request-Id": "rid-1"}
        )
    )
    with pytest.raises(error) as info:
        await client.get_order(100)
    err = info.value
    assert route.call_count == 1
    assert (err.status, err.request_id, err.body) == (
        status,
        "rid-1",
        {"status": status, "title": "nope"},
    )  # type: ignore[attr-defined]
    assert TOKEN not in str(err) and TOKEN not in repr(err) and "nope" in str(err)


@respx.mock
async def test_persistent_429_ends_as_rate_limited(
    client: BigCommerceClient, sleeps: Sleeps
) -> None:
    """After max_retries the RateLimited error carries retry_after in seconds."""
    route = respx.get(f"{BASE}/v2/orders/100").mock(
        return_value=httpx.Response(429, headers={"X-Rate-Limit-Time-Reset-Ms": "250"})
    )
    with pytest.raises(RateLimited) as info:
        await client.get_order(100)
    assert info.value.retry_after == 0.25 and route.call_count == 6


@respx.mock
async def test_malformed_json_is_a_bad_upstream_response(client: BigCommerceClient) -> None:
    """A 200 that is not JSON: UpstreamUnavailable(bad_upstream_response)."""
    respx.get(f"{BASE}/v2/orders/100").mock(return_value=httpx.Response(200, content=b"{not json"))
    with pytest.raises(UpstreamUnavailable) as info:
        await client.get_order(100)
    assert info.value.code == "bad_upstream_response"


def test_store_hash_is_validated(http: httpx.AsyncClient) -> None:
    """A store hash outside [a-z0-9]{1,32} (which would change URLs) is refused."""
    for bad in ["", "ABC", "a/b", "x" * 33]:
        with pytest.raises(InvalidInputError):
            BigCommerceClient(http, api_url=API, store_hash=bad, access_token=TOKEN)


def test_client_repr_hides_the_token(http: httpx.AsyncClient) -> None:
    """repr shows the store, never the token."""
    client = BigCommerceClient(http, api_url=API, store_hash=STORE_HASH, access_token=TOKEN)
    assert TOKEN not in repr(client) and STORE_HASH in repr(client)


# --- OAuth -----------------------------------------------------------------------------


@respx.mock
async def test_exchange_oauth_code_posts_exactly_the_documented_fields(
    http: httpx.AsyncClient,
) -> None:
    """JSON body with the seven fields; the answer becomes an OAuthToken with a Secret token."""
    route = respx.post("https://login.bc.test/oauth2/token").mock(
        return_value=httpx.Response(
            200,
            json={
                "access_token": TOKEN,
                "scope": "store_v2_orders",
                "context": f"stores/{STORE_HASH}",
                "account_uuid": "acc-1",
                "user": {"id": 42, "username": "u", "email": "u@example.com"},
                "owner": {"id": 1, "username": "o", "email": "o@example.com"},
            },
        )
    )
    token = await exchange_oauth_code(
        http,
        login_url="https://login.bc.test",
        client_id="cid",
        client_secret="csecret",
        code="c0de",
        scope="store_v2_orders",
        context=f"stores/{STORE_HASH}",
        redirect_uri="https://bcpay.example/auth",
    )
    assert json.loads(route.calls.last.request.content) == {
        "client_id": "cid",
        "client_secret": "csecret",
        "code": "c0de",
        "scope": "store_v2_orders",
        "context": f"stores/{STORE_HASH}",
        "grant_type": "authorization_code",
        "redirect_uri": "https://bcpay.example/auth",
    }
    assert isinstance(token, OAuthToken) and token.access_token.get() == TOKEN
    assert (token.store_hash, token.user_id, token.owner_id, token.account_uuid) == (
        STORE_HASH,
        42,
        1,
        "acc-1",
    )
    assert TOKEN not in repr(token)


@respx.mock
async def test_exchange_oauth_code_rejection_is_not_retried(http: httpx.AsyncClient) -> None:
    """A refused code raises UpstreamRejected after one attempt, without the secret."""
    route = respx.post("https://login.bc.test/oauth2/token").mock(
        return_value=httpx.Response(400, json={"error": "invalid code"})
    )
    with pytest.raises(UpstreamRejected) as info:
        await exchange_oauth_code(
            http,
            login_url="https://login.bc.test",
            client_id="cid",
            client_secret="csecret",
            code="c0de",
            scope="s",
            context=f"stores/{STORE_HASH}",
            redirect_uri="https://bcpay.example/auth",
        )
    assert route.call_count == 1 and "csecret" not in str(info.value)
