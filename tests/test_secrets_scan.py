"""No secret in plain text anywhere after a realistic run: logs, answers, CLI output, database.

The secrets: the BigCommerce access tokens (a store-level one and one minted by
the OAuth install), the CeleryPay merchant secret, the app's client secret,
``app.secret_key`` and the store's webhook secret. Encrypted columns hold
Fernet tokens, which never contain the plain value, so a plain substring
search over everything is the test; the control tests prove that search finds
a leak when there is one.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from bcpay.cli import app as cli_app
from bcpay.crypto import Vault
from bcpay.sandbox.bigcommerce import create_bigcommerce_api
from bcpay.storage.db import Database
from bcpay.storage.schema import metadata, payments, stores
from tests.builders import bc_jwt
from tests.loopback import ServerThread
from tests.world import ACCESS_TOKEN, MERCHANT_SECRET, PUBLIC_URL, STORE_HASH, World, open_world

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from reliability_lib import Run, Scenario

CLIENT_ID = "app-client-id"
CLIENT_SECRET = "app-client-secret-for-secrets-scan-0123456789"
SCOPES = "store_v2_orders store_v2_content store_v2_information_read_only store_payments_methods_read"
FOREIGN_CART = "00000000-0000-4000-8000-000000000000"

Texts = list[tuple[str, str]]


def find_leaks(secrets: Mapping[str, str], texts: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """(where, which secret) for every text holding a secret, plain or URL-encoded."""
    found = []
    for where, text in texts:
        for name, value in secrets.items():
            if value and (value in text or quote(value, safe="") in text):
                found.append((where, name))
    return found


async def database_texts(url: str) -> Texts:
    """Every value of every column of every table, as text."""
    db = Database(url)
    texts: Texts = []
    try:
        async with db.read() as conn:
            for table in metadata.sorted_tables:
                for row in (await conn.execute(select(table))).mappings():
                    texts += [(f"db {table.name}.{column}", str(value)) for column, value in row.items()]
    finally:
        await db.dispose()
    return texts


async def webhook_secret(url: str, key: str) -> str:
    """The store's webhook secret, opened from its encrypted column."""
    db = Database(url)
    try:
        async with db.read() as conn:
            sealed = (await conn.execute(select(stores.c.webhook_secret_enc))).scalar_one()
    finally:
        await db.dispose()
    return Vault(key).open(sealed)


def test_the_scan_finds_a_planted_secret_and_nothing_else() -> None:
    """Control: a text containing a secret (plain or URL-encoded) is a hit; a masked one is not."""
    secrets = {"token": "tok/123+abc"}
    texts = [("plain", "X-Auth-Token: tok/123+abc"), ("encoded", "?t=tok%2F123%2Babc"), ("masked", "tok/***")]
    assert find_leaks(secrets, texts) == [("plain", "token"), ("encoded", "token")]


def log_texts(records: Iterable[logging.LogRecord]) -> Texts:
    """Each log record as a handler would write it, traceback included."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return [(f"log {r.name}", formatter.format(r)) for r in records]


class Answers:
    """Every answer bcpay gave during the run (status, headers, body)."""

    def __init__(self) -> None:
        self.texts: Texts = []

    def keep(self, label: str, response: httpx.Response) -> httpx.Response:
        self.texts.append((f"answer {label}", f"{response.status_code} {dict(response.headers)} {response.text}"))
        return response


async def drive_world(w: World, answers: Answers) -> None:
    """Pay orders and provoke every kind of refusal, as shoppers, CeleryPay, BigCommerce and staff would."""
    keep = answers.keep
    # A paid order, its notification delivered twice, its status polled.
    order = w.place_order("19.99")
    started = keep("start", await w.start(order)).json()
    payment_id = started["cashier_url"].rsplit("/", 1)[1]
    await w.cp.pay(payment_id)
    event = w.events_of(payment_id)[-1]
    keep("notify", await w.notify(event))
    keep("notify again", await w.notify(event))
    await w.run_jobs()
    keep("status", await w.status(started["token"]))
    # Forged, replayed and misdirected notifications.
    keep("bad signature", await w.notify(event, secret="not-the-secret-" * 3))
    keep("replayed", await w.notify(event, timestamp=int(time.time()) - 3600))
    keep("unknown store", await w.client.post("/notify/celerypay/zzz999", content=b"{}"))
    # A shopper with someone else's cart, a foreign origin, an order already paid.
    other = w.place_order("5.00")
    keep("wrong cart", await w.start(other, cart_id=FOREIGN_CART))
    keep("foreign origin", await w.client.post(
        "/api/v1/payments", json={"store_hash": STORE_HASH, "order_id": other["id"], "cart_id": other["cart_id"]},
        headers={"Origin": "https://evil.example"}))
    keep("already paid", await w.start(order))
    # CeleryPay down while a payment starts; BigCommerce down while the paid status is written.
    w.cp.fail_next(3, status=503)  # the world's client tries 3 times
    keep("celerypay down", await w.start(other))
    third = w.place_order("7.50")
    body = keep("start third", await w.start(third)).json()
    await w.cp.pay(body["cashier_url"].rsplit("/", 1)[1])
    w.bc.chaos.error_rate = 1.0
    await w.cp.deliver_due()
    await w.run_jobs()
    w.bc.chaos.error_rate = 0.0
    # BigCommerce webhooks without, with a wrong and with the right secret.
    hook = {"scope": "store/order/statusUpdated", "hash": "h1", "producer": f"stores/{STORE_HASH}",
            "data": {"type": "order", "id": order["id"]}}
    keep("webhook no secret", await w.client.post(f"/webhooks/bigcommerce/{STORE_HASH}", json=hook))
    keep("webhook wrong secret", await w.client.post(f"/webhooks/bigcommerce/{STORE_HASH}", json=hook,
                                                     headers={"X-Bcpay-Secret": "guessed"}))
    right = await webhook_secret(w.settings.database.url, w.settings.app.secret_key.get())
    keep("webhook", await w.client.post(f"/webhooks/bigcommerce/{STORE_HASH}", json=hook,
                                        headers={"X-Bcpay-Secret": right}))
    await w.run_jobs()
    # The app: OAuth install (mints a new token), a forged and a real load, the settings page.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=w.app), base_url="https://127.0.0.1:8000") as panel:
        code = w.bc.issue_oauth_code(STORE_HASH, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
                                     redirect_uri=f"{PUBLIC_URL}/bc/auth", scope=SCOPES)
        keep("install", await panel.get("/bc/auth", params={"code": code, "scope": SCOPES,
                                                            "context": f"stores/{STORE_HASH}"}))
        now = int(time.time())
        forged = bc_jwt(secret="x" * 40, now=now, aud=CLIENT_ID, sub=f"stores/{STORE_HASH}")
        keep("forged load", await panel.get("/bc/load", params={"signed_payload_jwt": forged}))
        real = bc_jwt(secret=CLIENT_SECRET, now=now, aud=CLIENT_ID, sub=f"stores/{STORE_HASH}")
        keep("load", await panel.get("/bc/load", params={"signed_payload_jwt": real}))
        keep("settings", await panel.get("/bc/settings"))
    keep("metrics", await w.client.get("/metrics"))


def cli_outputs(config: Path) -> Texts:
    """What operators see from the commands that show stores, payments, events, jobs and health."""
    commands = [
        ["stores", "show", STORE_HASH], ["stores", "list", "--json"], ["stores", "list"], ["doctor", STORE_HASH],
        ["payments", "list", "--json"], ["events", "list", "--json"], ["jobs", "list", "--json"],
        ["anomalies", "list", "--json"], ["--debug", "stores", "show", "nosuch1"],
    ]
    texts: Texts = []
    for args in commands:
        result = CliRunner().invoke(cli_app, ["--config", str(config), *args], env={"COLUMNS": "200"})
        output = f"{result.exit_code} {result.stdout} {result.stderr} {result.exception!r}"
        texts.append((f"cli {' '.join(args)}", output))
    return texts


def write_config(path: Path, *, db_url: str, secret_key: str, bc_url: str, cp_url: str) -> Path:
    """A bcpay.toml pointing the CLI at the run's database and loopback fakes."""
    path.write_text(
        f'[app]\npublic_url = "{PUBLIC_URL}"\nsecret_key = "{secret_key}"\nclient_id = "{CLIENT_ID}"\n'
        f'client_secret = "{CLIENT_SECRET}"\n[database]\nurl = "{db_url}"\n'
        f'[bigcommerce]\napi_url = "{bc_url}"\nlogin_url = "{bc_url}"\n'
        f'[celerypay]\napi_url = "{cp_url}"\nsandbox_api_url = "{cp_url}"\n', encoding="utf-8")
    return path


async def test_no_secret_in_logs_answers_cli_output_or_database(
    sqlite_url: str, secret_key: str, caplog: Any, tmp_path: Path
) -> None:
    """Payments, forged notifications, webhooks, app install, outages: every trace is free of secrets."""
    caplog.set_level(logging.DEBUG)
    answers = Answers()
    async with open_world(sqlite_url, secret_key, app={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}) as w:
        await w.add_store()
        await drive_world(w, answers)
        minted = [t for t in w.bc.store(STORE_HASH).tokens if t != ACCESS_TOKEN]
        servers = ServerThread()
        try:
            config = write_config(tmp_path / "bcpay.toml", db_url=sqlite_url, secret_key=secret_key,
                                  bc_url=servers.start(create_bigcommerce_api(w.bc)), cp_url=servers.start(w.cp.app))
            cli = await asyncio.to_thread(cli_outputs, config)
        finally:
            servers.close()
    hook_secret = await webhook_secret(sqlite_url, secret_key)
    secrets = {"store-level access token": ACCESS_TOKEN, "CeleryPay merchant secret": MERCHANT_SECRET,
               "app client secret": CLIENT_SECRET, "app.secret_key": secret_key, "webhook secret": hook_secret}
    secrets.update({f"minted access token {n}": token for n, token in enumerate(minted)})
    db = await database_texts(sqlite_url)
    logs = log_texts(caplog.records)
    everything = [*logs, *answers.texts, *cli, *db]

    assert find_leaks(secrets, everything) == []
    # What was scanned is what matters: the run produced it, and the secrets sit encrypted in it.
    assert len(minted) == 1 and len(logs) > 50
    assert {label for label, _ in answers.texts} >= {"answer bad signature", "answer settings", "answer install"}
    assert all(text.startswith("0 ") for where, text in cli if "nosuch1" not in where and "doctor" not in where), cli
    sealed = {where: text for where, text in db if where.endswith("_enc") and text != "None"}
    vault = Vault(secret_key)
    assert vault.open(sealed["db stores.access_token_enc"]) == minted[0]
    assert vault.open(sealed["db stores.celerypay_secret_enc"]) == MERCHANT_SECRET
    assert find_leaks(secrets, [("opened", vault.open(sealed["db stores.access_token_enc"]))]) != []


async def test_no_secret_in_the_logs_or_database_of_real_server_processes(tmp_path: Path) -> None:
    """The reliability machinery at debug log level, reconcile included: server and CLI logs are clean."""
    scenario = Scenario(name="secrets", orders=12, database="sqlite", servers=1, workers=1, seed=11,
                        reconcile_at=(0.5,), poll=True, log_level="debug", drain_timeout=30)
    run = Run(scenario, say=lambda _: None, workdir=tmp_path)
    result = await run.execute()
    assert result.ok and result.paid > 0, result.notes
    db_url = f"sqlite:///{tmp_path / 'bcpay.db'}"
    creds = run.creds
    secrets = {"access token": creds.access_token, "merchant secret": creds.merchant_secret,
               "client secret": creds.client_secret, "app.secret_key": creds.secret_key,
               "webhook secret": await webhook_secret(db_url, creds.secret_key)}
    logs = [(f"file {p.name}", p.read_text(errors="replace")) for p in sorted(tmp_path.glob("*.log"))]
    assert find_leaks(secrets, [*logs, *await database_texts(db_url)]) == []
    serve_log = dict(logs)["file serve-0.log"]
    assert "POST /notify/celerypay/" in serve_log and "checked" in dict(logs)["file reconcile.log"]
    # A payment's token opens its pay page and status: the shoppers' polls never write it to a log.
    tokens = {f"payment token {n}": token for n, token in enumerate(await payment_tokens(db_url))}
    assert len(tokens) >= scenario.orders and "GET /api/v1/payments/{token} 200" in serve_log
    assert find_leaks(tokens, logs) == []


async def payment_tokens(url: str) -> list[str]:
    """Every payment attempt's public token."""
    db = Database(url)
    try:
        async with db.read() as conn:
            return list((await conn.execute(select(payments.c.token))).scalars())
    finally:
        await db.dispose()
