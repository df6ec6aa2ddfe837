"""The fake BigCommerce REST API behaves like the real one where bcpay depends on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bcpay.sandbox.bc_state import FakeBigCommerce
from bcpay.sandbox.bigcommerce import Chaos, Quota, create_bigcommerce_api

STORE = "abc123"
TOKEN = "tok-full"
BASE = f"/stores/{STORE}"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
RATE_LIMIT_HEADERS = ("X-Rate-Limit-Time-Window-Ms", "X-Rate-Limit-Time-Reset-Ms", "X-Rate-Limit-Requests-Quota",
                      "X-Rate-Limit-Requests-Left")


class Clock:
    """A settable wall clock for the state."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Ticker:
    """A settable monotonic clock (seconds) for the quota window."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> FakeBigCommerce:
    fake = FakeBigCommerce(clock=clock)
    fake.add_store(STORE, secure_url="http://127.0.0.1:8081", access_token=TOKEN)
    return fake


@pytest.fixture
async def api(state: FakeBigCommerce) -> AsyncIterator[httpx.AsyncClient]:
    app = create_bigcommerce_api(state)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="https://api.bigcommerce.test",
                                 headers={"X-Auth-Token": TOKEN}) as client:
        yield client


# --- auth and scopes ---------------------------------------------------------------


async def test_missing_token_is_401_in_bigcommerce_shape(api: httpx.AsyncClient,
                                                         state: FakeBigCommerce) -> None:
    """No X-Auth-Token answers 401 with status/title/type."""
    order = state.create_order(STORE, total="10")
    response = await api.get(f"{BASE}/v2/orders/{order['id']}", headers={"X-Auth-Token": ""})
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == 401 and "X-Auth-Token" in body["title"] and body["type"]


async def test_unknown_token_and_unknown_store_are_401(api: httpx.AsyncClient) -> None:
    """A token the store does not know, or a store that does not exist, is 401."""
    assert (await api.get(f"{BASE}/v2/orders", headers={"X-Auth-Token": "nope"})).status_code == 401
    assert (await api.get("/stores/zzz999/v2/orders")).status_code == 401


async def test_token_without_scope_is_403(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """A read-only orders token can GET but not PUT; a content token cannot read orders."""
    order = state.create_order(STORE, total="10")
    state.add_token(STORE, "ro", client_id="c2", scopes={"store_v2_orders_read_only"})
    state.add_token(STORE, "content", client_id="c3", scopes={"store_v2_content"})
    url = f"{BASE}/v2/orders/{order['id']}"
    assert (await api.get(url, headers={"X-Auth-Token": "ro"})).status_code == 200
    put = await api.put(url, json={"staff_notes": "x"}, headers={"X-Auth-Token": "ro"})
    assert put.status_code == 403 and put.json()["status"] == 403
    assert (await api.get(url, headers={"X-Auth-Token": "content"})).status_code == 403
    assert state.put_log == []


# --- v2 orders ------------------------------------------------------------------------


async def test_get_order_returns_the_full_v2_shape(api: httpx.AsyncClient,
                                                   state: FakeBigCommerce) -> None:
    """Totals are 4-place strings, dates RFC-2822, billing address carries the email."""
    order = state.create_order(STORE, total=Decimal(225), currency="EUR", email="a@b.test",
                               cart_id="cart-1", display_currency="USD")
    response = await api.get(f"{BASE}/v2/orders/{order['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == order["id"] and body["status_id"] == 7
    assert body["status"] == "Awaiting Payment"
    assert body["total_inc_tax"] == body["total_ex_tax"] == "225.0000"
    assert body["default_currency_code"] == "EUR" and body["currency_code"] == "USD"
    assert body["payment_method"] == "OKCloud Pay" and body["payment_status"] == ""
    assert body["cart_id"] == "cart-1" and body["billing_address"]["email"] == "a@b.test"
    assert body["date_created"] == "Wed, 01 May 2024 12:00:00 +0000"
    assert body["channel_id"] == 1 and body["payment_provider_id"] == ""


async def test_get_absent_order_is_v2_404(api: httpx.AsyncClient) -> None:
    """A missing order answers 404 with the v2 list-of-errors body."""
    response = await api.get(f"{BASE}/v2/orders/999999")
    assert response.status_code == 404
    assert response.json() == [{"status": 404, "message": "The requested resource was not found."}]


async def test_put_order_updates_writable_fields_and_logs(api: httpx.AsyncClient,
                                                         state: FakeBigCommerce,
                                                         clock: Clock) -> None:
    """status_id changes the status name and date_modified; every PUT is logged once."""
    order = state.create_order(STORE, total="10")
    clock.now = T0 + timedelta(minutes=5)
    body = {"status_id": 11, "payment_provider_id": "pay_123", "staff_notes": "paid"}
    response = await api.put(f"{BASE}/v2/orders/{order['id']}", json=body)
    assert response.status_code == 200
    updated = response.json()
    assert updated["status_id"] == 11 and updated["status"] == "Awaiting Fulfillment"
    assert updated["payment_provider_id"] == "pay_123" and updated["staff_notes"] == "paid"
    assert updated["date_modified"] == "Wed, 01 May 2024 12:05:00 +0000"
    assert updated["date_created"] == order["date_created"]
    assert state.put_log == [(STORE, order["id"], body)]


@pytest.mark.parametrize("field", ["status", "payment_status", "cart_id", "currency_code",
                                   "date_modified", "id"])
async def test_put_order_refuses_read_only_fields(api: httpx.AsyncClient, state: FakeBigCommerce,
                                                  field: str) -> None:
    """Read-only fields answer 400 naming the field; the order is untouched and nothing logged."""
    order = state.create_order(STORE, total="10")
    response = await api.put(f"{BASE}/v2/orders/{order['id']}", json={field: "x", "status_id": 11})
    assert response.status_code == 400
    assert field in response.json()[0]["message"]
    assert state.order(STORE, order["id"])["status_id"] == 7
    assert state.put_log == []


async def test_put_order_refuses_unknown_status(api: httpx.AsyncClient,
                                                state: FakeBigCommerce) -> None:
    """status_id outside 0-14 is refused."""
    order = state.create_order(STORE, total="10")
    response = await api.put(f"{BASE}/v2/orders/{order['id']}", json={"status_id": 15})
    assert response.status_code == 400


def _seed_orders(state: FakeBigCommerce) -> list[dict[str, Any]]:
    return [
        state.create_order(STORE, total="10", created=T0, cart_id="c-a", email="x@y.test"),
        state.create_order(STORE, total="20", created=T0 + timedelta(days=1), status_id=11,
                           payment_method="Test Payment Gateway", cart_id="c-b"),
        state.create_order(STORE, total="30", created=T0 + timedelta(days=2), cart_id="c-c"),
    ]


async def _ids(api: httpx.AsyncClient, **params: Any) -> list[int]:
    response = await api.get(f"{BASE}/v2/orders", params=params)
    if response.status_code == 204:
        assert response.content == b""
        return []
    assert response.status_code == 200, response.text
    return [o["id"] for o in response.json()]


async def test_list_orders_filters(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """Every documented filter selects the right orders, id ascending by default."""
    a, b, c = (o["id"] for o in _seed_orders(state))
    assert await _ids(api) == [a, b, c]
    assert await _ids(api, min_id=b) == [b, c]
    assert await _ids(api, max_id=b) == [a, b]
    assert await _ids(api, status_id=11) == [b]
    assert await _ids(api, cart_id="c-c") == [c]
    assert await _ids(api, payment_method="OKCloud Pay") == [a, c]
    assert await _ids(api, email="X@Y.test") == [a]
    assert await _ids(api, min_total="15", max_total="25") == [b]
    assert await _ids(api, min_date_created="Thu, 02 May 2024 00:00:00 +0000") == [b, c]
    assert await _ids(api, max_date_created="2024-05-02T12:00:00+00:00") == [a, b]
    assert await _ids(api, min_date_created="2024-05-02T08:00:01.000-04:00") == [c]
    assert await _ids(api, sort="id:desc") == [c, b, a]
    assert await _ids(api, sort="date_created:desc", limit=1) == [c]


async def test_list_orders_date_modified_filters(api: httpx.AsyncClient, state: FakeBigCommerce,
                                                 clock: Clock) -> None:
    """min/max_date_modified follow the last PUT."""
    a, b, _ = (o["id"] for o in _seed_orders(state))
    clock.now = T0 + timedelta(days=10)
    assert (await api.put(f"{BASE}/v2/orders/{a}", json={"staff_notes": "n"})).status_code == 200
    assert await _ids(api, min_date_modified="2024-05-08T00:00:00Z") == [a]
    assert b in await _ids(api, max_date_modified="2024-05-08T00:00:00Z")


async def test_list_orders_pages_and_answers_204_past_the_end(api: httpx.AsyncClient,
                                                              state: FakeBigCommerce) -> None:
    """page/limit slice the list; an empty page is 204 with an empty body."""
    a, b, c = (o["id"] for o in _seed_orders(state))
    assert await _ids(api, page=1, limit=2) == [a, b]
    assert await _ids(api, page=2, limit=2) == [c]
    response = await api.get(f"{BASE}/v2/orders", params={"page": 3, "limit": 2})
    assert response.status_code == 204 and response.content == b""
    assert await _ids(api, status_id=4) == []


async def test_list_orders_caps_limit_at_250(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """limit above 250 returns at most 250 orders."""
    for _ in range(260):
        state.create_order(STORE, total="1")
    assert len(await _ids(api, limit=500)) == 250
    assert len(await _ids(api)) == 50


async def test_list_orders_rejects_bad_filters(api: httpx.AsyncClient) -> None:
    """Malformed filters answer 400 in the v2 shape."""
    for params in ({"min_id": "x"}, {"min_date_created": "yesterday"}, {"sort": "total:asc"}):
        response = await api.get(f"{BASE}/v2/orders", params=params)
        assert response.status_code == 400 and response.json()[0]["status"] == 400


async def test_order_statuses_payment_methods_and_store(api: httpx.AsyncClient) -> None:
    """The catalogue endpoints answer the documented shapes."""
    statuses = (await api.get(f"{BASE}/v2/order_statuses")).json()
    assert [s["id"] for s in statuses] == list(range(15))
    assert statuses[7]["name"] == "Awaiting Payment" and statuses[11]["name"] == "Awaiting Fulfillment"
    methods = (await api.get(f"{BASE}/v2/payments/methods")).json()
    assert {m["name"]: m["test_mode"] for m in methods} == {
        "OKCloud Pay": False, "Test Payment Gateway": True}
    store = (await api.get(f"{BASE}/v2/store")).json()
    assert store["id"] == STORE and store["secure_url"] == "http://127.0.0.1:8081"
    assert store["domain"] == "127.0.0.1:8081" and store["currency"] == "USD"


# --- v3 metafields ---------------------------------------------------------------------


def _metafield(**overrides: Any) -> dict[str, Any]:
    return {"permission_set": "app_only", "namespace": "bcpay", "key": "payment_id",
            "value": "pay_1", **overrides}


async def test_metafield_create_get_update_delete(api: httpx.AsyncClient,
                                                  state: FakeBigCommerce) -> None:
    """A metafield round-trips; PUT changes the value; DELETE answers 204."""
    order = state.create_order(STORE, total="10")
    url = f"{BASE}/v3/orders/{order['id']}/metafields"
    created = (await api.post(url, json=_metafield(description="CeleryPay id"))).json()["data"]
    assert created["resource_id"] == order["id"] and created["resource_type"] == "order"
    assert created["owner_client_id"] == "sandbox-client-id" and created["value"] == "pay_1"
    listing = (await api.get(url)).json()
    assert [m["id"] for m in listing["data"]] == [created["id"]]
    assert listing["meta"]["pagination"]["total"] == 1
    put = await api.put(f"{url}/{created['id']}", json=_metafield(value="pay_2"))
    assert put.status_code == 200 and put.json()["data"]["value"] == "pay_2"
    assert (await api.get(f"{url}/{created['id']}")).json()["data"]["value"] == "pay_2"
    assert (await api.delete(f"{url}/{created['id']}")).status_code == 204
    assert (await api.get(f"{url}/{created['id']}")).status_code == 404


async def test_metafield_duplicate_is_409_per_client(api: httpx.AsyncClient,
                                                     state: FakeBigCommerce) -> None:
    """Same namespace+key on the same order by the same client is 409; another client may."""
    order = state.create_order(STORE, total="10")
    url = f"{BASE}/v3/orders/{order['id']}/metafields"
    assert (await api.post(url, json=_metafield())).status_code == 200
    duplicate = await api.post(url, json=_metafield(value="other"))
    assert duplicate.status_code == 409 and duplicate.json()["status"] == 409
    state.add_token(STORE, "other-app", client_id="c2", scopes={"store_v2_orders"})
    other = await api.post(url, json=_metafield(), headers={"X-Auth-Token": "other-app"})
    assert other.status_code == 200


async def test_metafield_validation_names_the_fields(api: httpx.AsyncClient,
                                                     state: FakeBigCommerce) -> None:
    """Missing or invalid required fields answer 422 with per-field errors; absent order 404."""
    order = state.create_order(STORE, total="10")
    url = f"{BASE}/v3/orders/{order['id']}/metafields"
    response = await api.post(url, json={"namespace": "n" * 65, "value": ""})
    assert response.status_code == 422
    assert set(response.json()["errors"]) == {"permission_set", "namespace", "key", "value"}
    assert (await api.post(f"{BASE}/v3/orders/424242/metafields", json=_metafield())).status_code == 404


# --- v3 scripts --------------------------------------------------------------------------


def _script(**overrides: Any) -> dict[str, Any]:
    return {"name": "bcpay", "kind": "script_tag",
            "html": "<script>var o = {{checkout.order.id}};</script>",
            "visibility": "order_confirmation", "location": "footer",
            "consent_category": "essential", "auto_uninstall": True, "enabled": True, **overrides}


async def test_script_crud(api: httpx.AsyncClient) -> None:
    """Create, read, list, update and delete a script; responses are {data, meta}."""
    url = f"{BASE}/v3/content/scripts"
    response = await api.post(url, json=_script())
    assert response.status_code == 200
    created = response.json()
    assert created["meta"] == {} and created["data"]["kind"] == "script_tag"
    uuid = created["data"]["uuid"]
    assert created["data"]["api_client_id"] == "sandbox-client-id"
    assert created["data"]["load_method"] == "default" and created["data"]["channel_id"] == 1
    assert (await api.get(f"{url}/{uuid}")).json()["data"]["html"] == _script()["html"]
    listing = (await api.get(url)).json()
    assert [s["uuid"] for s in listing["data"]] == [uuid]
    assert listing["meta"]["pagination"]["total"] == 1
    put = await api.put(f"{url}/{uuid}", json={"enabled": False})
    assert put.status_code == 200 and put.json()["data"]["enabled"] is False
    assert put.json()["data"]["html"] == _script()["html"]
    assert (await api.delete(f"{url}/{uuid}")).status_code == 204
    assert (await api.get(f"{url}/{uuid}")).status_code == 404


@pytest.mark.parametrize(("overrides", "field"), [
    ({"name": ""}, "name"),
    ({"kind": "inline"}, "kind"),
    ({"src": "https://cdn.test/a.js"}, "src"),
    ({"html": None}, "html"),
    ({"visibility": "everywhere"}, "visibility"),
    ({"location": "body"}, "location"),
    ({"consent_category": "unknown"}, "consent_category"),
    ({"load_method": "async"}, "load_method"),
    ({"kind": "src", "src": "https://cdn.test/a.js"}, "html"),
    ({"channel_id": 0}, "channel_id"),
    ({"colour": "red"}, "colour"),
])
async def test_script_validation(api: httpx.AsyncClient, overrides: dict[str, Any],
                                 field: str) -> None:
    """Each rule of scripts.v3.yml answers 422 naming the offending field."""
    body = {k: v for k, v in _script(**overrides).items() if v is not None}
    response = await api.post(f"{BASE}/v3/content/scripts", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["errors"]


async def test_src_script_keeps_integrity_hashes(api: httpx.AsyncClient) -> None:
    """A kind=src script accepts SRI hashes and no html."""
    body = {"name": "loader", "kind": "src", "src": "https://cdn.test/a.js", "load_method": "defer",
            "integrity_hashes": ["sha384-abc"], "visibility": "order_confirmation"}
    response = await api.post(f"{BASE}/v3/content/scripts", json=body)
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["integrity_hashes"] == ["sha384-abc"] and "html" not in data


async def test_script_limit_is_ten_per_client(api: httpx.AsyncClient,
                                              state: FakeBigCommerce) -> None:
    """The eleventh script of one client is 422; another client still has room."""
    url = f"{BASE}/v3/content/scripts"
    for n in range(10):
        assert (await api.post(url, json=_script(name=f"s{n}"))).status_code == 200
    eleventh = await api.post(url, json=_script(name="s10"))
    assert eleventh.status_code == 422 and "10 scripts" in eleventh.json()["title"]
    state.add_token(STORE, "other", client_id="c2", scopes={"store_v2_content"})
    other = await api.post(url, json=_script(), headers={"X-Auth-Token": "other"})
    assert other.status_code == 200
    assert len((await api.get(url, headers={"X-Auth-Token": "other"})).json()["data"]) == 1


async def test_checkout_visibility_needs_checkout_scope(api: httpx.AsyncClient,
                                                        state: FakeBigCommerce) -> None:
    """all_pages/checkout scripts need store_content_checkout; order_confirmation does not."""
    state.add_token(STORE, "content-only", client_id="c2", scopes={"store_v2_content"})
    headers = {"X-Auth-Token": "content-only"}
    url = f"{BASE}/v3/content/scripts"
    assert (await api.post(url, json=_script(visibility="all_pages"), headers=headers)).status_code == 403
    assert (await api.post(url, json=_script(), headers=headers)).status_code == 200


# --- v3 hooks -------------------------------------------------------------------------------


def _hook(**overrides: Any) -> dict[str, Any]:
    return {"scope": "store/order/statusUpdated", "destination": "http://127.0.0.1:8000/webhooks",
            "is_active": True, "headers": {"X-Bcpay-Secret": "s3"}, **overrides}


async def test_hook_crud(api: httpx.AsyncClient, clock: Clock) -> None:
    """Create, read, list, update and delete a webhook with the documented fields."""
    url = f"{BASE}/v3/hooks"
    created = (await api.post(url, json=_hook())).json()["data"]
    assert created["store_hash"] == STORE and created["client_id"] == "sandbox-client-id"
    assert created["created_at"] == created["updated_at"] == int(T0.timestamp())
    assert created["headers"] == {"X-Bcpay-Secret": "s3"} and created["is_active"] is True
    hook_url = f"{url}/{created['id']}"
    assert (await api.get(hook_url)).json()["data"]["destination"] == _hook()["destination"]
    listing = (await api.get(url, params={"scope": "store/order/statusUpdated"})).json()
    assert [h["id"] for h in listing["data"]] == [created["id"]]
    assert (await api.get(url, params={"is_active": "false"})).json()["data"] == []
    clock.now = T0 + timedelta(seconds=30)
    updated = (await api.put(hook_url, json={"is_active": False})).json()["data"]
    assert updated["is_active"] is False and updated["updated_at"] == int(T0.timestamp()) + 30
    deleted = await api.delete(hook_url)
    assert deleted.status_code == 200 and deleted.json()["data"]["id"] == created["id"]
    assert (await api.get(hook_url)).status_code == 404


async def test_hook_duplicate_scope_and_destination_is_422(api: httpx.AsyncClient) -> None:
    """One hook per client+scope+destination; another scope on the same URL is fine."""
    url = f"{BASE}/v3/hooks"
    assert (await api.post(url, json=_hook())).status_code == 200
    duplicate = await api.post(url, json=_hook(headers={}))
    assert duplicate.status_code == 422 and "destination" in duplicate.json()["errors"]
    assert (await api.post(url, json=_hook(scope="store/order/created"))).status_code == 200


async def test_hook_destination_rules(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """Loopback http is accepted unless strict; https must use port 443; missing scope is 422."""
    url = f"{BASE}/v3/hooks"
    assert (await api.post(url, json=_hook(destination="http://example.test/x"))).status_code == 422
    assert (await api.post(url, json=_hook(destination="https://example.test:8443/x"))).status_code == 422
    assert (await api.post(url, json={"destination": "https://example.test/x"})).status_code == 422
    state.strict_destinations = True
    assert (await api.post(url, json=_hook())).status_code == 422
    assert (await api.post(url, json=_hook(destination="https://example.test/x"))).status_code == 200


async def test_hooks_need_only_a_valid_token(api: httpx.AsyncClient,
                                             state: FakeBigCommerce) -> None:
    """A token with no scopes can manage its own hooks but not see another client's."""
    state.add_token(STORE, "bare", client_id="c9", scopes=set())
    created = await api.post(f"{BASE}/v3/hooks", json=_hook(), headers={"X-Auth-Token": "bare"})
    assert created.status_code == 200
    hook_id = created.json()["data"]["id"]
    assert (await api.get(f"{BASE}/v3/hooks/{hook_id}")).status_code == 404


# --- OAuth ---------------------------------------------------------------------------------------


def _token_form(grant: str, **overrides: str) -> dict[str, str]:
    return {"client_id": "app-id", "client_secret": "app-secret", "code": grant,
            "scope": "store_v2_orders store_v2_content", "grant_type": "authorization_code",
            "redirect_uri": "https://bcpay.test/auth", "context": f"stores/{STORE}", **overrides}


def _issue(state: FakeBigCommerce) -> str:
    return state.issue_oauth_code(STORE, client_id="app-id", client_secret="app-secret",
                                  redirect_uri="https://bcpay.test/auth",
                                  scope="store_v2_orders store_v2_content")


async def test_oauth_code_exchange_is_single_use(api: httpx.AsyncClient,
                                                 state: FakeBigCommerce) -> None:
    """A code answers a working token once (JSON body); the second exchange is 400."""
    code = _issue(state)
    response = await api.post("/oauth2/token", json=_token_form(code))
    assert response.status_code == 200
    body = response.json()
    assert body["context"] == f"stores/{STORE}" and body["scope"] == "store_v2_orders store_v2_content"
    assert set(body["user"]) == {"id", "username", "email"} and body["owner"]["email"]
    assert body["account_uuid"]
    order = state.create_order(STORE, total="1")
    got = await api.get(f"{BASE}/v2/orders/{order['id']}",
                        headers={"X-Auth-Token": body["access_token"]})
    assert got.status_code == 200
    again = await api.post("/oauth2/token", json=_token_form(code))
    assert again.status_code == 400


async def test_oauth_accepts_form_bodies(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """bigcommerce-api-python posts form-urlencoded fields."""
    response = await api.post("/oauth2/token", data=_token_form(_issue(state)))
    assert response.status_code == 200 and response.json()["access_token"]


@pytest.mark.parametrize(("overrides", "status"), [
    ({"client_secret": "wrong"}, 401),
    ({"client_id": "other"}, 401),
    ({"redirect_uri": "https://evil.test/auth"}, 400),
    ({"grant_type": "client_credentials"}, 400),
    ({"context": "stores/other"}, 400),
    ({"scope": "store_v2_orders"}, 400),
    ({"code": "forged"}, 400),
    ({"client_secret": ""}, 400),
])
async def test_oauth_field_checks(api: httpx.AsyncClient, state: FakeBigCommerce,
                                  overrides: dict[str, str], status: int) -> None:
    """Each wrong field is refused and leaves the code usable."""
    code = _issue(state)
    response = await api.post("/oauth2/token", json=_token_form(code, **overrides))
    assert response.status_code == status and response.json()["error"]
    assert (await api.post("/oauth2/token", json=_token_form(code))).status_code == 200


# --- rate limits and chaos -----------------------------------------------------------------------


async def test_rate_limit_headers_on_every_response(api: httpx.AsyncClient) -> None:
    """Successes and errors alike carry the four X-Rate-Limit headers, counting down."""
    first = await api.get(f"{BASE}/v2/order_statuses")
    second = await api.get(f"{BASE}/v2/orders/1")
    assert second.status_code == 404
    assert first.headers["X-Rate-Limit-Requests-Quota"] == "150"
    assert first.headers["X-Rate-Limit-Time-Window-Ms"] == "30000"
    assert first.headers["X-Rate-Limit-Requests-Left"] == "149"
    assert second.headers["X-Rate-Limit-Requests-Left"] == "148"
    assert 0 < int(second.headers["X-Rate-Limit-Time-Reset-Ms"]) <= 30000


async def test_enforced_quota_answers_429_with_reset(state: FakeBigCommerce) -> None:
    """Past the quota the API answers 429 with ms to the window end; a new window serves again."""
    ticker = Ticker()
    app = create_bigcommerce_api(state, quota=Quota(requests=2, window_ms=1000, enforce=True,
                                                    clock=ticker))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://x",
                                 headers={"X-Auth-Token": TOKEN}) as api:
        url = f"{BASE}/v2/order_statuses"
        assert (await api.get(url)).status_code == 200
        ticker.now += 0.25
        assert (await api.get(url)).headers["X-Rate-Limit-Requests-Left"] == "0"
        ticker.now += 0.35
        limited = await api.get(url)
        assert limited.status_code == 429
        assert limited.headers["X-Rate-Limit-Time-Reset-Ms"] == "400"
        assert all(name in limited.headers for name in RATE_LIMIT_HEADERS)  # the quota's 429 carries them all
        assert state.rate_limited == 1
        ticker.now += 0.4
        again = await api.get(url)
        assert again.status_code == 200 and again.headers["X-Rate-Limit-Requests-Left"] == "1"


async def test_chaos_error_rate_and_runtime_toggle(state: FakeBigCommerce) -> None:
    """error_rate 1.0 fails every call with 503; back at 0 every call succeeds."""
    app = create_bigcommerce_api(state, chaos=Chaos(error_rate=1.0, seed=7))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://x",
                                 headers={"X-Auth-Token": TOKEN}) as api:
        url = f"{BASE}/v2/order_statuses"
        outage = [(await api.get(url)).status_code for _ in range(5)]
        assert outage == [503] * 5
        state.chaos.error_rate = 0.0
        assert (await api.get(url)).status_code == 200


async def test_chaos_partial_error_rate_is_seeded(state: FakeBigCommerce) -> None:
    """The same seed fails the same calls; roughly the requested fraction fails."""
    async def run() -> list[int]:
        app = create_bigcommerce_api(state, chaos=Chaos(error_rate=0.3, seed=42))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://x",
                                     headers={"X-Auth-Token": TOKEN}) as api:
            return [(await api.get(f"{BASE}/v2/order_statuses")).status_code for _ in range(60)]
    first, second = await run(), await run()
    assert first == second
    assert 8 <= first.count(503) <= 30 and set(first) == {200, 503}


async def test_chaos_periodic_429_bursts_are_platform_load_without_quota_headers(state: FakeBigCommerce) -> None:
    """burst_429_every=3 answers every third call 429 as platform load: none of the X-Rate-Limit-* headers
    (reference section 9; only the quota's own 429 and real answers carry them)."""
    app = create_bigcommerce_api(state, chaos=Chaos(burst_429_every=3))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://x",
                                 headers={"X-Auth-Token": TOKEN}) as api:
        responses = [await api.get(f"{BASE}/v2/order_statuses") for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 200, 429, 200, 200, 429]
    for response in responses:
        present = [name for name in RATE_LIMIT_HEADERS if name in response.headers]
        assert present == ([] if response.status_code == 429 else list(RATE_LIMIT_HEADERS)), response.headers
    assert "X-Retry-After" not in responses[2].headers and "Retry-After" not in responses[2].headers
    assert state.rate_limited == 2


async def test_requests_are_recorded(api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """Every API call is logged with method, path, query and status."""
    await api.get(f"{BASE}/v2/orders", params={"status_id": 7})
    [recorded] = state.requests
    assert (recorded.method, recorded.path, recorded.query, recorded.status) == (
        "GET", f"{BASE}/v2/orders", "status_id=7", 204)


async def test_chaos_latency_sleeps_before_answering(state: FakeBigCommerce) -> None:
    """latency goes through the injected sleep on every call."""
    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    app = create_bigcommerce_api(state, chaos=Chaos(latency=2.5, sleep=record))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://x",
                                 headers={"X-Auth-Token": TOKEN}) as api:
        assert (await api.get(f"{BASE}/v2/order_statuses")).status_code == 200
        assert (await api.get(f"{BASE}/v2/store")).status_code == 200
    assert slept == [2.5, 2.5]


async def test_api_status_change_fires_status_updated(state: FakeBigCommerce) -> None:
    """With a webhook client, a PUT changing status_id notifies active statusUpdated hooks once."""
    received: list[dict[str, Any]] = []

    async def receiver(request: Request) -> Response:
        received.append(await request.json())
        return Response(status_code=200)

    hooks = Starlette(routes=[Route("/hooks", receiver, methods=["POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hooks)) as http:
        app = create_bigcommerce_api(state, webhook_client=http)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://x",
                                     headers={"X-Auth-Token": TOKEN}) as api:
            await api.post(f"{BASE}/v3/hooks", json=_hook(scope="store/order/*",
                                                          destination="http://127.0.0.1:9/hooks"))
            order = state.create_order(STORE, total="10")
            url = f"{BASE}/v2/orders/{order['id']}"
            assert (await api.put(url, json={"status_id": 11})).status_code == 200
            assert (await api.put(url, json={"staff_notes": "no status change"})).status_code == 200
    [payload] = received
    assert payload["scope"] == "store/order/statusUpdated"
    assert payload["data"]["status"] == {"previous_status_id": 7, "new_status_id": 11}


# --- accepted payment methods (payments_methods.v3.yml) ------------------------------------------


def _paths_file(name: str) -> dict[str, Any] | None:
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[2] / "shared" / "reference" / "openapi" / name
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


async def test_accepted_methods_follow_the_orders_channel_and_the_official_schema(
        api: httpx.AsyncClient, state: FakeBigCommerce) -> None:
    """GET /v3/payments/methods needs order_id or checkout_id and answers the methods of that order's channel,
    in the paymentsMethods_Resp shape."""
    from bcpay.sandbox.bc_channels import add_channel

    add_channel(state, STORE, name="Outlet", url="https://outlet.example.com")
    [offline] = [m for m in state.store(STORE).payment_methods if m.offline]
    offline.channels = {1}
    one = state.create_order(STORE, total="5.00")
    two = state.create_order(STORE, total="5.00", channel_id=2)
    base = f"/stores/{STORE}/v3/payments/methods"
    assert (await api.get(base)).status_code == 400
    assert (await api.get(base, params={"order_id": 999})).status_code == 404
    on_one = (await api.get(base, params={"order_id": one["id"]})).json()
    on_two = (await api.get(base, params={"order_id": two["id"]})).json()
    assert sorted(m["name"] for m in on_one["data"]) == ["OKCloud Pay", "Test Payment Gateway"]
    assert [m["name"] for m in on_two["data"]] == ["Test Payment Gateway"]
    doc = _paths_file("payments_methods.v3.yml")
    if doc is None:
        pytest.skip("shared/reference/openapi/payments_methods.v3.yml is not beside this checkout")
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    registry: Registry[Any] = Registry().with_resource("urn:pm", Resource.from_contents(doc, default_specification=DRAFT4))
    validator = jsonschema.Draft4Validator(
        {"$ref": "urn:pm#/components/responses/paymentsMethods_Resp/content/application~1json/schema"},
        registry=registry)
    for body in (on_one, on_two):
        assert sorted(map(str, validator.iter_errors(body))) == []
    assert list(validator.iter_errors({"data": [{"name": "no id"}]}))  # the check can fail
