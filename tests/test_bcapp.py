"""The BigCommerce app: OAuth install, signed callbacks, and the settings page, on SQLite and PostgreSQL.

bcpay runs with its lifespan against the sandbox fakes (``tests.world``). The
settings page is reached over ``https://`` on the ASGI transport, because its
session cookie is ``Secure`` and httpx only sends those over https.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import jwt.warnings
import pytest
from sqlalchemy import select

from bcpay import outbox
from bcpay import stores as stores_lib
from bcpay.errors import SignatureError
from bcpay.provisioning import WEBHOOK_SECRET_HEADER
from bcpay.sandbox.bc_apps import revoke_tokens
from bcpay.server.bcapp import frame_ancestors
from bcpay.server.sessions import COOKIE_NAME, SessionSigner
from bcpay.snippet import SCRIPT_NAME
from bcpay.storage import queries as q
from bcpay.storage.schema import anomalies, jobs, payments, store_users, stores, used_jwts
from tests.builders import REMOVE, bc_jwt
from tests.world import (
    ACCESS_TOKEN,
    MERCHANT_ID,
    MERCHANT_SECRET,
    PUBLIC_URL,
    STORE_HASH,
    World,
    open_world,
)

CLIENT_ID = "app-client-id"
CLIENT_SECRET = "app-client-secret-for-tests-0123456789abcdef"  # >= 32 bytes for HS256
SCOPES = (
    "store_v2_orders store_v2_content store_v2_information_read_only store_payments_methods_read "
    "store_v2_transactions_read_only"
)
HOOK_URL = f"{PUBLIC_URL}/webhooks/bigcommerce/{STORE_HASH}"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
async def world(db_url: str, secret_key: str) -> AsyncIterator[World]:
    async with open_world(db_url, secret_key, app={"client_secret": CLIENT_SECRET}) as w:
        yield w


@pytest.fixture
async def panel(world: World) -> AsyncIterator[httpx.AsyncClient]:
    """The control-panel iframe's browser: https, so the Secure cookie is kept and sent."""
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="https://127.0.0.1:8000") as client:
        yield client


def signed(**overrides: Any) -> str:
    """A signed_payload_jwt as BigCommerce makes it for this app and store, issued now."""
    # The panel's user is the store owner unless a test says otherwise: only the owner, and users the owner
    # allows, may change settings (bcpay.roles; tests/test_roles.py tells the rest apart).
    claims: dict[str, Any] = {"aud": CLIENT_ID, "sub": f"stores/{STORE_HASH}",
                              "owner": {"id": 42, "email": "clerk@example.com"}, **overrides}
    secret = claims.pop("secret", CLIENT_SECRET)
    return bc_jwt(secret=secret, now=int(time.time()), **claims)


async def install(world: World, panel: httpx.AsyncClient, scope: str = SCOPES) -> httpx.Response:
    """BigCommerce sends the merchant's browser to /bc/auth with a fresh code."""
    code = world.bc.issue_oauth_code(
        STORE_HASH,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=f"{PUBLIC_URL}/bc/auth",
        scope=scope,
    )
    return await panel.get(
        "/bc/auth", params={"code": code, "scope": scope, "context": f"stores/{STORE_HASH}"}
    )


async def open_settings(panel: httpx.AsyncClient, **claims: Any) -> str:
    """Open the app as a control-panel user; returns the settings page HTML."""
    answer = await panel.get("/bc/load", params={"signed_payload_jwt": signed(**claims)})
    assert answer.status_code == 303, answer.text
    page = await panel.get("/bc/settings")
    assert page.status_code == 200, page.text
    return page.text


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def rows(world: World, table: Any) -> list[dict[str, Any]]:
    async with world.rt.db.read() as conn:
        return [
            dict(r) for r in (await conn.execute(select(table).order_by(table.c.id))).mappings()
        ]


async def snapshot(world: World) -> list[list[dict[str, Any]]]:
    return [await rows(world, t) for t in (stores, store_users, jobs, payments, anomalies)]


async def store_row(world: World) -> dict[str, Any]:
    found = [r for r in await rows(world, stores) if r["store_hash"] == STORE_HASH]
    assert len(found) == 1
    return found[0]


def app_token(world: World) -> str:
    """The access token the fake minted for this app at the code exchange."""
    tokens = [
        t for t, grant in world.bc.store(STORE_HASH).tokens.items() if grant.client_id == CLIENT_ID
    ]
    assert len(tokens) == 1
    return tokens[0]


async def pre_create(world: World, path: str, bodies: list[dict[str, Any]]) -> None:
    """Fill the fake store through its API with this app's client (to hit BigCommerce limits)."""
    world.bc.add_token(
        STORE_HASH, "other-token-of-this-app", client_id=CLIENT_ID, scopes=set(SCOPES.split())
    )
    for body in bodies:
        answer = await world.rt.http.post(
            f"http://bc.test/stores/{STORE_HASH}{path}",
            json=body,
            headers={"X-Auth-Token": "other-token-of-this-app"},
        )
        assert answer.status_code == 200, answer.text


# --- OAuth install -----------------------------------------------------------------------


async def test_install_exchanges_the_code_with_the_exact_fields_and_provisions_the_store(
    world: World, panel: httpx.AsyncClient
) -> None:
    """/bc/auth posts the seven fields to /oauth2/token, seals the token, installs snippet and hooks."""
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    world.rt.http.event_hooks["request"].append(record)
    code = world.bc.issue_oauth_code(
        STORE_HASH,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uri=f"{PUBLIC_URL}/bc/auth",
        scope=SCOPES,
    )
    answer = await panel.get(
        "/bc/auth", params={"code": code, "scope": SCOPES, "context": f"stores/{STORE_HASH}"}
    )

    assert answer.status_code == 303 and answer.headers["location"] == "/bc/settings"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    for attribute in (
        "Max-Age=3600",
        "Path=/",
        "Secure",
        "HttpOnly",
        "SameSite=None",
        "Partitioned",
    ):
        assert f"; {attribute}" in cookie
    exchange = [r for r in sent if r.url.path == "/oauth2/token"]
    assert len(exchange) == 1 and str(exchange[0].url) == "http://bc.test/oauth2/token"
    assert json.loads(exchange[0].content) == {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "code": code,
        "scope": SCOPES,
        "context": f"stores/{STORE_HASH}",
        "grant_type": "authorization_code",
        "redirect_uri": f"{PUBLIC_URL}/bc/auth",
    }
    assert world.bc.oauth_codes == {}  # the fake accepted every field and burned the code

    row = await store_row(world)
    token = app_token(world)
    assert row["installed"] and row["source"] == "app" and row["scopes"] == SCOPES
    assert row["owner_email"] == "merchant@example.com" and row["currency"] == "USD"
    assert row["store_url"] == "https://shop.example.com"
    assert all(token not in str(value) for value in row.values())
    assert world.rt.vault.open(row["access_token_enc"]) == token
    users = await rows(world, store_users)
    assert [(u["user_id"], u["email"], u["is_owner"]) for u in users] == [
        (24654, "merchant@example.com", True)
    ]

    fake = world.bc.store(STORE_HASH)
    ours = [s for s in fake.scripts.values() if s["name"] == SCRIPT_NAME]
    assert (
        len(ours) == 1
        and ours[0]["api_client_id"] == CLIENT_ID
        and row["script_uuid"] == ours[0]["uuid"]
    )
    hooks = sorted((h["scope"], h["destination"], h["is_active"]) for h in fake.hooks.values())
    assert hooks == [
        ("store/app/uninstalled", HOOK_URL, True),
        ("store/channel/created", HOOK_URL, True),
        ("store/channel/updated", HOOK_URL, True),
        ("store/order/refund/created", HOOK_URL, True),
        ("store/order/statusUpdated", HOOK_URL, True),
    ]
    secret = world.rt.vault.open(row["webhook_secret_enc"])
    assert all(h["headers"] == {WEBHOOK_SECRET_HEADER: secret} for h in fake.hooks.values())

    page = await panel.get("/bc/settings")
    assert (
        page.status_code == 200 and "Test Shop" in page.text and "merchant@example.com" in page.text
    )


async def test_installing_again_changes_nothing_at_bigcommerce(
    world: World, panel: httpx.AsyncClient
) -> None:
    """A re-install (new code, e.g. after a scope change) keeps one snippet and two hooks."""
    assert (await install(world, panel)).status_code == 303
    first = await store_row(world)
    assert (await install(world, panel)).status_code == 303
    fake = world.bc.store(STORE_HASH)
    assert len([s for s in fake.scripts.values() if s["name"] == SCRIPT_NAME]) == 1
    assert len(fake.hooks) == 5  # one per provisioning.WEBHOOK_SCOPES
    assert (await store_row(world))["webhook_secret_enc"] == first["webhook_secret_enc"]


async def test_a_bad_code_shows_a_clear_page_and_installs_nothing(
    world: World, panel: httpx.AsyncClient
) -> None:
    """BigCommerce refusing the code: 400 page naming the step; no store row, nothing at BigCommerce."""
    answer = await panel.get(
        "/bc/auth",
        params={"code": "not-a-code", "scope": SCOPES, "context": f"stores/{STORE_HASH}"},
    )
    assert answer.status_code == 400
    assert "could not be installed" in answer.text
    assert (
        "exchanging the installation code" in answer.text
        and "Invalid authorization code" in answer.text
    )
    assert CLIENT_SECRET not in answer.text and "set-cookie" not in answer.headers
    assert await rows(world, stores) == []
    assert world.bc.store(STORE_HASH).scripts == {} and world.bc.store(STORE_HASH).hooks == {}


async def test_a_callback_without_context_is_refused(
    world: World, panel: httpx.AsyncClient
) -> None:
    answer = await panel.get("/bc/auth", params={"code": "x", "scope": SCOPES})
    assert answer.status_code == 400 and "stores/{hash}" in answer.text
    assert await rows(world, stores) == []


async def test_a_rejected_script_rolls_the_install_back(
    world: World, panel: httpx.AsyncClient
) -> None:
    """BigCommerce refusing the snippet (10-script limit): no store row, no hooks, the page says why."""
    await pre_create(
        world,
        "/v3/content/scripts",
        [
            {
                "name": f"other {n}",
                "kind": "src",
                "src": f"https://cdn.example.com/{n}.js",
                "location": "footer",
                "visibility": "storefront",
                "consent_category": "essential",
            }
            for n in range(10)
        ],
    )
    answer = await install(world, panel)
    assert answer.status_code == 502
    assert (
        "installing the storefront snippet" in answer.text
        and "Nothing was installed" in answer.text
    )
    assert await rows(world, stores) == [] and await rows(world, store_users) == []
    fake = world.bc.store(STORE_HASH)
    assert len(fake.scripts) == 10 and fake.hooks == {}


async def test_a_rejected_webhook_removes_the_snippet_it_had_created(
    world: World, panel: httpx.AsyncClient
) -> None:
    """A failure after the snippet was made: the snippet and the first hook are deleted again."""
    await pre_create(
        world,
        "/v3/hooks",
        [
            {
                "scope": "store/app/uninstalled",
                "destination": f"https://elsewhere.example.com/{n}",
                "is_active": True,
            }
            for n in range(10)
        ],
    )
    answer = await install(world, panel)
    assert answer.status_code == 502 and "registering the webhooks" in answer.text
    assert await rows(world, stores) == []
    fake = world.bc.store(STORE_HASH)
    assert [s for s in fake.scripts.values() if s["name"] == SCRIPT_NAME] == []
    assert [h for h in fake.hooks.values() if h["destination"] == HOOK_URL] == []
    assert len(fake.hooks) == 10


async def test_a_failed_reinstall_puts_the_previous_store_back(
    world: World, panel: httpx.AsyncClient
) -> None:
    """A store added with the CLI keeps its token and merchant when an app install fails."""
    await world.add_store()
    before = await store_row(world)
    await pre_create(
        world,
        "/v3/content/scripts",
        [
            {
                "name": f"other {n}",
                "kind": "src",
                "src": f"https://cdn.example.com/{n}.js",
                "location": "footer",
                "visibility": "storefront",
                "consent_category": "essential",
            }
            for n in range(10)
        ],
    )
    assert (await install(world, panel)).status_code == 502
    after = await store_row(world)
    assert after == before
    assert world.rt.vault.open(after["access_token_enc"]) == ACCESS_TOKEN


# --- signed callbacks --------------------------------------------------------------------


async def test_load_opens_the_settings_page_and_remembers_the_user(
    world: World, panel: httpx.AsyncClient
) -> None:
    await install(world, panel)
    panel.cookies.clear()
    html = await open_settings(panel, owner={"id": 24654, "email": "merchant@example.com"})
    assert "clerk@example.com" in html
    users = {u["user_id"]: (u["email"], u["is_owner"]) for u in await rows(world, store_users)}
    assert users == {24654: ("merchant@example.com", True), 42: ("clerk@example.com", False)}


async def test_a_load_link_opens_the_app_once(world: World, panel: httpx.AsyncClient) -> None:
    """The same signed_payload_jwt again (from a history, a log, a proxy) is refused; a fresh one works."""
    await install(world, panel)
    panel.cookies.clear()
    token = signed()
    first = await panel.get("/bc/load", params={"signed_payload_jwt": token})
    assert first.status_code == 303
    panel.cookies.clear()
    again = await panel.get("/bc/load", params={"signed_payload_jwt": token})
    assert again.status_code == 401 and "already used" in again.text
    assert "set-cookie" not in again.headers
    without_jti = await panel.get("/bc/load", params={"signed_payload_jwt": signed(jti=REMOVE)})
    assert without_jti.status_code == 401 and "no jti" in without_jti.text
    assert "clerk@example.com" in await open_settings(panel)
    async with world.rt.db.read() as conn:
        assert len((await conn.execute(select(used_jwts))).all()) == 2


def _tampered() -> str:
    header, _, signature = signed().split(".")
    claims = jwt.decode(signed(), options={"verify_signature": False})
    claims["sub"] = "stores/zzz999"
    body = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{header}.{body}.{signature}"


def _hs512() -> str:
    """Right secret, right claims, but not HS256 (PyJWT warns that the key is short for SHA-512)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return bc_jwt(
            secret=CLIENT_SECRET,
            algorithm="HS512",
            aud=CLIENT_ID,
            sub=f"stores/{STORE_HASH}",
            now=int(time.time()),
        )


BAD_TOKENS = {
    "expired": lambda: bc_jwt(
        secret=CLIENT_SECRET,
        aud=CLIENT_ID,
        sub=f"stores/{STORE_HASH}",
        now=int(time.time()) - 3 * 86400,
    ),
    "wrong audience": lambda: signed(aud="another-app"),
    "wrong secret": lambda: signed(secret="not-the-app-client-secret-at-all"),
    "tampered": _tampered,
    "alg none": lambda: jwt.encode(
        jwt.decode(signed(), options={"verify_signature": False}), None, algorithm="none"
    ),
    "HS512": _hs512,
    "other store": lambda: signed(sub="stores/zzz999"),
    "missing": lambda: "",
}


async def test_a_load_link_in_its_last_seconds_of_leeway_opens_the_app_once(
    world: World, panel: httpx.AsyncClient
) -> None:
    """Past exp but within the clock leeway a JWT is still accepted, so its jti must still be remembered."""
    await install(world, panel)
    panel.cookies.clear()
    day_ago = int(time.time()) - 86400
    token = signed(iat=day_ago, nbf=day_ago, exp=day_ago + 86390)  # exp was 10 s ago
    first = await panel.get("/bc/load", params={"signed_payload_jwt": token})
    assert first.status_code == 303
    panel.cookies.clear()
    again = await panel.get("/bc/load", params={"signed_payload_jwt": token})
    assert again.status_code == 401 and "already used" in again.text


@pytest.mark.parametrize("path", ["/bc/load", "/bc/uninstall", "/bc/remove_user"])
@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_bad_callback_jwts_answer_401_and_change_nothing(
    world: World, panel: httpx.AsyncClient, path: str, case: str
) -> None:
    await install(world, panel)
    await open_settings(panel)
    panel.cookies.clear()
    before = await snapshot(world)
    answer = await panel.get(path, params={"signed_payload_jwt": BAD_TOKENS[case]()})
    assert answer.status_code == 401, answer.text
    assert "set-cookie" not in answer.headers and "not valid" in answer.text
    assert await snapshot(world) == before


async def test_uninstall_forgets_secrets_and_jobs_but_keeps_payments(
    world: World, panel: httpx.AsyncClient
) -> None:
    await world.add_store()
    html = await open_settings(panel)
    assert "Recent payments" in html
    order = world.place_order("19.99")
    body = (await world.start(order)).json()
    await world.cp.pay(body["cashier_url"].rsplit("/", 1)[1])
    assert await world.cp.deliver_due() >= 1
    queued = await outbox.list_jobs(world.rt.db, state=outbox.QUEUED)
    assert queued, "the notification should have queued the order update"

    revoke_tokens(world.bc, STORE_HASH, client_id="sandbox-client-id")  # BigCommerce did uninstall it
    answer = await panel.get("/bc/uninstall", params={"signed_payload_jwt": signed()})
    assert answer.status_code == 200 and answer.text == "uninstalled"
    row = await store_row(world)
    assert not row["installed"] and row["uninstalled_at"] is not None
    for column in (
        "access_token_enc",
        "celerypay_secret_enc",
        "celerypay_old_secret_enc",
        "webhook_secret_enc",
    ):
        assert row[column] is None
    assert await outbox.list_jobs(world.rt.db, state=outbox.QUEUED) == []
    assert {j.state for j in await outbox.list_jobs(world.rt.db)} == {outbox.CANCELLED}
    assert len(await rows(world, payments)) == 1
    assert await rows(world, store_users) == []
    assert (await panel.get("/bc/settings")).status_code == 401  # the session died with the store
    again = await panel.get("/bc/uninstall", params={"signed_payload_jwt": signed()})
    assert again.status_code == 200 and again.text == "already uninstalled"
    load = await panel.get("/bc/load", params={"signed_payload_jwt": signed()})
    assert load.status_code == 401 and "not installed" in load.text

    # Installed and configured again: the stopped read-back of the notification runs, the order is paid.
    assert (await install(world, panel)).status_code in (200, 303)
    assert {j.state for j in await outbox.list_jobs(world.rt.db)} == {outbox.QUEUED}
    await stores_lib.configure_merchant(world.rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=MERCHANT_SECRET)
    await world.run_jobs()
    assert world.order(order["id"])["status_id"] == 11


async def test_remove_user_forgets_that_user_and_ends_their_session(
    world: World, panel: httpx.AsyncClient
) -> None:
    await world.add_store()
    await open_settings(panel)
    await open_settings(panel, user={"id": 77, "email": "other@example.com"})
    answer = await panel.get(
        "/bc/remove_user", params={"signed_payload_jwt": signed(user={"id": 77, "email": "x@y"})}
    )
    assert answer.status_code == 200 and answer.text == "user removed"
    assert [u["user_id"] for u in await rows(world, store_users)] == [42]
    denied = await panel.get("/bc/settings")  # this client's session belongs to user 77
    assert denied.status_code == 401 and "Your session has ended" in denied.text
    assert (await store_row(world))["installed"]


# --- the settings page ---------------------------------------------------------------------


def settings_form(csrf: str | None, **changes: str) -> dict[str, str]:
    form = {
        "merchant_id": MERCHANT_ID,
        "api_secret": MERCHANT_SECRET,
        "environment": "sandbox",
        "method_name": "OKCloud Pay",
        "paid_status_id": "10",
        "mismatch_status_id": "12",
        "on_expired": "cancel",
        "return_to": "bcpay",
        **changes,
    }
    if csrf is not None:
        form["csrf"] = csrf
    return form


def version_of(html: str) -> str:
    found = re.search(r'name="version" value="([0-9a-f]{16})"', html)
    assert found, "no settings version in the page"
    return found.group(1)


async def test_a_save_over_someone_elses_newer_save_is_refused_and_shows_what_is_stored(
    world: World, panel: httpx.AsyncClient
) -> None:
    """Two admins open the page; the second to save would put back every value the first changed.
    It is refused (409, nothing written) and shows the stored settings; saved again from there, it goes."""
    await world.add_store(configure=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=world.app),
                                 base_url="https://127.0.0.1:8000") as other:
        first_page = await open_settings(panel)
        second_page = await open_settings(other, user={"id": 99, "email": "z@example.com"})
        # Only the owner and users the owner allows may save (bcpay.roles): the owner allows the second admin.
        allowed = await panel.post("/bc/settings/users/99/access", data={"csrf": csrf_of(first_page), "allowed": "yes"})
        assert allowed.status_code == 303
        assert version_of(first_page) == version_of(second_page)
        # The second admin's typing mistake: the 400 page keeps the version they started from.
        typo = await other.post("/bc/settings", data={
            **settings_form(csrf_of(second_page), method_name=""), "version": version_of(second_page)})
        assert typo.status_code == 400 and version_of(typo.text) == version_of(second_page)
        first = await panel.post("/bc/settings", data={
            **settings_form(csrf_of(first_page), method_name="OKCloud Pay Now"), "version": version_of(first_page)})
        assert first.status_code == 303
        saved = await store_row(world)

        stale = await other.post("/bc/settings", data={
            **settings_form(csrf_of(typo.text), on_expired="keep"), "version": version_of(typo.text)})
        assert stale.status_code == 409 and "Someone changed these settings" in stale.text
        assert await store_row(world) == saved
        assert 'value="OKCloud Pay Now"' in stale.text and version_of(stale.text) != version_of(second_page)

        # A stale form is a conflict even when it no longer fits what is stored (merchant id changed,
        # no secret typed): 409, not "enter the API secret".
        from bcpay import stores as store_ops

        await store_ops.configure_merchant(world.rt, STORE_HASH, merchant_id="mch_OtherMerchant0001",
                                           api_secret="sk_test_" + "b" * 32, environment="sandbox")
        stale_again = await other.post("/bc/settings", data={
            **settings_form(csrf_of(stale.text), api_secret="", method_name="OKCloud Pay Now"),
            "version": version_of(stale.text)})
        assert stale_again.status_code == 409 and "Someone changed these settings" in stale_again.text
        stale = stale_again

        again = await other.post("/bc/settings", data={
            **settings_form(csrf_of(stale.text), merchant_id="mch_OtherMerchant0001", api_secret="",
                            method_name="OKCloud Pay Now", on_expired="keep"),
            "version": version_of(stale.text)})
        assert again.status_code == 303
    assert json.loads((await store_row(world))["settings_json"])["method_name"] == "OKCloud Pay Now"
    assert "on_expired" not in json.loads((await store_row(world))["settings_json"])  # "keep" is the default


async def test_a_save_that_cannot_change_the_environment_changes_nothing(
    world: World, panel: httpx.AsyncClient
) -> None:
    """The merchant id was kept but the secret was not (an uninstall clears it): all or nothing."""
    await world.add_store()
    async with world.rt.db.transaction() as conn:
        store = await q.require_store(conn, STORE_HASH)
        await q.update_store(conn, store.id, world.rt.now(), celerypay_secret_enc=None)
    before = await store_row(world)
    html = await open_settings(panel)
    form = settings_form(csrf_of(html), api_secret="", environment="production", method_name="Pay by CeleryPay")
    answer = await panel.post("/bc/settings", data=form)
    assert answer.status_code == 400 and "Enter the API secret" in answer.text
    assert await store_row(world) == before


async def test_the_page_is_framed_only_by_the_control_panel_and_sets_nothing_it_should_not(
    world: World, panel: httpx.AsyncClient
) -> None:
    await world.add_store(configure=False)
    await panel.get("/bc/load", params={"signed_payload_jwt": signed()})
    page = await panel.get("/bc/settings")
    csp = page.headers["content-security-policy"]
    assert (
        f"frame-ancestors https://store-{STORE_HASH}.mybigcommerce.com https://login.bigcommerce.com;"
        in csp
    )
    assert "script-src" not in csp and "default-src 'none'" in csp and "form-action 'self'" in csp
    assert page.headers["cache-control"] == "no-store"
    assert '<span id="secret-state" class="unset">not set</span>' in page.text
    assert "<script" not in page.text


def test_frame_ancestors_turns_bigcommerce_patterns_into_valid_csp_sources() -> None:
    patterns = (
        "https://store-*.mybigcommerce.com",
        "https://login.bigcommerce.com",
        "http://localhost:5000",
        "javascript:alert(1)",
        "https://*.example.com",
    )
    assert frame_ancestors(patterns, "abc123") == (
        "https://store-abc123.mybigcommerce.com https://login.bigcommerce.com http://localhost:5000 "
        "https://*.example.com"
    )
    assert frame_ancestors(patterns, None) == (
        "https://*.mybigcommerce.com https://login.bigcommerce.com http://localhost:5000 https://*.example.com"
    )
    assert frame_ancestors(("nonsense",), None) == "'none'"


async def test_saving_settings_with_the_csrf_token_stores_them_and_never_echoes_the_secret(
    world: World, panel: httpx.AsyncClient
) -> None:
    await world.add_store(configure=False)
    html = await open_settings(panel)
    answer = await panel.post("/bc/settings", data=settings_form(csrf_of(html)))
    assert answer.status_code == 303 and answer.headers["location"] == "/bc/settings?done=saved"
    row = await store_row(world)
    assert row["celerypay_merchant_id"] == MERCHANT_ID
    assert world.rt.vault.open(row["celerypay_secret_enc"]) == MERCHANT_SECRET
    assert json.loads(row["settings_json"]) == {
        "on_expired": "cancel",
        "paid_status_id": 10,
        "return_to": "bcpay",
        "unpaid_hold": 60,  # a new store's own hold, from when it was added
    }
    page = (await panel.get("/bc/settings?done=saved")).text
    assert "Settings saved." in page and '<span id="secret-state" class="set">set</span>' in page
    assert f"{MERCHANT_ID} accepted (sandbox)" in page  # CeleryPay took the new credentials
    assert MERCHANT_SECRET not in page and MERCHANT_SECRET[:12] not in page

    keep = await panel.post(
        "/bc/settings", data=settings_form(csrf_of(page), api_secret="", on_expired="keep")
    )
    assert keep.status_code == 303
    row = await store_row(world)
    assert world.rt.vault.open(row["celerypay_secret_enc"]) == MERCHANT_SECRET
    assert json.loads(row["settings_json"]) == {"paid_status_id": 10, "return_to": "bcpay", "unpaid_hold": 60}


@pytest.mark.parametrize("token", [None, "", "forged.token", "other-session"])
async def test_a_post_without_a_valid_csrf_token_is_403_and_changes_nothing(
    world: World, panel: httpx.AsyncClient, token: str | None
) -> None:
    await world.add_store(configure=False)
    html = await open_settings(panel)
    if token == "other-session":
        transport = httpx.ASGITransport(app=world.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="https://127.0.0.1:8000"
        ) as other:
            token = csrf_of(await open_settings(other, user={"id": 99, "email": "z@example.com"}))
    assert csrf_of(html) != token
    before = await snapshot(world)
    for path, extra in (
        ("/bc/settings", settings_form(token)),
        ("/bc/settings/provision", {}),
        ("/bc/settings/refund", {"payment_id": "1"}),
        ("/bc/settings/anomalies/1/resolve", {}),
        ("/bc/settings/revoke-old-secret", {}),
    ):
        form = {**extra, **({"csrf": token} if token is not None else {})}
        answer = await panel.post(path, data=form)
        assert answer.status_code == 403, (path, answer.text)
        assert "Nothing was changed" in answer.text
    assert await snapshot(world) == before


async def test_the_old_secret_can_be_revoked_from_the_page_before_its_grace_ends(
    world: World, panel: httpx.AsyncClient
) -> None:
    """After a rotation the page says until when the previous secret is accepted and offers to stop it;
    the POST (CSRF-checked like every form) ends the grace, and a notification signed with it is a 401."""
    await world.add_store()
    html = await open_settings(panel)
    assert "Stop accepting the previous CeleryPay secret" not in html  # nothing to revoke yet
    new_secret = "n" * 40
    world.cp.add_merchant(MERCHANT_ID, new_secret, old_secret=MERCHANT_SECRET)
    await stores_lib.configure_merchant(world.rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=new_secret)
    html = (await panel.get("/bc/settings")).text
    assert 'id="old-secret"' in html and "Stop accepting the previous CeleryPay secret now" in html
    event = {"id": "evt_oldsecret00001", "object": "event", "type": "payment.succeeded",
             "created_at": "2026-11-25T19:10:02Z", "data": {}}
    answer = await panel.post("/bc/settings/revoke-old-secret", data={"csrf": csrf_of(html)})
    assert answer.status_code == 303 and answer.headers["location"] == "/bc/settings?done=old_secret_revoked"
    row = await store_row(world)
    assert row["celerypay_old_secret_enc"] is None and row["celerypay_old_secret_until"] is None
    assert world.rt.vault.open(row["celerypay_secret_enc"]) == new_secret
    refused = await world.notify(event, secret=MERCHANT_SECRET)
    assert refused.status_code == 401
    page = (await panel.get("/bc/settings?done=old_secret_revoked")).text
    assert "no longer accepted" in page and "Stop accepting" not in page
    again = await panel.post("/bc/settings/revoke-old-secret", data={"csrf": csrf_of(page)})
    assert again.status_code == 409 and "No previous CeleryPay secret" in again.text


async def test_a_session_cookie_that_is_not_ascii_is_refused_like_any_bad_one(
    world: World, panel: httpx.AsyncClient
) -> None:
    await world.add_store(configure=False)
    for value in ("é.abc", "abc.é", "\u00ff" * 40 + ".x"):
        cookie = f"{COOKIE_NAME}={value}".encode("latin-1")  # as a browser may send it: bytes, not ASCII
        answer = await panel.get("/bc/settings", headers={"Cookie": cookie})
        assert answer.status_code == 401, (value, answer.status_code)


async def test_a_post_without_a_session_is_401(world: World, panel: httpx.AsyncClient) -> None:
    await world.add_store(configure=False)
    html = await open_settings(panel)
    panel.cookies.clear()
    answer = await panel.post("/bc/settings", data=settings_form(csrf_of(html)))
    assert answer.status_code == 401
    assert (await store_row(world))["celerypay_merchant_id"] is None


async def test_invalid_input_shows_the_error_and_keeps_what_was_typed_but_the_secret(
    world: World, panel: httpx.AsyncClient
) -> None:
    await world.add_store(configure=False)
    html = await open_settings(panel)
    answer = await panel.post(
        "/bc/settings",
        data=settings_form(csrf_of(html), merchant_id="mch_short", method_name="Pay Later"),
    )
    assert answer.status_code == 400
    assert "merchant id must be mch_" in answer.text and 'value="mch_short"' in answer.text
    assert 'value="Pay Later"' in answer.text and MERCHANT_SECRET not in answer.text
    row = await store_row(world)
    assert row["celerypay_merchant_id"] is None and json.loads(row["settings_json"]) == {"unpaid_hold": 60}


async def paid_payment(world: World, total: str = "19.99") -> dict[str, Any]:
    order = world.place_order(total)
    body = (await world.start(order)).json()
    await world.cp.pay(body["cashier_url"].rsplit("/", 1)[1])
    await world.cp.deliver_due()
    await world.run_jobs()
    return order


async def test_a_refund_needs_a_confirmation_then_refunds_at_celerypay(
    world: World, panel: httpx.AsyncClient
) -> None:
    await world.add_store()
    order = await paid_payment(world)
    html = await open_settings(panel)
    assert f'href="https://shop.example.com/manage/orders/{order["id"]}"' in html
    payment_id = (await rows(world, payments))[0]["id"]

    ask = await panel.post(
        "/bc/settings/refund",
        data={"csrf": csrf_of(html), "payment_id": str(payment_id), "amount": "5.00"},
    )
    assert ask.status_code == 200
    assert f"Refund 5.00 USD of order #{order['id']}?" in ask.text
    assert world.cp.refunds == {}  # nothing happens before the confirmation
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', ask.text))
    assert fields["confirm"] == "yes" and fields["csrf"] != csrf_of(html)

    done = await panel.post("/bc/settings/refund", data=fields)
    assert done.status_code == 303 and done.headers["location"] == "/bc/settings?done=refunded"
    refunds = list(world.cp.refunds.values())
    assert [(r["amount"], r["currency"], r["status"]) for r in refunds] == [
        (500, "USD", "succeeded")
    ]

    too_much = await panel.post(
        "/bc/settings/refund",
        data={"csrf": csrf_of(html), "payment_id": str(payment_id), "amount": "15.00"},
    )
    assert too_much.status_code == 400 and "You can refund between 0 and 14.99 USD" in too_much.text
    assert len(world.cp.refunds) == 1


async def test_a_settings_page_refund_is_written_to_the_ledger_and_listed_with_both_ids(
    world: World, panel: httpx.AsyncClient
) -> None:
    """A refund from the settings page lands in BigCommerce's ledger; the payments list shows bcpay's
    number, CeleryPay's refund id and BigCommerce's refund id."""
    await world.add_store()
    order = await paid_payment(world)
    html = await open_settings(panel)
    payment_id = (await rows(world, payments))[0]["id"]
    ask = await panel.post("/bc/settings/refund",
                           data={"csrf": csrf_of(html), "payment_id": str(payment_id), "amount": "5.00"})
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', ask.text))
    assert (await panel.post("/bc/settings/refund", data=fields)).status_code == 303
    await world.cp.deliver_due()  # refund.succeeded
    await world.run_jobs()
    [entry] = world.bc.store(STORE_HASH).refunds.values()
    [made] = world.cp.refunds.values()
    assert entry["order_id"] == order["id"] and entry["total_amount"] == 5.0
    page = await panel.get("/bc/settings")
    assert (f"Refund {STORE_HASH}-{order['id']}-1-r1: 5.00 USD succeeded, CeleryPay refund {made['id']}, "
            f"BigCommerce refund {entry['id']}") in page.text


async def test_a_refund_of_another_stores_payment_is_refused(
    world: World, panel: httpx.AsyncClient
) -> None:
    await world.add_store()
    html = await open_settings(panel)
    answer = await panel.post(
        "/bc/settings/refund", data={"csrf": csrf_of(html), "payment_id": "999", "confirm": "yes"}
    )
    assert answer.status_code == 404 and "does not belong to this store" in answer.text
    assert world.cp.refunds == {}


async def test_open_anomalies_are_listed_and_resolved(
    world: World, panel: httpx.AsyncClient
) -> None:
    await world.add_store()
    order = await paid_payment(world)
    payment = (await rows(world, payments))[0]
    async with world.rt.db.transaction() as conn:
        await q.record_anomaly(
            conn,
            store_id=payment["store_id"],
            order_id=order["id"],
            payment_id=payment["id"],
            kind="double_payment",
            amount=1999,
            currency="USD",
            detail="paid twice",
            now=world.rt.now(),
        )
    html = await open_settings(panel)
    anomaly_id = (await rows(world, anomalies))[0]["id"]
    assert "double payment" in html and f"/bc/settings/anomalies/{anomaly_id}/resolve" in html

    missing = await panel.post(
        f"/bc/settings/anomalies/{anomaly_id + 1}/resolve", data={"csrf": csrf_of(html)}
    )
    assert missing.status_code == 404
    answer = await panel.post(
        f"/bc/settings/anomalies/{anomaly_id}/resolve",
        data={"csrf": csrf_of(html), "note": "refunded by hand"},
    )
    assert answer.status_code == 303
    row = (await rows(world, anomalies))[0]
    assert row["state"] == "resolved" and row["detail"].endswith(
        "by clerk@example.com: refunded by hand"
    )
    assert "Open anomalies" not in (await panel.get("/bc/settings")).text


async def test_an_anomaly_of_a_refund_still_in_doubt_is_not_resolved_from_the_page(
    world: World, panel: httpx.AsyncClient
) -> None:
    """The page's Resolve would leave the refund in doubt with nothing pointing at it: an error, unchanged."""
    from sqlalchemy import insert

    from bcpay.storage.schema import REFUND_IN_DOUBT, REFUND_IN_DOUBT_ANOMALY, refunds

    await world.add_store()
    order = await paid_payment(world)
    payment = (await rows(world, payments))[0]
    async with world.rt.db.transaction() as conn:
        await conn.execute(insert(refunds).values(
            payment_id=payment["id"], merchant_refund_no="abc123-1-r1", idempotency_key="k", amount=1999,
            currency="USD", status=REFUND_IN_DOUBT, created_at=world.rt.now(), updated_at=world.rt.now()))
        await q.record_anomaly(conn, store_id=payment["store_id"], order_id=order["id"], payment_id=payment["id"],
                               kind=REFUND_IN_DOUBT_ANOMALY, amount=1999, currency="USD", detail="in doubt",
                               now=world.rt.now())
    html = await open_settings(panel)
    anomaly_id = (await rows(world, anomalies))[0]["id"]
    answer = await panel.post(f"/bc/settings/anomalies/{anomaly_id}/resolve", data={"csrf": csrf_of(html)})
    assert answer.status_code == 409 and "refund-resolve" in answer.text
    assert (await rows(world, anomalies))[0]["state"] == "open"


async def test_the_fix_button_reactivates_webhooks_bigcommerce_switched_off(
    world: World, panel: httpx.AsyncClient
) -> None:
    await install(world, panel)
    for hook in world.bc.store(STORE_HASH).hooks.values():
        hook["is_active"] = False
    html = (await panel.get("/bc/settings")).text
    assert "switched off by BigCommerce" in html and "Fix snippet and webhooks" in html
    answer = await panel.post("/bc/settings/provision", data={"csrf": csrf_of(html)})
    assert answer.status_code == 303
    assert all(h["is_active"] for h in world.bc.store(STORE_HASH).hooks.values())
    page = (await panel.get(answer.headers["location"])).text
    assert (
        "Storefront snippet and webhooks are in place." in page
        and "Fix snippet and webhooks" not in page
    )


async def test_health_checks_that_fail_show_in_the_panel(
    world: World, panel: httpx.AsyncClient
) -> None:
    """BigCommerce refusing the token does not break the page; the control-panel fix steps show."""
    await world.add_store()
    world.bc.store(STORE_HASH).payment_methods.clear()
    html = html_lib.unescape(await open_settings(panel))
    assert 'no enabled payment method is named "OKCloud Pay"' in html
    assert "Under Offline payment methods, enable one method" in html
    world.bc.store(STORE_HASH).tokens.clear()
    page = await panel.get("/bc/settings")
    assert page.status_code == 200
    assert page.text.count("could not check: BigCommerce GET") == 4  # snippet, webhooks, method, stock


async def test_the_panel_shows_one_health_line_per_storefront_channel(
    world: World, panel: httpx.AsyncClient
) -> None:
    """A second storefront: its line shows on the settings page, and its drift names that channel's repair."""
    from bcpay.sandbox.bc_channels import add_channel
    from bcpay.scopes import CHANNEL_SCOPES

    add_channel(world.bc, STORE_HASH, name="Outlet", url="https://outlet.example.com")
    await install(world, panel, scope=" ".join((SCOPES, *CHANNEL_SCOPES)))
    html = html_lib.unescape(await open_settings(panel))
    assert "Channel 1 (Test Shop)</strong>: snippet installed and current" in html
    assert "Channel 2 (Outlet)</strong>: snippet installed and current" in html
    [two] = [s for s in world.bc.store(STORE_HASH).scripts.values() if s["channel_id"] == 2]
    two["enabled"] = False
    html = html_lib.unescape((await panel.get("/bc/settings")).text)
    assert "Channel 2 (Outlet)</strong>: snippet installed but disabled" in html and "Fix snippet and webhooks" in html
    [offline] = [m for m in world.bc.store(STORE_HASH).payment_methods if m.offline]
    offline.channels = {1}
    world.bc.create_order(STORE_HASH, total="5.00", channel_id=1)
    world.bc.create_order(STORE_HASH, total="5.00", channel_id=2)
    html = html_lib.unescape((await panel.get("/bc/settings")).text)
    assert "is not offered at this channel's checkout" in html and "for the Outlet storefront" in html
    answer = await panel.post("/bc/settings/provision", data={"csrf": csrf_of(html)})
    assert answer.status_code == 303 and two["enabled"] is True


# --- sessions -------------------------------------------------------------------------------


def test_sessions_are_signed_expire_and_bind_csrf_tokens() -> None:
    now = [1_800_000_000.0]
    signer = SessionSigner("k" * 44, clock=lambda: now[0])
    value, session = signer.issue("abc123", 42)
    assert signer.read(value) == session and session.expires == 1_800_003_600
    other = SessionSigner("j" * 44, clock=lambda: now[0])
    with pytest.raises(SignatureError, match="bad signature"):
        other.read(value)
    payload, mac = value.split(".")
    with pytest.raises(SignatureError, match="bad signature"):
        signer.read(payload[:-2] + "AA." + mac)
    token = signer.csrf_token(session)
    signer.check_csrf(session, token)
    _, second = signer.issue("abc123", 42)
    with pytest.raises(SignatureError, match="does not match this session"):
        signer.check_csrf(second, token)
    now[0] += 3600
    with pytest.raises(SignatureError, match="session has expired"):
        signer.read(value)


async def test_renaming_the_payment_method_updates_the_snippet(
    world: World, panel: httpx.AsyncClient
) -> None:
    """The script tag carries the method name, so saving a new name re-installs it at once."""
    await install(world, panel)
    html = (await panel.get("/bc/settings")).text
    form = settings_form(
        csrf_of(html),
        method_name="Pay by CeleryPay",
        paid_status_id="11",
        on_expired="keep",
        return_to="confirmation",
    )
    answer = await panel.post("/bc/settings", data=form)
    assert answer.status_code == 303
    assert json.loads((await store_row(world))["settings_json"]) == {
        "method_name": "Pay by CeleryPay", "unpaid_hold": 60,
    }
    ours = [s for s in world.bc.store(STORE_HASH).scripts.values() if s["name"] == SCRIPT_NAME]
    assert len(ours) == 1 and 'data-method-name="Pay by CeleryPay"' in ours[0]["html"]
    page = html_lib.unescape((await panel.get("/bc/settings")).text)
    assert "<strong>Storefront snippet</strong>: installed and current" in page


@pytest.mark.parametrize("payment_id", ["", "abc", "-1", "99999999999"])
async def test_a_malformed_payment_id_is_a_400(
    world: World, panel: httpx.AsyncClient, payment_id: str
) -> None:
    await world.add_store()
    html = await open_settings(panel)
    answer = await panel.post(
        "/bc/settings/refund", data={"csrf": csrf_of(html), "payment_id": payment_id}
    )
    assert answer.status_code == 400 and "Choose a payment to refund." in answer.text


async def test_a_failed_reauthorisation_keeps_the_new_token_of_this_app(
    world: World, panel: httpx.AsyncClient
) -> None:
    """An app store re-accepting changed scopes: BigCommerce revoked the old token, so the new one stays."""
    assert (await install(world, panel)).status_code in (200, 303)
    first = world.rt.vault.open((await store_row(world))["access_token_enc"])
    fake = world.bc.store(STORE_HASH)
    for key in [k for k, s in fake.scripts.items() if s["name"] == SCRIPT_NAME]:
        del fake.scripts[key]  # the snippet must be created again, and the store is at its limit
    await pre_create(world, "/v3/content/scripts", [
        {"name": f"other {n}", "kind": "src", "src": f"https://cdn.example.com/{n}.js", "location": "footer",
         "visibility": "storefront", "consent_category": "essential"} for n in range(10)])
    known = set(fake.tokens)
    assert (await install(world, panel)).status_code == 502
    row = await store_row(world)
    token = world.rt.vault.open(row["access_token_enc"])
    assert row["installed"] and token != first and {token} == set(fake.tokens) - known


async def test_an_uninstall_by_webhook_also_ends_the_users_sessions(
    world: World, panel: httpx.AsyncClient
) -> None:
    from bcpay import stores as stores_lib

    await install(world, panel)
    await open_settings(panel)
    assert await rows(world, store_users) != []
    await stores_lib.uninstall(world.rt, STORE_HASH)  # what store/app/uninstalled does
    assert await rows(world, store_users) == []
    assert (await panel.get("/bc/settings")).status_code == 401


async def test_credentials_celerypay_refuses_are_not_saved_from_the_settings_page(
    world: World, panel: httpx.AsyncClient
) -> None:
    """CeleryPay is asked before the secret is stored: a wrong one is a clear error and changes nothing."""
    await world.add_store(configure=False)
    html = await open_settings(panel)
    before = await store_row(world)
    answer = await panel.post("/bc/settings", data=settings_form(
        csrf_of(html), api_secret="wrong-secret-but-long-enough-000000000000"))
    assert answer.status_code == 400 and "CeleryPay refused these credentials" in answer.text
    assert await store_row(world) == before
