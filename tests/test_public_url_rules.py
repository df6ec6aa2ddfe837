"""Callback URLs by the contract's rule, in the client and in ``bcpay doctor``.

CeleryPay, "POST /v1/payments": notify_url is "required, https, or http on a
loopback address in sandbox" and return_url follows "the same rule".
BigCommerce, "Webhooks v3": a destination is "https, port 443 only".
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from builders import MERCHANT_ID, SECRET, payment_json

from bcpay import operations, stores
from bcpay.clients.bigcommerce import StoreInfo
from bcpay.clients.celerypay import CeleryPayClient
from bcpay.config import load_settings
from bcpay.errors import InvalidInputError
from bcpay.provisioning import Check
from bcpay.runtime import open_runtime

BASE = "https://gw.celerypay.test"
STORE_HASH = "abc123"
STORE_SECRET = "s" * 20 + "ecret-for-tests-0123456789"
GOOD = {
    "merchant_order_no": "abc123-100-1",
    "amount": 1999,
    "currency": "USD",
    "notify_url": "https://pay.shop.example/notify/celerypay/abc123",
    "return_url": "https://pay.shop.example/pay/tok/return",
    "idempotency_key": "pay-abc123-100-1",
}


class Gateway:
    """A MockTransport CeleryPay that records every request it is sent and answers 201."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(201, json=payment_json())


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(gateway)) as client:
        yield client


def client_for(http: httpx.AsyncClient, environment: Any) -> CeleryPayClient:
    return CeleryPayClient(http, base_url=BASE, merchant_id=MERCHANT_ID, api_secret=SECRET,
                           environment=environment)


# --- the client -----------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ["sandbox", "production"])
@pytest.mark.parametrize("param", ["notify_url", "return_url"])
async def test_http_on_a_public_host_is_refused_before_any_request(
    http: httpx.AsyncClient, gateway: Gateway, environment: str, param: str
) -> None:
    """http://shop-pay.example.com is refused in both environments, and nothing is sent."""
    client = client_for(http, environment)
    rule = ("https (http only on a loopback address)" if environment == "sandbox"
            else "https in production (http only on a loopback address in sandbox)")
    with pytest.raises(InvalidInputError) as raised:
        await client.create_payment(**(GOOD | {param: "http://shop-pay.example.com/x"}))
    assert raised.value.message == f"{param} must use {rule}, not http on shop-pay.example.com"
    assert raised.value.code == "invalid_request"
    assert gateway.requests == []


@pytest.mark.parametrize("environment", ["sandbox", "production"])
async def test_https_callback_urls_are_sent_as_given(
    http: httpx.AsyncClient, gateway: Gateway, environment: str
) -> None:
    """https passes in both environments, with any port and path, unchanged in the body."""
    urls = {"notify_url": "https://pay.shop.example:8443/notify/celerypay/abc123",
            "return_url": "HTTPS://Pay.Shop.Example/pay/tok/return?x=1"}
    await client_for(http, environment).create_payment(**(GOOD | urls))
    [request] = gateway.requests
    sent = json.loads(request.content)
    assert {k: sent[k] for k in urls} == urls


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/n", "http://127.9.8.7/n", "http://localhost:8000/n", "http://LOCALHOST/n",
            "http://[::1]:8000/n"],
)
@pytest.mark.parametrize("param", ["notify_url", "return_url"])
async def test_sandbox_accepts_http_on_a_loopback_address(
    http: httpx.AsyncClient, gateway: Gateway, url: str, param: str
) -> None:
    """In sandbox, http on 127.0.0.0/8, localhost or [::1] reaches CeleryPay."""
    await client_for(http, "sandbox").create_payment(**(GOOD | {param: url}))
    [request] = gateway.requests
    assert json.loads(request.content)[param] == url


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/n", "http://localhost:8000/n", "http://[::1]:8000/n"])
async def test_production_refuses_http_even_on_a_loopback_address(
    http: httpx.AsyncClient, gateway: Gateway, url: str
) -> None:
    """The loopback exception is the sandbox's only."""
    with pytest.raises(InvalidInputError, match=r"^notify_url must use https in production \(http only on a "
                                                r"loopback address in sandbox\), not http on "):
        await client_for(http, "production").create_payment(**(GOOD | {"notify_url": url}))
    assert gateway.requests == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "return_url is required"),
        (None, "return_url is required"),
        ("pay.shop.example/return", "return_url must be an absolute https URL with a host"),
        ("/pay/tok/return", "return_url must be an absolute https URL with a host"),
        ("//pay.shop.example/return", "return_url must be an absolute https URL with a host"),
        ("ftp://127.0.0.1/return", "return_url must be an absolute https URL with a host"),
        ("javascript:alert(1)", "return_url must be an absolute https URL with a host"),
        ("https://", "return_url must be an absolute https URL with a host"),
        ("https:///pay/tok/return", "return_url must be an absolute https URL with a host"),
        ("http://:8000/return", "return_url must be an absolute https URL with a host"),
        ("https://pay.shop.example:99999/return", "return_url is not a valid URL"),
        ("https://pay.shop.example:port/return", "return_url is not a valid URL"),
        ("https://pay shop.example/return", "return_url is not a valid URL"),
        ("https://pay.shop.example/return\n", "return_url is not a valid URL"),
        ("https://user:pw@pay.shop.example/return", "return_url must not carry a user name or password"),
        ("http://127.0.0.1.nip.io/return", "return_url must use https (http only on a loopback address), "
                                           "not http on 127.0.0.1.nip.io"),
        ("http://localhost.shop.example/return", "return_url must use https (http only on a loopback address), "
                                                 "not http on localhost.shop.example"),
        ("http://0.0.0.0:8000/return", "return_url must use https (http only on a loopback address), "
                                       "not http on 0.0.0.0"),
    ],
)
async def test_garbage_callback_urls_are_refused(
    http: httpx.AsyncClient, gateway: Gateway, url: Any, message: str
) -> None:
    """No scheme, another scheme, no host, a bad port, spaces, credentials, loopback look-alikes."""
    with pytest.raises(InvalidInputError) as raised:
        await client_for(http, "sandbox").create_payment(**(GOOD | {"return_url": url}))
    assert raised.value.message == message
    assert gateway.requests == []


def test_an_unknown_environment_is_refused(http: httpx.AsyncClient) -> None:
    """The environment decides the rule, so a typo in it must not pass silently."""
    with pytest.raises(InvalidInputError, match="^CeleryPay environment must be sandbox or production, got 'live'$"):
        client_for(http, "live")


# --- bcpay doctor ----------------------------------------------------------------------------


class Upstreams:
    """Everything bcpay calls: ``/healthz`` answers 200 on any host, the APIs say 401."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path == "/healthz":
            return httpx.Response(200, text="ok")
        return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "no", "param": None}})


async def doctor_checks(
    sqlite_url: str, secret_key: str, public_url: str, environment: str,
    bigcommerce_url: str = "https://api.bigcommerce.com",
) -> dict[str, Check]:
    """Run ``operations.doctor`` for one configured store; its checks by name."""
    settings = load_settings(environ={}, overrides={
        "app": {"public_url": public_url, "secret_key": secret_key, "sandbox": not secret_key},
        "database": {"url": sqlite_url},
        "bigcommerce": {"api_url": bigcommerce_url, "login_url": bigcommerce_url},
    })
    info = StoreInfo(id="1", domain="shop.example.com", secure_url="https://shop.example.com", name="Test Shop",
                     currency="USD", control_panel_base_url="https://store-abc123.mybigcommerce.com",
                     default_channel_id=1)
    async with httpx.AsyncClient(transport=httpx.MockTransport(Upstreams())) as http:
        async with open_runtime(settings, http=http) as rt:
            await stores.register(rt, STORE_HASH, access_token="bc-token-for-tests", source="api_account",
                                  info=info)
            await stores.configure_merchant(rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=STORE_SECRET,
                                            environment=environment)
            report = await operations.doctor(rt, STORE_HASH)
    return {check.name: check for _, check in report}


async def test_doctor_reports_an_http_public_url_for_a_production_store(sqlite_url: str, secret_key: str) -> None:
    """http://shop-pay.example.com: CeleryPay and BigCommerce would both refuse it, and doctor says how to fix it."""
    checks = await doctor_checks(sqlite_url, secret_key, "http://shop-pay.example.com", "production")
    celerypay = checks["CeleryPay callback URLs"]
    assert not celerypay.ok
    assert celerypay.detail == (
        "CeleryPay production would refuse every payment: notify_url must use https in production "
        "(http only on a loopback address in sandbox), not http on shop-pay.example.com")
    assert "app.public_url" in celerypay.fix[0] and "https://" in celerypay.fix[0]
    hooks = checks["webhook destination"]
    assert not hooks.ok
    assert hooks.detail == ("BigCommerce accepts only https on port 443 as a webhook destination, "
                            "not http://shop-pay.example.com")
    assert "app.public_url" in hooks.fix[0]
    assert checks["public URL"].ok  # reachable is not enough


async def test_doctor_passes_an_https_public_url(sqlite_url: str, secret_key: str) -> None:
    """https on the default port satisfies both rules in production."""
    checks = await doctor_checks(sqlite_url, secret_key, "https://shop-pay.example.com", "production")
    assert checks["CeleryPay callback URLs"] == Check(
        "CeleryPay callback URLs", True, "notify_url and return_url accepted by CeleryPay production")
    assert checks["webhook destination"] == Check(
        "webhook destination", True, "https://shop-pay.example.com is accepted by BigCommerce")
    assert checks["app.secret_key"].ok and checks["app.secret_key"].detail == "set"


async def test_doctor_reports_https_on_another_port_for_webhooks_only(sqlite_url: str, secret_key: str) -> None:
    """CeleryPay takes https on any port; BigCommerce only 443."""
    checks = await doctor_checks(sqlite_url, secret_key, "https://shop-pay.example.com:8443", "production")
    assert checks["CeleryPay callback URLs"].ok
    assert not checks["webhook destination"].ok
    assert checks["webhook destination"].detail.endswith("not https://shop-pay.example.com:8443")


async def test_doctor_reports_an_http_public_url_for_a_sandbox_store(sqlite_url: str, secret_key: str) -> None:
    """The sandbox allows http on loopback only, not on a public host."""
    checks = await doctor_checks(sqlite_url, secret_key, "http://shop-pay.example.com", "sandbox")
    assert not checks["CeleryPay callback URLs"].ok
    assert checks["CeleryPay callback URLs"].detail.startswith("CeleryPay sandbox would refuse every payment: ")


async def test_doctor_accepts_the_local_sandbox_on_loopback(sqlite_url: str, secret_key: str) -> None:
    """A sandbox store with bcpay and BigCommerce both on loopback (``bcpay sandbox``, the CLI tests) passes."""
    checks = await doctor_checks(sqlite_url, secret_key, "http://127.0.0.1:8000", "sandbox",
                                 bigcommerce_url="http://127.0.0.1:8701")
    assert checks["CeleryPay callback URLs"].ok
    assert checks["webhook destination"].ok


async def test_doctor_reports_a_loopback_public_url_in_production(sqlite_url: str, secret_key: str) -> None:
    """The default public_url left in place: production CeleryPay and real BigCommerce refuse it."""
    checks = await doctor_checks(sqlite_url, secret_key, "http://127.0.0.1:8000", "production")
    assert not checks["CeleryPay callback URLs"].ok
    assert checks["CeleryPay callback URLs"].detail.endswith("not http on 127.0.0.1")
    assert not checks["webhook destination"].ok


async def test_a_production_store_on_a_loopback_http_url_sends_nothing_and_can_pay_once_fixed(
    sqlite_url: str, secret_key: str
) -> None:
    """The runtime gives the client the store's environment: production refuses http before calling CeleryPay."""
    from bcpay import stores
    from tests.world import MERCHANT_ID, MERCHANT_SECRET, STORE_HASH, open_world

    async with open_world(sqlite_url, secret_key) as w:
        await w.add_store()
        await stores.configure_merchant(w.rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=MERCHANT_SECRET,
                                        environment="production")
        order = w.place_order()
        refused = await w.start(order)
        assert refused.status_code == 400 and "notify_url must use https" in refused.json()["error"]["message"]
        assert w.cp.payments == {}
        await stores.configure_merchant(w.rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=MERCHANT_SECRET,
                                        environment="sandbox")
        fixed = await w.start(order)
        assert fixed.status_code == 200 and len(w.cp.payments) == 1


async def test_doctor_fails_production_stores_sealed_with_the_public_sandbox_key(
    sqlite_url: str, secret_key: str
) -> None:
    """app.sandbox without app.secret_key seals with a key anyone can read in bcpay's source."""
    checks = await doctor_checks(sqlite_url, "", "https://shop-pay.example.com", "production")
    check = checks["app.secret_key"]
    assert not check.ok and "public sandbox key" in check.detail and "rotate-key" in check.fix[0]
    local = await doctor_checks(sqlite_url, "", "https://shop-pay.example.com", "sandbox")
    assert local["app.secret_key"].ok and "local use only" in local["app.secret_key"].detail
