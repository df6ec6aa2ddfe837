"""The ``bcpay`` commands end to end: CliRunner, loopback fakes, real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from sqlalchemy import select, text
from typer.testing import CliRunner, Result

from bcpay import payflow
from bcpay.cli import app
from bcpay.cli_common import Amount, AsciiFloat, AsciiInt
from bcpay.config import Settings, load_settings
from bcpay.crypto import Vault, generate_key
from bcpay.errors import ConfigError, ConflictError
from bcpay.runtime import open_runtime
from bcpay.sandbox.bc_state import FakeBigCommerce
from bcpay.sandbox.bigcommerce import create_bigcommerce_api
from bcpay.sandbox.celerypay import FakeCeleryPay
from bcpay.server.app import create_app
from bcpay.storage import migrate
from bcpay.storage import queries as q
from bcpay.storage.db import Database
from bcpay.storage.records import StoreRecord
from bcpay.storage.schema import events, jobs, payments, refunds, stores
from bcpay.stores import settings_version, update_settings
from tests.loopback import ServerThread, Switch, reserve_socket, url_of
from tests.test_cli_docs import COMMANDS

STORE_HASH = "abc123"
STORE_URL = "https://shop.example.com"
ACCESS_TOKEN = "bc-access-token-for-cli-tests-0001"
MERCHANT_ID = "mch_CliTestMerchant000001"
MERCHANT_SECRET = "cli-merchant-secret-0123456789abcdef-XYZ"
SCOPES = "store_v2_orders store_v2_content store_v2_information_read_only store_payments_methods_read"


@dataclass
class Servers:
    """The loopback fakes, shared by the module (their state is swapped per test)."""

    thread: ServerThread
    bc_switch: Switch
    cp_switch: Switch
    bc_url: str
    cp_url: str


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    thread = ServerThread()
    bc_switch, cp_switch = Switch(), Switch()
    found = Servers(thread, bc_switch, cp_switch, thread.start(bc_switch), thread.start(cp_switch))
    yield found
    thread.close()


@dataclass
class Env:
    """One test's world: fresh fakes, a config file, a database, and the CLI."""

    servers: Servers
    bc: FakeBigCommerce
    cp: FakeCeleryPay
    config: Path
    db_url: str
    public_url: str
    secret_key: str
    bcpay_socket: Any
    started: list[str] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return load_settings(self.config, environ={})

    def cli(self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
        base: dict[str, str | None] = {"COLUMNS": "250", "BCPAY_ACCESS_TOKEN": None, "BCPAY_CELERYPAY_SECRET": None,
                                       "BCPAY_CONFIG": None}
        return CliRunner().invoke(app, ["--config", str(self.config), *args], input=input, env={**base, **(env or {})})

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self.cli(*args, **kwargs)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    def add_store(self) -> None:
        self.ok("stores", "add", STORE_HASH, "--scopes", SCOPES, env={"BCPAY_ACCESS_TOKEN": ACCESS_TOKEN})
        self.ok("stores", "configure", STORE_HASH, "--merchant-id", MERCHANT_ID,
                env={"BCPAY_CELERYPAY_SECRET": MERCHANT_SECRET})

    def start_bcpay(self) -> None:
        """Run the bcpay server at app.public_url (lifespan included, no background worker)."""
        self.started.append(self.servers.thread.start(create_app(self.settings), lifespan="on", sock=self.bcpay_socket))

    def query(self, statement: Any) -> list[dict[str, Any]]:
        async def go() -> list[dict[str, Any]]:
            db = Database(self.db_url)
            try:
                async with db.read() as conn:
                    return [dict(r) for r in (await conn.execute(statement)).mappings()]
            finally:
                await db.dispose()

        return asyncio.run(go())

    def start_payment(self, total: str = "19.99") -> tuple[dict[str, Any], str]:
        """An order with a pending CeleryPay payment, started as the snippet would."""
        order = self.bc.create_order(STORE_HASH, total=Decimal(total))

        async def go() -> str:
            async with open_runtime(self.settings) as rt:
                view = await payflow.start_payment(rt, STORE_HASH, order["id"], order["cart_id"])
            assert view.cashier_url is not None
            return view.cashier_url.rsplit("/", 1)[1]

        return order, asyncio.run(go())

    def paid_order(self, total: str = "19.99") -> tuple[dict[str, Any], str]:
        """An order paid at CeleryPay and recorded as paid by bcpay (order update still queued)."""
        order, pid = self.start_payment(total)
        asyncio.run(self.cp.pay(pid))

        async def go() -> None:
            async with open_runtime(self.settings) as rt:
                async with rt.db.read() as conn:
                    store = await q.require_store(conn, STORE_HASH)
                    [attempt] = await q.order_attempts(conn, store.id, order["id"])
                await payflow.refresh(rt, store, attempt, force=True)

        asyncio.run(go())
        return order, pid

    def status_puts(self, order_id: int) -> list[dict[str, Any]]:
        return [b for (h, oid, b) in self.bc.put_log if h == STORE_HASH and oid == order_id and "status_id" in b]


@pytest.fixture
def env(servers: Servers, db_url: str, secret_key: str, tmp_path: Path) -> Iterator[Env]:
    bc = FakeBigCommerce()
    bc.add_store(STORE_HASH, secure_url=STORE_URL, name="Test Shop", access_token=ACCESS_TOKEN)
    cp = FakeCeleryPay()
    cp.add_merchant(MERCHANT_ID, MERCHANT_SECRET)
    servers.bc_switch.app, servers.cp_switch.app = create_bigcommerce_api(bc), cp.app
    servers.bc_switch.calls.clear()
    servers.cp_switch.calls.clear()
    sock = reserve_socket()
    public_url = url_of(sock)
    config = tmp_path / "bcpay.toml"
    config.write_text(f"""
[app]
public_url = "{public_url}"
secret_key = "{secret_key}"
[database]
url = "{db_url}"
[bigcommerce]
api_url = "{servers.bc_url}"
login_url = "{servers.bc_url}"
max_retries = 2
[celerypay]
api_url = "{servers.cp_url}"
sandbox_api_url = "{servers.cp_url}"
max_retries = 1
[server]
run_worker = false
[payments]
status_poll_interval = 0
""")
    world = Env(servers, bc, cp, config, db_url, public_url, secret_key, sock)
    yield world
    for url in world.started:
        servers.thread.stop(url)
    sock.close()


def one_error_line(result: Result, text: str, *, code: int = 1) -> None:
    """Exit ``code`` (1: failed; 2: wrong input) with exactly one ``Error:`` line on stderr, no traceback."""
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], result.stderr
    assert "Traceback" not in result.output


# --- stores -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "text"),
    [(["--expires-in", "10"], "expires_in"), (["--on-expired", "delete"], "on_expired"),
     (["--environment", "staging"], "sandbox or production"),
     # A paid order Cancelled (the money kept), or left Awaiting Payment: statuses that hide a payment.
     (["--paid-status-id", "5"], "5 is not a status for a paid order"),
     (["--mismatch-status-id", "11"], "11 does not stop the order for a person"),
     (["--unpaid-hold", "43201"], "unpaid_hold: 0 (keep unpaid orders) to 43200 minutes")],
)
def test_stores_configure_with_one_bad_value_changes_nothing(env: Env, args: list[str], text: str) -> None:
    """Merchant, environment and settings are all checked before the secret prompt and the first write."""
    env.add_store()
    before = env.query(select(stores))
    other = "mch_OtherMerchant00001"
    result = env.cli("stores", "configure", STORE_HASH, "--merchant-id", other, "--environment", "production",
                     *args, env={"BCPAY_CELERYPAY_SECRET": "n" * 40})
    one_error_line(result, text, code=2)
    assert env.query(select(stores)) == before


def test_stores_configure_sets_the_unpaid_hold_and_zero_keeps_unpaid_orders(env: Env) -> None:
    """A new store's hold (the expiry plus 30 minutes) is its own; --unpaid-hold changes it, 0 included."""
    env.add_store()
    assert settings_of(env)[0] == {"unpaid_hold": 60}
    shown = shown_settings(env.ok("stores", "configure", STORE_HASH, "--unpaid-hold", "0"))
    assert shown["unpaid_hold"] == "0 (store)" and settings_of(env)[0] == {"unpaid_hold": 0}


def settings_of(env: Env) -> tuple[dict[str, Any], str]:
    """The store's overrides as stored, and the version a settings page opened now would carry."""
    [row] = env.query(select(stores))
    return json.loads(row["settings_json"]), settings_version(StoreRecord.from_row(row))


def shown_settings(result: Result) -> dict[str, str]:
    """``key: value (source)`` lines of ``stores configure`` by key."""
    return dict(line.strip().split(": ", 1) for line in result.stdout.splitlines()[1:])


def test_stores_configure_reset_puts_a_store_back_on_the_global_config(env: Env) -> None:
    """One override, then all of them, dropped: the store follows bcpay.toml / BCPAY_* again, and says so."""
    env.add_store()
    env.ok("stores", "configure", STORE_HASH, "--paid-status-id", "2", "--expires-in", "900",
           "--on-expired", "cancel")
    overrides, opened = settings_of(env)
    # unpaid_hold: the store's own since it was added (a new store's hold)
    assert overrides == {"paid_status_id": 2, "expires_in": 900, "on_expired": "cancel", "unpaid_hold": 60}

    result = env.ok("stores", "configure", STORE_HASH, "--reset", "paid_status_id", "--reset", "expires-in",
                    env={"BCPAY_PAYMENTS_PAID_STATUS_ID": "10"})
    shown = shown_settings(result)
    assert shown["paid_status_id"] == "10 (global)"  # the global value in force, from BCPAY_*
    assert shown["expires_in"] == "1800 (global)" and shown["on_expired"] == "cancel (store)"
    overrides, after = settings_of(env)
    assert overrides == {"on_expired": "cancel", "unpaid_hold": 60}
    assert after != opened  # a settings page opened before the reset cannot save over it
    with pytest.raises(ConflictError, match="changed since they were read"):
        asyncio.run(update_settings_as_of(env, opened))

    again = env.ok("stores", "configure", STORE_HASH, "--reset", "paid_status_id")  # idempotent
    assert shown_settings(again)["paid_status_id"] == "11 (global)"
    assert settings_of(env) == (overrides, after)  # nothing changed: a page opened since still saves

    everything = env.ok("stores", "configure", STORE_HASH, "--reset", "all")
    assert settings_of(env)[0] == {}
    assert "(store)" not in everything.stdout and shown_settings(everything)["accepted_methods"] == "OKCloud Pay (global)"
    assert len(shown_settings(everything)) == 12 and shown_settings(everything)["extra_origins"] == "- (global)"
    assert env.ok("stores", "configure", STORE_HASH, "--reset", "all").stdout == everything.stdout


async def update_settings_as_of(env: Env, version: str) -> None:
    """A settings-page save made from the page as it was at ``version``."""
    async with open_runtime(env.settings) as rt:
        await update_settings(rt, STORE_HASH, {"return_to": "bcpay"}, expected_version=version)


@pytest.mark.parametrize(
    ("args", "text"),
    [(["--reset", "paid_status"], "unknown store setting 'paid_status': expected all or one of method_name, "
                                  "accepted_methods, paid_status_id,"),
     (["--reset", ""], "unknown store setting ''"),
     (["--reset", "PAID_STATUS_ID"], "unknown store setting 'PAID_STATUS_ID'"),
     (["--reset", "päid_status_id"], "unknown store setting 'päid_status_id'"),
     (["--reset", "paid_status_id\n"], "unknown store setting 'paid_status_id\\n'"),
     (["--reset", "paid_status_id,expires_in"], "unknown store setting 'paid_status_id,expires_in'"),
     (["--reset", "x" * 100_000], "unknown store setting '" + "x" * 40 + "…'"),
     (["--reset", "all", "--reset", "bogus"], "unknown store setting 'bogus'"),
     (["--reset", "paid_status_id", "--paid-status-id", "2"], "paid_status_id: given a value and reset at once"),
     (["--reset", "all", "--expires-in", "900"], "expires_in: given a value and reset at once")],
)
def test_stores_configure_reset_of_an_unknown_setting_is_a_usage_error(
    env: Env, args: list[str], text: str
) -> None:
    """Exit 2 naming the valid settings, before any write; the name is shown short and escaped."""
    env.add_store()
    env.ok("stores", "configure", STORE_HASH, "--on-expired", "cancel")
    before = env.query(select(stores))
    result = env.cli("stores", "configure", STORE_HASH, *args)
    assert result.exit_code == 2, result.output
    assert text in " ".join(result.output.replace("│", " ").split()), result.output
    assert len(result.output) < 2000 and "Traceback" not in result.output
    assert env.query(select(stores)) == before


def test_stores_configure_reset_on_an_unknown_store_is_one_error_line(env: Env) -> None:
    one_error_line(env.cli("stores", "configure", "zzz999", "--reset", "all"), "unknown store 'zzz999'")
    one_error_line(env.cli("stores", "configure", "ZZZ-1", "--reset", "all"), "not a store hash", code=2)


def test_stores_add_configure_show_and_list_never_leak_secrets(env: Env) -> None:
    """The token and merchant secret are stored encrypted and never printed."""
    added = env.ok("stores", "add", STORE_HASH, "--scopes", SCOPES.replace(" ", ","),
                   env={"BCPAY_ACCESS_TOKEN": ACCESS_TOKEN})
    assert "Registered abc123: Test Shop (https://shop.example.com), currency USD." in added.stdout
    # The secret through the hidden prompt this time.
    env.ok("stores", "configure", STORE_HASH, "--merchant-id", MERCHANT_ID, "--environment", "sandbox",
           "--on-expired", "cancel", input=MERCHANT_SECRET + "\n")
    [row] = env.query(select(stores))
    assert row["access_token_enc"] and ACCESS_TOKEN not in row["access_token_enc"]
    assert Vault(env.secret_key).open(row["celerypay_secret_enc"]) == MERCHANT_SECRET
    assert json.loads(row["settings_json"]) == {"on_expired": "cancel", "unpaid_hold": 60}  # a new store's hold

    shown = [env.ok("stores", "show", STORE_HASH), env.ok("stores", "show", STORE_HASH, "--json"),
             env.ok("stores", "list"), env.ok("stores", "list", "--json")]
    for result in shown:
        assert ACCESS_TOKEN not in result.output and MERCHANT_SECRET not in result.output
    detail = json.loads(shown[1].stdout)
    assert detail["access_token"] == "set" and detail["celerypay_secret"] == "set"
    assert detail["merchant_id"] == MERCHANT_ID and detail["scopes"] == SCOPES.split()
    assert [s["store_hash"] for s in json.loads(shown[3].stdout)] == [STORE_HASH]


def test_stores_add_refuses_bad_input_and_changes_nothing(env: Env) -> None:
    """Malformed hash, wrong token, missing scopes: one red line, exit 2, no row; no token argument."""
    one_error_line(env.cli("stores", "add", "ABC-1", env={"BCPAY_ACCESS_TOKEN": ACCESS_TOKEN}), "not a store hash",
                   code=2)
    one_error_line(env.cli("stores", "add", STORE_HASH, env={"BCPAY_ACCESS_TOKEN": "wrong-token"}), "401", code=2)
    one_error_line(env.cli("stores", "add", STORE_HASH, "--scopes", "store_v2_orders",
                           env={"BCPAY_ACCESS_TOKEN": ACCESS_TOKEN}), "lacks scopes", code=2)
    assert env.cli("stores", "add", STORE_HASH, "--token", ACCESS_TOKEN).exit_code == 2
    assert env.cli("stores", "add", STORE_HASH, ACCESS_TOKEN).exit_code == 2
    assert env.query(select(stores)) == []


def test_unknown_store_bad_merchant_and_debug_traceback(env: Env) -> None:
    one_error_line(env.cli("stores", "show", "zzz999"), "unknown store 'zzz999'")
    one_error_line(env.cli("stores", "configure", "zzz999", "--merchant-id", MERCHANT_ID,
                           env={"BCPAY_CELERYPAY_SECRET": MERCHANT_SECRET}), "unknown store")
    one_error_line(env.cli("stores", "configure", STORE_HASH, "--merchant-id", "nope"), "merchant id must be mch_",
                   code=2)
    debug = CliRunner().invoke(app, ["--debug", "--config", str(env.config), "stores", "show", "zzz999"])
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "Error: unknown store" in debug.stderr
    assert env.cli("stores", "nosuch").exit_code == 2


def test_stores_remove_cleans_the_store_and_forgets_secrets(env: Env) -> None:
    env.add_store()
    env.ok("provision", STORE_HASH)
    removed = env.ok("stores", "remove", STORE_HASH, "--yes")
    assert "snippet: removed" in removed.stdout and "webhooks: 5 removed" in removed.stdout
    assert env.bc.store(STORE_HASH).scripts == {} and env.bc.store(STORE_HASH).hooks == {}
    [row] = env.query(select(stores))
    assert not row["installed"] and row["access_token_enc"] is None and row["celerypay_secret_enc"] is None


# --- provisioning -------------------------------------------------------------------------------


def test_provision_prints_control_panel_steps_until_the_method_is_renamed(env: Env) -> None:
    env.add_store()
    env.bc.store(STORE_HASH).payment_methods[0].name = "Pay in Store"
    first = env.cli("provision", STORE_HASH)
    assert first.exit_code == 1
    assert "✗ offline payment method" in first.stdout
    # The fake reports control_panel_base_url with "/manage" (real stores: the bare host); the link has it once.
    assert "Open https://shop.example.com/manage/settings/payment (Settings > Payments)." in first.stdout
    assert 'Set its display name to exactly "OKCloud Pay"' in first.stdout
    env.bc.store(STORE_HASH).payment_methods[0].name = "OKCloud Pay"
    second = env.ok("provision", STORE_HASH)
    assert "✓ storefront snippet: unchanged" in second.stdout
    assert "store/order/statusUpdated: unchanged" in second.stdout
    assert len(env.bc.store(STORE_HASH).scripts) == 1 and len(env.bc.store(STORE_HASH).hooks) == 5


def test_install_script_print_remove_and_never_duplicates(env: Env) -> None:
    env.add_store()
    printed = env.ok("install-script", STORE_HASH, "--print")
    assert 'integrity="sha384-' in printed.stdout and env.bc.store(STORE_HASH).scripts == {}
    assert "created" in env.ok("install-script", STORE_HASH).stdout
    assert "unchanged" in env.ok("install-script", STORE_HASH).stdout
    assert len(env.bc.store(STORE_HASH).scripts) == 1
    assert "removed" in env.ok("install-script", STORE_HASH, "--remove").stdout
    assert "absent" in env.ok("install-script", STORE_HASH, "--remove").stdout
    assert env.bc.store(STORE_HASH).scripts == {}
    assert env.cli("install-script", STORE_HASH, "--print", "--remove").exit_code == 2


def test_install_script_for_one_channel_and_doctor_lines_per_channel(env: Env) -> None:
    """A second storefront: doctor gives each channel its line and the repair names that channel only;
    `install-script --channel 2` reads the new channel first and asks nothing."""
    from bcpay.sandbox.bc_channels import add_channel

    env.add_store()
    env.ok("install-script", STORE_HASH)  # channel 1 only: the channels are read now
    add_channel(env.bc, STORE_HASH, name="Outlet", url="https://outlet.example.com")
    done = env.ok("install-script", STORE_HASH, "--channel", "2")
    assert done.stdout.strip() == f"storefront snippet on {STORE_HASH}: channel 2: created"
    scripts = sorted(s["channel_id"] for s in env.bc.store(STORE_HASH).scripts.values())
    assert scripts == [1, 2]
    [two] = [s for s in env.bc.store(STORE_HASH).scripts.values() if s["channel_id"] == 2]
    two["enabled"] = False
    report = json.loads(env.cli("doctor", STORE_HASH, "--json").stdout)
    lines = {c["name"]: c for c in report["checks"] if c["name"].startswith("channel ")}
    assert sorted(lines) == ["channel 1 (Test Shop)", "channel 2 (Outlet)"]
    assert lines["channel 1 (Test Shop)"]["ok"] and not lines["channel 2 (Outlet)"]["ok"]
    assert lines["channel 2 (Outlet)"]["fix"] == [f"bcpay install-script {STORE_HASH} --channel 2"]
    assert "updated" in env.ok("install-script", STORE_HASH, "--channel", "2").stdout
    assert two["enabled"] is True
    unknown = env.cli("install-script", STORE_HASH, "--channel", "9")
    assert unknown.exit_code == 1 and f"store {STORE_HASH} has no channel 9" in unknown.output
    for bad in ("0", "two", "２"):
        assert env.cli("install-script", STORE_HASH, "--channel", bad).exit_code == 2
    assert len(env.bc.store(STORE_HASH).scripts) == 2


def test_channels_list_and_configure_change_one_channels_snippet(env: Env) -> None:
    """`channels configure` keeps per-channel settings, rewrites that channel's snippet and records who did it;
    --no-method takes the snippet off that channel only; bad values change nothing."""
    from bcpay.sandbox.bc_channels import add_channel

    env.add_store()
    add_channel(env.bc, STORE_HASH, name="Outlet", url="https://outlet.example.com")
    listed = json.loads(env.ok("channels", "list", STORE_HASH, "--refresh", "--json").stdout)
    assert [(c["channel_id"], c["name"], c["status"]) for c in listed] == [
        (1, "Test Shop", "active"), (2, "Outlet", "active")]
    env.ok("install-script", STORE_HASH)
    done = env.ok("channels", "configure", STORE_HASH, "2", "--method-name", "Pay with OKCloud", "--lang", "zh")
    assert 'channel 2 (Outlet): {"lang": "zh", "method_name": "Pay with OKCloud"}' in done.stdout
    assert "channel 2: updated" in done.stdout
    scripts = {s["channel_id"]: s for s in env.bc.store(STORE_HASH).scripts.values()}
    assert "Pay with OKCloud" in scripts[2]["html"] and "Pay with OKCloud" not in scripts[1]["html"]
    for bad in (["--lang", "fr"], ["--clear", "colour"], []):
        failed = env.cli("channels", "configure", STORE_HASH, "2", *bad)
        assert failed.exit_code in (1, 2), failed.output
    assert "channel 2: removed" in env.ok("channels", "configure", STORE_HASH, "2", "--no-method").stdout
    assert sorted(s["channel_id"] for s in env.bc.store(STORE_HASH).scripts.values()) == [1]
    again = env.ok("channels", "configure", STORE_HASH, "2", "--clear", "offers")
    assert "channel 2: created" in again.stdout
    assert env.cli("channels", "configure", STORE_HASH, "7", "--lang", "en").exit_code == 1
    shown = json.loads(env.ok("channels", "list", STORE_HASH, "--json").stdout)
    assert shown[1]["settings"] == {"lang": "zh", "method_name": "Pay with OKCloud"}


def test_a_snippet_moved_out_of_the_essential_consent_category_is_reported_and_put_back(env: Env) -> None:
    """Script Manager lets a merchant change the category; behind a consent banner the snippet would not load."""
    env.add_store()
    env.ok("install-script", STORE_HASH)
    [script] = env.bc.store(STORE_HASH).scripts.values()
    script["consent_category"] = "analytics"
    report = json.loads(env.cli("doctor", STORE_HASH, "--json").stdout)
    [check] = [c for c in report["checks"] if c["name"] == "storefront snippet"]
    assert not check["ok"] and check["detail"].startswith('consent category is "analytics", not "essential"')
    assert check["fix"] == [f"bcpay install-script {STORE_HASH}"]
    assert "updated" in env.ok("install-script", STORE_HASH).stdout
    assert script["consent_category"] == "essential" and len(env.bc.store(STORE_HASH).scripts) == 1
    assert "unchanged" in env.ok("install-script", STORE_HASH).stdout


def test_doctor_says_celerypay_did_not_answer_rather_than_refused_the_credentials(env: Env) -> None:
    """A CeleryPay that is down says nothing about the credentials: no advice to configure them again."""
    env.add_store()

    async def down(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"error": {"code": "unavailable", "message": "down"}}'})

    env.servers.cp_switch.app = down
    report = json.loads(env.cli("doctor", STORE_HASH, "--json").stdout)
    [check] = [c for c in report["checks"] if c["name"] == "CeleryPay credentials"]
    assert not check["ok"] and check["detail"].startswith("CeleryPay did not answer (CeleryPay GET ")
    assert check["detail"].endswith("; not checked") and "stores configure" not in " ".join(check["fix"])
    env.servers.cp_switch.app = env.cp.app
    refused = env.cp  # a secret CeleryPay no longer knows: the credentials are the problem
    refused.add_merchant(MERCHANT_ID, "another-secret-0123456789abcdef-0123456789")
    report = json.loads(env.cli("doctor", STORE_HASH, "--json").stdout)
    [check] = [c for c in report["checks"] if c["name"] == "CeleryPay credentials"]
    assert check["detail"] == "CeleryPay refused them: invalid_signature"
    assert check["fix"] == [f"bcpay stores configure {STORE_HASH} --merchant-id {MERCHANT_ID}"]


def test_webhooks_register_is_idempotent_and_list_hides_the_secret(env: Env) -> None:
    env.add_store()
    assert env.ok("webhooks", "register", STORE_HASH).stdout.count(": created") == 5
    assert env.ok("webhooks", "register", STORE_HASH).stdout.count("unchanged") == 5
    listed = json.loads(env.ok("webhooks", "list", STORE_HASH, "--json").stdout)
    assert sorted(h["scope"] for h in listed) == [
        "store/app/uninstalled", "store/channel/created", "store/channel/updated", "store/order/refund/created",
        "store/order/statusUpdated"]
    assert all(h["destination"] == f"{env.public_url}/webhooks/bigcommerce/{STORE_HASH}" for h in listed)
    assert "X-Bcpay-Secret" not in env.ok("webhooks", "list", STORE_HASH).output
    assert "removed 5 webhook(s)" in env.ok("webhooks", "remove", STORE_HASH).stdout
    assert env.bc.store(STORE_HASH).hooks == {}


def test_doctor_exit_code_follows_the_checks(env: Env) -> None:
    env.add_store()
    failing = env.cli("doctor", STORE_HASH, "--json")
    assert failing.exit_code == 1
    report = json.loads(failing.stdout)
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert failed == {"public URL", "storefront snippet", "webhooks"}
    env.start_bcpay()
    env.ok("provision", STORE_HASH)
    healthy = env.ok("doctor")
    assert "All checks passed." in healthy.stdout and "✓ CeleryPay credentials" in healthy.stdout


def test_doctor_warns_of_a_misspelled_variable_naming_the_setting_not_the_value(env: Env) -> None:
    """BCPAY_PAYMENTS_PAID_STATUS (no _ID) is ignored by loading; doctor says which setting it meant,
    as a warning: the verdict (exit code, "ok") is the same as without the variable."""
    value = "value-that-may-be-a-secret-0042"
    without = env.cli("doctor", "--json")
    result = env.cli("doctor", "--json", env={"BCPAY_PAYMENTS_PAID_STATUS": value})
    assert result.exit_code == without.exit_code and value not in result.output
    assert json.loads(result.stdout)["ok"] == json.loads(without.stdout)["ok"]
    [check] = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "environment"]
    assert check["ok"] and check["detail"] == (
        "BCPAY_PAYMENTS_PAID_STATUS is not a bcpay setting and is ignored (did you mean BCPAY_PAYMENTS_PAID_STATUS_ID?)")
    assert "BCPAY_<SECTION>_<KEY>" in check["fix"][0]
    text = env.cli("doctor", env={"BCPAY_PAYMENTS_PAID_STATUS": value, "BCPAY_[red]X": "1"}).stdout
    assert "! environment: BCPAY_PAYMENTS_PAID_STATUS is not" in text and "BCPAY_[red]X is not" in text
    passing = json.loads(env.cli("doctor", "--json", env={"BCPAY_CELERYPAY_SECRET": "x"}).stdout)
    [clean] = [c for c in passing["checks"] if c["name"] == "environment"]
    assert clean["ok"] and clean["fix"] == [] and clean["detail"] == "no unknown BCPAY_* variables"


def test_doctor_says_how_the_bigcommerce_quota_is_paced(env: Env) -> None:
    """"auto": alone on SQLite (with what to set when several processes call BigCommerce), shared on
    PostgreSQL; "on" and "off" are reported as such on both."""

    def quota_detail(mode: str | None = None) -> str:
        extra = {"BCPAY_BIGCOMMERCE_SHARED_QUOTA": mode} if mode else {}
        report = json.loads(env.cli("doctor", "--json", env=extra).stdout)
        return next(str(c["detail"]) for c in report["checks"] if c["name"] == "BigCommerce quota")

    shared = "shared by every bcpay process through the database"
    if env.db_url.startswith("sqlite"):
        assert quota_detail().startswith("paced by each process alone (SQLite)")
        assert 'set bigcommerce.shared_quota = "on"' in quota_detail()
    else:
        assert quota_detail() == shared
    assert quota_detail("on") == shared
    assert quota_detail("off").startswith('paced by each process alone (bigcommerce.shared_quota = "off")')


# --- payments ---------------------------------------------------------------------------------------


def test_simulate_notify_applies_once_and_bad_signature_changes_nothing(env: Env) -> None:
    env.add_store()
    env.start_bcpay()
    bad_order, _ = env.start_payment("5.00")
    refused = env.cli("simulate-notify", str(bad_order["id"]), "--store", STORE_HASH, "--bad-signature")
    assert refused.exit_code == 0 and " 401 " in refused.stdout and "invalid_signature" in refused.stdout
    assert env.query(select(events)) == []
    assert {p["status"] for p in env.query(select(payments))} == {"pending"}

    order, pid = env.start_payment("19.99")
    sent = env.ok("simulate-notify", pid, "--repeat", "3")
    outcomes = [json.loads(line.strip().split(" ", 2)[2])["outcome"] for line in sent.stdout.splitlines()[1:]]
    assert outcomes == ["queued", "duplicate", "duplicate"]
    # A notification is a hint: CeleryPay says the payment is still pending, so nothing counts as paid.
    [attempt] = env.query(select(payments).where(payments.c.celerypay_id == pid))
    assert attempt["status"] == "pending" and attempt["outcome"] is None
    assert [j["kind"] for j in env.query(select(jobs))] == ["check_event"]

    [event] = json.loads(env.ok("events", "list", "--json").stdout)
    assert event["type"] == "payment.succeeded" and event["celerypay_payment_id"] == pid
    assert json.loads(env.ok("events", "show", event["event_id"]).stdout)["body"]["data"]["id"] == pid
    assert f"{event['event_id']}: stale" in env.ok("events", "replay", event["event_id"]).stdout
    assert len(env.query(select(jobs))) == 1
    asyncio.run(env.cp.pay(pid))  # now CeleryPay has the money: asked again, it says so
    assert f"{event['event_id']}: applied" in env.ok("events", "replay", event["event_id"], "--store",
                                                     STORE_HASH).stdout
    assert sorted(j["kind"] for j in env.query(select(jobs))) == ["check_event", "mark_paid"]
    one_error_line(env.cli("events", "replay", "evt_missing"), "no stored event")

    listed = json.loads(env.ok("payments", "list", "--store", STORE_HASH, "--status", "succeeded", "--json").stdout)
    assert [p["celerypay_id"] for p in listed] == [pid]
    shown = json.loads(env.ok("payments", "show", str(order["id"]), "--json").stdout)
    assert shown["status"] == "succeeded" and shown["events"][0]["event_id"] == event["event_id"]
    assert "token" not in shown and "cashier_url" not in shown
    assert "mark_paid" in env.ok("jobs", "list").stdout
    mismatch = env.cli("simulate-notify", str(bad_order["id"]), "--amount", "4.00", "--url", env.public_url + "/nope")
    assert mismatch.exit_code == 1 and " 404 " in mismatch.stdout

    # A production store takes real money: a forged capture signed with its real secret is refused.
    env.ok("stores", "configure", STORE_HASH, "--merchant-id", MERCHANT_ID, "--environment", "production",
           env={"BCPAY_CELERYPAY_SECRET": MERCHANT_SECRET})
    before = env.query(select(events))
    one_error_line(env.cli("simulate-notify", str(bad_order["id"]), "--store", STORE_HASH), "sandbox stores only")
    assert env.query(select(events)) == before
    assert {p["status"] for p in env.query(select(payments)) if p["celerypay_id"] != pid} == {"pending"}


def test_refund_partial_then_up_to_the_total_then_over_refund_rejected(env: Env) -> None:
    env.add_store()
    order, pid = env.paid_order("20.00")
    first = env.ok("refund", str(order["id"]), "--store", STORE_HASH, "--amount", "12.50", "--reason", "damaged", "--yes")
    assert f"refund {STORE_HASH}-{order['id']}-1-r1 of 12.50 USD" in first.stdout
    # The same command again (a dropped session, a retried script) would refund twice: refused.
    calls = len(env.servers.cp_switch.calls)
    one_error_line(env.cli("refund", str(order["id"]), "--store", STORE_HASH, "--amount", "12.50", "--yes"),
                   "a refund of 12.50 USD was asked for this payment")
    assert len(env.servers.cp_switch.calls) == calls
    env.ok("refund", str(order["id"]), "--store", STORE_HASH, "--amount", "7.50", "--yes")
    assert env.cp.payments[pid]["refunded_amount"] == 2000
    calls = len(env.servers.cp_switch.calls)
    one_error_line(env.cli("refund", str(order["id"]), "--store", STORE_HASH, "--amount", "0.01", "--yes",
                           "--again"), "nothing is left to refund", code=2)
    one_error_line(env.cli("refund", str(order["id"]), "--store", STORE_HASH, "--amount", "1.001", "--yes"),
                   "more decimals", code=2)
    assert len(env.servers.cp_switch.calls) == calls
    assert sorted(r["amount"] for r in env.query(select(refunds))) == [750, 1250]
    one_error_line(env.cli("refund", "999", "--store", STORE_HASH, "--yes"), "no OKCloud Pay payment to refund")


def test_refund_resolve_settles_a_refund_in_doubt_by_its_celerypay_id_or_frees_it(env: Env) -> None:
    """--made reads the refund from CeleryPay and records it, --not-made fails it; the anomaly then closes."""
    from bcpay.sandbox.celerypay_rules import RefundRequest

    env.add_store()
    order, pid = env.paid_order("20.00")
    r1, r2 = f"{STORE_HASH}-{order['id']}-1-r1", f"{STORE_HASH}-{order['id']}-1-r2"
    made = env.cp.create_refund(MERCHANT_ID, pid, RefundRequest(amount=500, merchant_refund_no=r1))
    env.cp.settle_refund(made)

    async def seed() -> None:  # two requests whose answers were lost, put in doubt a day later
        db = Database(env.db_url)
        async with db.transaction() as conn:
            store = await q.require_store(conn, STORE_HASH)
            [attempt] = await q.order_attempts(conn, store.id, order["id"])
            now = datetime.now(UTC)
            for number, amount in ((r1, 500), (r2, 700)):
                await conn.execute(refunds.insert().values(
                    payment_id=attempt.id, merchant_refund_no=number, idempotency_key=f"k-{number}", amount=amount,
                    currency="USD", status="in_doubt", created_at=now - timedelta(days=1), updated_at=now))
            await q.record_anomaly(conn, store_id=store.id, order_id=order["id"], payment_id=attempt.id,
                                   kind="refund_in_doubt", amount=1200, currency="USD", detail="lost", now=now)
        await db.dispose()

    asyncio.run(seed())
    assert env.cli("refund-resolve", r1, "--store", STORE_HASH).exit_code == 2
    assert env.cli("refund-resolve", r1, "--store", STORE_HASH, "--made", made.id, "--not-made").exit_code == 2
    assert "refund_in_doubt" in env.ok("anomalies", "list").stdout

    assert f"refund {r1} of 5.00 USD: succeeded (CeleryPay {made.id})" in env.ok(
        "refund-resolve", r1, "--store", STORE_HASH, "--made", made.id).stdout
    assert json.loads(env.ok("anomalies", "list", "--json").stdout) != []  # r2 is still in doubt
    assert f"refund {r2} of 7.00 USD: failed (CeleryPay -)" in env.ok(
        "refund-resolve", r2, "--store", STORE_HASH, "--not-made").stdout

    assert {r["merchant_refund_no"]: r["status"] for r in env.query(select(refunds))} == {r1: "succeeded", r2: "failed"}
    assert json.loads(env.ok("anomalies", "list", "--json").stdout) == []
    one_error_line(env.cli("refund-resolve", r2, "--store", STORE_HASH, "--not-made"),
                   f"has no refund in doubt numbered '{r2}'")


def test_reconcile_counts_the_orders_the_unpaid_hold_cancelled(env: Env) -> None:
    """An abandoned order cancelled by the worker's sweep: reconcile says how many, in text and JSON."""
    from datetime import UTC, datetime, timedelta

    from bcpay import reconcile
    from bcpay.effects import Worker

    env.add_store()
    order = env.bc.create_order(STORE_HASH, total=Decimal("5.00"), created=datetime.now(UTC) - timedelta(hours=2))

    async def sweep() -> None:
        async with open_runtime(env.settings) as rt:
            await Worker(rt).sweep()
            await reconcile.run_jobs(rt)

    asyncio.run(sweep())
    assert [p["status_id"] for p in env.status_puts(order["id"])] == [5]
    lines = env.ok("reconcile", STORE_HASH, "--since", "1d").stdout.splitlines()
    assert lines == [f"{STORE_HASH}: checked 0 orders: nothing to report; fixed 0.",
                     f"{STORE_HASH}: 1 order(s) cancelled unpaid after the store's hold (payments.unpaid_hold)."]
    report = json.loads(env.ok("reconcile", STORE_HASH, "--json").stdout)["reports"][0]
    assert report["cancelled_unpaid"] == 1 and report["findings"] == []


def test_reconcile_fix_applies_a_lost_payment_exactly_once(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.add_store()
    order, pid = env.start_payment("19.99")
    asyncio.run(env.cp.pay(pid))  # the notification is never delivered
    first = json.loads(env.ok("reconcile", STORE_HASH, "--fix", "--json").stdout)
    [finding] = first["reports"][0]["findings"]
    assert (finding["kind"], finding["order_id"], finding["fixed"]) == ("paid_not_applied", order["id"], True)
    second = json.loads(env.ok("reconcile", STORE_HASH, "--fix", "--json").stdout)
    assert [f["fixed"] for f in second["reports"][0]["findings"]] == [False]
    assert [j["kind"] for j in env.query(select(jobs))] == ["mark_paid"]
    monkeypatch.setattr("bcpay.cli_ops.TABLE_LIMIT", 0)  # past the table: one plain line per finding
    lines = env.ok("reconcile", STORE_HASH).stdout.splitlines()
    assert lines[0].split("  ")[:4] == ["paid_not_applied", str(order["id"]), "19.99 USD", pid]
    assert lines[1] == f"{STORE_HASH}: checked 1 orders: 1 paid_not_applied; fixed 0."
    third = env.ok("reconcile", "--all", "--fix", "--run-jobs")
    assert "ran 1 outbox job(s)" in third.stdout
    assert env.ok("reconcile", STORE_HASH).stdout.strip().endswith("nothing to report; fixed 0.")
    assert [p["status_id"] for p in env.status_puts(order["id"])] == [11]
    assert env.cli("reconcile").exit_code == 2
    assert env.cli("reconcile", STORE_HASH, "--run-jobs").exit_code == 2
    one_error_line(env.cli("reconcile", STORE_HASH, "--since", "soon"), "not a duration", code=2)


def test_pay_link_for_an_order_that_never_reached_the_cashier(env: Env) -> None:
    env.add_store()
    order = env.bc.create_order(STORE_HASH, total=Decimal("9.99"))
    link = env.ok("pay-link", str(order["id"]), "--store", STORE_HASH).stdout.strip()
    assert link.startswith(f"{env.public_url}/pay/")
    assert env.ok("pay-link", str(order["id"]), "--store", STORE_HASH).stdout.strip() == link
    one_error_line(env.cli("pay-link", "424242", "--store", STORE_HASH), "no such order")
    assert env.cli("pay-link", "abc", "--store", STORE_HASH).exit_code == 2
    # An order that can no longer be paid gets no link, even with an attempt already open.
    env.bc.set_order_status(STORE_HASH, order["id"], 5)
    one_error_line(env.cli("pay-link", str(order["id"]), "--store", STORE_HASH), "not awaiting payment")
    paid, _pid = env.paid_order("5.00")
    one_error_line(env.cli("pay-link", str(paid["id"]), "--store", STORE_HASH), "already paid")


# --- events, jobs, anomalies -------------------------------------------------------------------------


def test_anomalies_jobs_and_event_prune(env: Env) -> None:
    env.add_store()
    order, pid = env.paid_order("10.00")

    async def seed() -> None:
        db = Database(env.db_url)
        async with db.transaction() as conn:
            store = await q.require_store(conn, STORE_HASH)
            [attempt] = await q.order_attempts(conn, store.id, order["id"])
            now = datetime.now(UTC)
            await q.record_anomaly(conn, store_id=store.id, order_id=order["id"], payment_id=attempt.id,
                                   kind="double_payment", amount=1000, currency="USD", detail="second capture", now=now)
            await q.record_event(conn, event_id="evt_old", store_id=store.id, type_="payment.succeeded",
                                 celerypay_payment_id=pid, raw_body="{}", outcome="applied",
                                 now=now - timedelta(days=120))
            await conn.execute(jobs.update().values(state="dead", last_error="boom"))
        await db.dispose()

    asyncio.run(seed())
    [anomaly] = json.loads(env.ok("anomalies", "list", "--json").stdout)
    assert (anomaly["kind"], anomaly["amount"], anomaly["celerypay_id"]) == ("double_payment", 1000, pid)
    assert "10.00 USD" in env.ok("anomalies", "list").stdout
    env.ok("anomalies", "resolve", str(anomaly["id"]), "--note", "refunded by hand")
    assert json.loads(env.ok("anomalies", "list", "--json").stdout) == []
    assert "refunded by hand" in json.loads(env.ok("anomalies", "list", "--all", "--json").stdout)[0]["detail"]
    one_error_line(env.cli("anomalies", "resolve", str(anomaly["id"])), "no open anomaly")

    [dead] = json.loads(env.ok("jobs", "list", "--state", "dead", "--json").stdout)
    one_error_line(env.cli("jobs", "retry", "9999"), "no dead job")
    assert "queued 1 job(s)" in env.ok("jobs", "retry", str(dead["id"])).stdout
    assert json.loads(env.ok("jobs", "list", "--state", "queued", "--json").stdout)[0]["id"] == dead["id"]
    assert env.cli("jobs", "retry").exit_code == 2

    # A job that can never succeed: given up on, still listed, no longer dead (doctor stops counting it).
    async def kill_again() -> None:
        db = Database(env.db_url)
        async with db.transaction() as conn:
            await conn.execute(jobs.update().where(jobs.c.id == dead["id"]).values(state="dead"))
        await db.dispose()

    asyncio.run(kill_again())
    one_error_line(env.cli("jobs", "discard", "9999"), "no dead job")
    assert "discarded 1 job(s)" in env.ok("jobs", "discard", str(dead["id"])).stdout
    assert [j["id"] for j in json.loads(env.ok("jobs", "list", "--state", "discarded", "--json").stdout)] == [dead["id"]]
    assert json.loads(env.ok("jobs", "list", "--state", "dead", "--json").stdout) == []
    assert "queued 0 job(s)" in env.ok("jobs", "retry", "--all").stdout  # a discarded job stays discarded
    assert env.cli("jobs", "discard").exit_code == 2

    one_error_line(env.cli("events", "prune", "--older-than", "7d"), "at least 30 days", code=2)
    assert "deleted 0 event(s) older than 150 days" in env.ok("events", "prune", "--older-than", "150d").stdout
    kept = env.ok("events", "prune", env={"BCPAY_OUTBOX_EVENT_RETENTION_DAYS": "130"})  # the setting is the default
    assert "deleted 0 event(s) older than 130 days" in kept.stdout
    assert "deleted 1 event(s) older than 90 days" in env.ok("events", "prune").stdout
    assert env.query(select(events.c.event_id)) == []


@pytest.mark.parametrize(
    ("url", "text"),
    [("sqlite:////nonexistent-dir/bcpay.db", "database error: unable to open database file"),
     ("postgresql://postgres@127.0.0.1:1/bcpay", "Connect call failed")],
)
def test_an_unreachable_database_is_one_error_line_not_a_traceback(
    tmp_path: Path, secret_key: str, url: str, text: str
) -> None:
    config = tmp_path / "bcpay.toml"
    config.write_text(f'[app]\nsecret_key = "{secret_key}"\n[database]\nurl = "{url}"\n')
    for args in (["jobs", "list"], ["payments", "list"], ["events", "prune"]):
        one_error_line(CliRunner().invoke(app, ["--config", str(config), *args]), text)
    no_folder = CliRunner().invoke(app, ["--config", str(config), "sandbox", "--db", "/nonexistent-dir/x.db"])
    assert no_folder.exit_code == 2 and "the folder /nonexistent-dir does not exist" in no_folder.output
    # serve checks before uvicorn starts (inside its start-up this was a traceback and exit 3)
    one_error_line(CliRunner().invoke(app, ["--config", str(config), "serve"]), "the database does not answer")


# --- keys, database, processes ---------------------------------------------------------------------


def test_keygen_and_rotate_key_reencrypt_everything(env: Env) -> None:
    env.add_store()
    new_key = env.ok("keygen").stdout.strip()
    assert Vault(new_key)  # a valid key
    empty = env.cli("rotate-key", "--new-key-env", "BCPAY_NEW_KEY")
    assert empty.exit_code == 2 and "--new-key-env" in empty.output and "$BCPAY_NEW_KEY is empty" in empty.output
    assert env.cli("rotate-key", new_key).exit_code == 2
    before = env.query(select(stores))[0]
    rotated = env.ok("rotate-key", "--new-key-env", "BCPAY_NEW_KEY", env={"BCPAY_NEW_KEY": new_key})
    assert "re-encrypted 1 access tokens" in rotated.stdout and "re-encrypted 1 merchant secrets" in rotated.stdout
    assert "re-encrypted 1 webhook secrets" in rotated.stdout
    # The key itself is never printed; its fingerprint tells the operator which key to set.
    assert new_key not in rotated.stdout and hashlib.sha256(new_key.encode()).hexdigest()[:12] in rotated.stdout
    [row] = env.query(select(stores))
    assert row["access_token_enc"] != before["access_token_enc"]
    assert Vault(new_key).open(row["access_token_enc"]) == ACCESS_TOKEN
    assert Vault(new_key).open(row["celerypay_secret_enc"]) == MERCHANT_SECRET
    assert Vault(new_key).open(row["webhook_secret_enc"]) == Vault(env.secret_key).open(before["webhook_secret_enc"])
    with pytest.raises(ConfigError):
        Vault(env.secret_key).open(row["access_token_enc"])
    # The prompt path: hidden, typed twice.
    again = generate_key()
    env.ok("rotate-key", input=f"{again}\n{again}\n",
           env={"BCPAY_APP_SECRET_KEY": new_key})
    assert Vault(again).open(env.query(select(stores))[0]["celerypay_secret_enc"]) == MERCHANT_SECRET


def test_db_upgrade_prints_revisions(tmp_path: Path, secret_key: str) -> None:
    config = tmp_path / "bcpay.toml"
    config.write_text(f'[app]\nsecret_key = "{secret_key}"\n[database]\nurl = "sqlite:///{tmp_path}/new.db"\n')
    runner = CliRunner()
    first = runner.invoke(app, ["--config", str(config), "db", "upgrade"])
    assert first.exit_code == 0 and f"(empty) -> {migrate.head_revision()}" in first.stdout
    second = runner.invoke(app, ["--config", str(config), "db", "upgrade"])
    assert second.exit_code == 0 and "already current" in second.stdout


def test_db_upgrade_refuses_a_schema_from_a_newer_bcpay(env: Env, newer_schema: Callable[[str | None], None]) -> None:
    """An old binary's `bcpay db upgrade` after the new one's: one line saying so, no Alembic traceback."""
    newer_schema(migrate.head_revision())
    one_error_line(env.cli("db", "upgrade"), "schema (9999) is from a newer bcpay than this one "
                   f"(which knows up to {migrate.head_revision()} and can still run on it): "
                   "there is nothing here to upgrade")
    newer_schema(None)
    refused = env.cli("db", "upgrade")
    one_error_line(refused, "schema (9999) is from a newer bcpay")
    assert "can still run" not in refused.stderr
    assert env.query(select(text("version_num")).select_from(text("alembic_version"))) == [{"version_num": "9999"}]


def test_doctor_calls_a_newer_schema_that_accepts_this_code_newer_but_compatible(
    env: Env, newer_schema: Callable[[str | None], None]
) -> None:
    """The schema line passes (the other checks still run); a schema that needs a newer bcpay fails it."""
    head = migrate.head_revision()

    def schema_check() -> dict[str, Any]:
        report = json.loads(env.cli("doctor", "--json").stdout)
        [check] = [c for c in report["checks"] if c["name"] == "schema"]
        return {"names": [c["name"] for c in report["checks"]], **check}

    newer_schema(head)
    compatible = schema_check()
    assert compatible["ok"] and compatible["detail"] == (
        f"newer but compatible: 9999 is from a newer bcpay and accepts this one ({head}) from revision {head} on; "
        "upgrade this host when you can")
    assert "public URL" in compatible["names"]
    newer_schema("9999")
    refused = schema_check()
    assert not refused["ok"] and refused["detail"] == f"from a newer bcpay: 9999 needs a newer bcpay than this one ({head})"
    assert refused["fix"] == ["Run the bcpay release that migrated the database."]
    assert refused["names"][-1] == "schema"


def test_serve_and_worker_refuse_to_start_without_a_secret_key(tmp_path: Path) -> None:
    config = tmp_path / "bcpay.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    for command in ("serve", "worker"):
        result = CliRunner().invoke(app, ["--config", str(config), command], env={"BCPAY_APP_SECRET_KEY": None})
        one_error_line(result, "app.secret_key: required")


def test_sandbox_hands_its_options_to_the_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bcpay.sandbox import runner

    seen: dict[str, Any] = {}
    monkeypatch.setattr(runner, "main", lambda **kwargs: seen.update(kwargs))
    result = CliRunner().invoke(app, ["sandbox", "--port-base", "8800", "--db", str(tmp_path / "s.db"),
                                      "--notify-delay", "1.5", "--chaos", "--open"], env={"BCPAY_CONFIG": None})
    assert result.exit_code == 0, result.output
    assert {k: v for k, v in seen.items() if k != "settings"} == {
        "port_base": 8800, "db": str(tmp_path / "s.db"), "notify_delay": 1.5, "chaos": True, "open_browser": True,
        "unpaid_hold": None}
    assert isinstance(seen["settings"], Settings)
    result = CliRunner().invoke(app, ["sandbox", "--unpaid-hold", "1"], env={"BCPAY_CONFIG": None})
    assert result.exit_code == 0, result.output
    assert seen["unpaid_hold"] == 1


def _bcpay_process(args: list[str], config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {**{k: v for k, v in os.environ.items() if not k.startswith("BCPAY_")}, **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "bcpay", "--config", str(config), *args], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _healthz(server: subprocess.Popen[str], port: int) -> httpx.Response:
    """GET /healthz of a starting ``bcpay serve`` as soon as it answers (20 s at most)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.TransportError:
            assert server.poll() is None and time.monotonic() < deadline, server.communicate()
            time.sleep(0.1)


def test_serve_runs_the_app_factory_and_worker_stops_on_sigterm(tmp_path: Path, secret_key: str) -> None:
    """Real processes: `serve` answers /healthz on a migrated SQLite database; `worker` exits 0 on SIGTERM."""
    sock = reserve_socket()
    port = sock.getsockname()[1]
    sock.close()
    config = tmp_path / "bcpay.toml"
    config.write_text(f'[app]\nsecret_key = "{secret_key}"\n[database]\nurl = "sqlite:///{tmp_path}/s.db"\n'
                      f'[server]\nport = {port}\nrun_worker = false\n')
    server = _bcpay_process(["serve"], config)
    try:
        assert _healthz(server, port).json() == {"status": "ok"}
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=20)
    # Text logs as they always were: our line on stdout, uvicorn's own format for its lines.
    assert f"bcpay serving on http://127.0.0.1:{port} (public URL " in output
    assert f"INFO:     Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)" in output
    assert not any(line.startswith("{") for line in output.splitlines()), output
    worker = _bcpay_process(["worker"], config)
    assert worker.stdout is not None
    assert "worker running" in worker.stdout.readline()
    worker.send_signal(signal.SIGTERM)
    rest, _ = worker.communicate(timeout=20)
    assert worker.returncode == 0 and "worker stopped" in rest


def test_serve_with_json_logs_writes_nothing_but_json_lines(tmp_path: Path) -> None:
    """uvicorn's start-up and shutdown lines, bcpay's warnings and its own serving line: one JSON object each."""
    sock = reserve_socket()
    port = sock.getsockname()[1]
    sock.close()
    config = tmp_path / "bcpay.toml"  # the sandbox key and a misspelled variable: two warnings at start
    config.write_text(f'[app]\nsandbox = true\n[database]\nurl = "sqlite:///{tmp_path}/s.db"\n'
                      f'[server]\nport = {port}\nrun_worker = false\nlog_format = "json"\n')
    server = subprocess.Popen([sys.executable, "-m", "bcpay", "--config", str(config), "serve"],
                              env={**{k: v for k, v in os.environ.items() if not k.startswith("BCPAY_")},
                                   "BCPAY_SERVER_WORKER": "2"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _healthz(server, port).status_code == 200
        for path in ("/pay/" + "ü" * 3000, "/%00%0a{", ""):  # unicode, very long, control characters
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    finally:
        server.send_signal(signal.SIGINT)
        stdout, stderr = server.communicate(timeout=20)
    assert server.returncode == 0, stderr
    lines = [line for line in (stdout + stderr).splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records), records
    messages = {(r["logger"], r["level"], r["message"]) for r in records}
    assert ("uvicorn.error", "info", f"Uvicorn running on http://127.0.0.1:{port} (Press CTRL+C to quit)") in messages
    assert any(r["message"].startswith("Started server process") for r in records)
    assert any(r["message"].startswith("Finished server process") for r in records)
    assert ("bcpay.server", "info",
            f"bcpay serving on http://127.0.0.1:{port} (public URL http://127.0.0.1:8000)") in messages
    assert ("bcpay.config", "warning", "BCPAY_SERVER_WORKER is not a bcpay setting and is ignored "
            "(did you mean BCPAY_SERVER_WORKERS?)") in messages
    assert any(r["logger"] == "bcpay.config" and "public sandbox key" in r["message"] for r in records)
    assert any(r["logger"] == "bcpay.access" and r["message"] == "GET /healthz 200" for r in records)


def test_worker_warns_of_a_misspelled_variable_and_runs(tmp_path: Path, secret_key: str) -> None:
    """A warning log line with the intended name (never the value), then the worker starts as usual."""
    config = tmp_path / "bcpay.toml"
    config.write_text(f'[app]\nsecret_key = "{secret_key}"\n[database]\nurl = "sqlite:///{tmp_path}/w.db"\n')
    worker = _bcpay_process(["worker"], config, env={"BCPAY_OUTBOX_CONCURENCY": "value-0042"})
    assert worker.stdout is not None
    lines = [worker.stdout.readline()]
    while lines[-1] and "worker running" not in lines[-1]:  # the warning comes before it
        lines.append(worker.stdout.readline())
    worker.send_signal(signal.SIGTERM)
    rest, _ = worker.communicate(timeout=20)
    warning = (" WARNING bcpay.config BCPAY_OUTBOX_CONCURENCY is not a bcpay setting and is ignored "
               "(did you mean BCPAY_OUTBOX_CONCURRENCY?)")
    assert any(warning in line for line in lines), lines
    assert any("worker running" in line for line in lines), lines
    assert worker.returncode == 0 and "value-0042" not in "".join(lines) + rest


@pytest.mark.parametrize(
    "args",
    [["payments", "list", "--limit", "99999999999999999999"], ["events", "list", "--limit", "0"],
     ["jobs", "list", "--limit", "-1"], ["jobs", "retry", "99999999999999999999"],
     ["anomalies", "resolve", "99999999999999999999"], ["refund", "0", "--store", STORE_HASH, "--yes"],
     ["refund", "99999999999999999999", "--store", STORE_HASH, "--yes"], ["sandbox", "--port-base", "70000"],
     ["simulate-notify", "1", "--repeat", "0"]],
)
def test_numbers_out_of_range_are_usage_errors_not_tracebacks(env: Env, args: list[str]) -> None:
    """Too large for a BIGINT, a port or a page: exit 2 with the range, before any database call."""
    result = env.cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.output and "range" in result.output


# click's type names, those of the copy of click Typer ships, and ours
NUMERIC = {"integer", "integer range", "int", "int range", "float", "float range", "number", "amount"}


def numeric_parameters() -> list[tuple[tuple[str, ...], Any, Any]]:
    """(command path, command, parameter) for every number- or amount-typed parameter of the app."""
    return [(path, command, param) for path, command in COMMANDS for param in command.params
            if param.type.name in NUMERIC or param.name == "amount"]


def test_the_app_has_numeric_parameters_and_every_one_has_an_ascii_parser() -> None:
    """Typer's own int and float are int() and float(): each numeric parameter must use the shared parsers."""
    found = numeric_parameters()
    assert {(" ".join(path), p.name) for path, _, p in found} >= {
        ("refund", "order_id"), ("refund", "amount"), ("payments list", "limit"), ("jobs retry", "job_id"),
        ("serve", "port"), ("serve", "workers"), ("sandbox", "notify_delay"), ("reconcile", "concurrency"),
        ("stores configure", "expires_in"), ("anomalies resolve", "anomaly_id")}
    for path, _, param in found:
        assert isinstance(getattr(param.type, "func", None), (AsciiInt, AsciiFloat, Amount)), (path, param.name)


@pytest.mark.parametrize("digits", ["１２", "١٢", "۱۲", "1_2", " 12", "12 "])
@pytest.mark.parametrize(("path", "command", "param"), numeric_parameters(),
                         ids=[f"{' '.join(p)} {q.name}" for p, _, q in numeric_parameters()])
def test_every_numeric_parameter_takes_ascii_digits_only(
    digits: str, path: tuple[str, ...], command: Any, param: Any
) -> None:
    """Other scripts' digits, underscores or spaces: a usage error naming the parameter, before any work."""
    if not isinstance(getattr(param.type, "func", None), (AsciiInt, AsciiFloat, Amount)):
        pytest.fail(f"{' '.join(path)} {param.name} takes int()'s digits")  # and running it might never end
    if param.param_type_name == "option":
        args, name = [*path, param.opts[0], digits], param.opts[0]
    else:  # arguments before it get a placeholder
        before = [p for p in command.params[:command.params.index(param)] if p.param_type_name == "argument"]
        args, name = [*path, *(["abc123"] * len(before)), digits], param.human_readable_name
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (args, result.output)
    assert f"Invalid value for '{name}'" in result.output and repr(digits) in result.output, result.output
    assert "Traceback" not in result.output


def test_the_ascii_parsers_take_plain_numbers() -> None:
    assert AsciiInt(1, 10)("7") == 7 and AsciiInt()("-3") == -3 and AsciiInt(1, 10)(5) == 5
    assert AsciiFloat(0)("2.5") == 2.5 and AsciiFloat(0)(".5") == 0.5 and Amount()("12.50") == "12.50"
    for parse, value, why in ((AsciiInt(1, 10), "11", "not in the range 1<=x<=10"),
                              (AsciiFloat(0, 1), "1.5", "not in the range 0<=x<=1"),
                              (AsciiFloat(), "1e3", "not a number"), (AsciiFloat(), "nan", "not a number"),
                              (Amount(), "12.5000", "not an amount")):
        with pytest.raises(typer.BadParameter, match=why):
            parse(value)


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        # 2: the input is wrong (Typer's usage errors, and what the library refuses as invalid input)
        (["refund", "１２", "--store", STORE_HASH, "--yes"], 2, "ASCII digits"),
        (["refund", "12", "--store", "ABC-1", "--yes"], 2, "not a store hash"),
        (["pay-link", "12", "--store", "ABC-1"], 2, "not a store hash"),
        (["stores", "add", "ABC-1"], 2, "not a store hash"),
        (["stores", "configure", STORE_HASH, "--expires-in", "10"], 2, "expires_in"),
        (["reconcile", STORE_HASH, "--since", "soon"], 2, "not a duration"),
        (["events", "prune", "--older-than", "7d"], 2, "at least 30 days"),
        (["simulate-notify", "1", "--store", STORE_HASH, "--status", "paid"], 2, "expected one of"),
        (["simulate-notify", "1", "--store", STORE_HASH, "--amount", "1e3"], 2, "not an amount"),
        (["serve", "--workers", "99"], 2, "not in the range 1<=x<=64"),
        (["serve", "--host", " "], 2, "must not be empty"),
        (["sandbox", "--db", "/nonexistent-dir/x.db"], 2, "does not exist"),
        (["sandbox", "--notify-delay", "-1"], 2, "not in the range"),
        (["rotate-key", "--new-key-env", "BCPAY_UNSET_FOR_THIS_TEST"], 2, "is empty or not set"),
        (["jobs", "retry", "1", "--all"], 2, "not both"),
        (["anomalies", "resolve", "٣"], 2, "ASCII digits"),
        # 1: understood, and it failed
        (["stores", "show", "zzz999"], 1, "unknown store"),
        (["pay-link", "424242", "--store", STORE_HASH], 1, "no such order"),
        (["refund", "424242", "--store", STORE_HASH, "--yes"], 1, "no OKCloud Pay payment to refund"),
        (["jobs", "retry", "9999"], 1, "no dead job"),
        (["events", "replay", "evt_missing"], 1, "no stored event"),
        (["anomalies", "resolve", "9999"], 1, "no open anomaly"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_exit_codes_follow_one_rule_across_commands(env: Env, args: list[str], code: int, text: str) -> None:
    """2 for wrong input, whoever finds it (Typer or the library); 1 for a command that ran and failed."""
    env.add_store()
    result = env.cli(*args)
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert text in result.output and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("period", ["999999w", "3651d", "٣d"])
def test_durations_past_ten_years_or_in_other_digits_are_one_error_line(env: Env, period: str) -> None:
    env.add_store()
    one_error_line(env.cli("reconcile", STORE_HASH, "--since", period), "duration", code=2)
    one_error_line(env.cli("events", "prune", "--older-than", period), "duration", code=2)


@pytest.mark.parametrize("amount", ["1e3", "١", "-5", "NaN", "12,50", " 5"])
def test_a_refund_amount_that_is_not_plain_digits_is_refused_before_the_question(env: Env, amount: str) -> None:
    env.add_store()
    order, _ = env.paid_order("20.00")
    result = env.cli("refund", str(order["id"]), "--store", STORE_HASH, "--amount", amount)  # no --yes
    assert result.exit_code == 2 and "is not an amount" in result.output and "[y/N]" not in result.output
    assert env.cp.refunds == {}


def test_a_zero_refund_says_so(env: Env) -> None:
    env.add_store()
    order, _ = env.paid_order("20.00")
    one_error_line(env.cli("refund", str(order["id"]), "--store", STORE_HASH, "--amount", "0", "--yes"),
                   "must be greater than 0", code=2)
    one_error_line(env.cli("refund", str(order["id"]), "--store", STORE_HASH, "--amount", "1.005", "--yes"),
                   "more decimals than USD allows", code=2)
    assert env.cp.refunds == {}


@pytest.mark.parametrize("token", ["TOKEN WITH SPACES", "TOKEN\u00d6", "TOK\x01EN"])
def test_an_access_token_that_cannot_go_in_a_header_is_one_error_line(env: Env, token: str) -> None:
    one_error_line(env.cli("stores", "add", STORE_HASH, "--scopes", SCOPES, env={"BCPAY_ACCESS_TOKEN": token}),
                   "printable ASCII without spaces", code=2)
    assert env.query(select(stores)) == []


def test_a_piped_table_keeps_whole_ids(env: Env) -> None:
    """Without a terminal (and no COLUMNS) a table is as wide as its content: ids stay greppable."""
    env.add_store()
    _, pid = env.paid_order("10.00")
    listed = env.ok("payments", "list", env={"COLUMNS": None})
    assert pid in listed.stdout and STORE_HASH in listed.stdout


def test_an_unknown_status_or_state_is_a_usage_error_not_an_empty_list(env: Env) -> None:
    for args in (["payments", "list", "--status", "paid"], ["jobs", "list", "--state", "failed"]):
        result = env.cli(*args)
        assert result.exit_code == 2 and "expected one of" in result.output, result.output
    assert env.ok("payments", "list", "--status", "creating").exit_code == 0


def test_serve_and_worker_on_the_public_sandbox_key_say_so(capsys: pytest.CaptureFixture[str]) -> None:
    from bcpay.cli_common import warn_if_sandbox_key
    from bcpay.config import load_settings

    warn_if_sandbox_key(load_settings(environ={}, overrides={"app": {"sandbox": True}}))
    assert "public sandbox key" in capsys.readouterr().err
    warn_if_sandbox_key(load_settings(environ={}, overrides={"app": {"sandbox": True, "secret_key": generate_key()}}))
    assert capsys.readouterr().err == ""


def test_a_key_rotation_without_downtime(env: Env) -> None:
    """Processes given app.other_secret_key = the new key keep opening every secret while rotate-key
    re-seals them, and after the swap (new key current, old one other) as well."""
    from bcpay.config import load_settings
    from bcpay.runtime import make_vault

    env.add_store()
    old, new = env.secret_key, generate_key()
    running = make_vault(load_settings(environ={}, overrides={"app": {"secret_key": old, "other_secret_key": new}}))
    before = env.query(select(stores))[0]
    assert running.open(before["access_token_enc"]) == ACCESS_TOKEN
    env.ok("rotate-key", "--new-key-env", "BCPAY_NEW_KEY", env={"BCPAY_NEW_KEY": new})
    [row] = env.query(select(stores))
    assert running.open(row["access_token_enc"]) == ACCESS_TOKEN  # re-sealed under the new key, still open
    swapped = make_vault(load_settings(environ={}, overrides={"app": {"secret_key": new, "other_secret_key": old}}))
    assert swapped.open(row["celerypay_secret_enc"]) == MERCHANT_SECRET
    assert Vault(new).open(swapped.seal("x")) == "x"  # the current key seals
    with pytest.raises(ConfigError, match="app.other_secret_key"):
        load_settings(environ={}, overrides={"app": {"secret_key": new, "other_secret_key": "not-a-key"}})


@pytest.mark.parametrize("command", [["payments", "list"], ["events", "list"], ["anomalies", "list"],
                                     ["simulate-notify", "101"]])
def test_an_empty_store_option_is_a_usage_error_not_every_store(env: Env, command: list[str]) -> None:
    """"--store $STORE" with STORE unset must not act on every store."""
    env.add_store()
    result = env.cli(*command, "--store", "")
    assert result.exit_code == 2 and "not a store hash" in result.output


def test_a_second_refund_of_the_same_amount_goes_with_again(env: Env) -> None:
    """Two items of the same price, refunded one after the other: --again says the second is meant."""
    env.add_store()
    order, pid = env.paid_order("20.00")
    env.ok("refund", str(order["id"]), "--store", STORE_HASH, "--amount", "5.00", "--yes")
    env.ok("refund", str(order["id"]), "--store", STORE_HASH, "--amount", "5.00", "--yes", "--again")
    assert env.cp.payments[pid]["refunded_amount"] == 1000
    one_error_line(env.cli("refund", str(order["id"]), "--store", STORE_HASH, "--amount", "11.00", "--yes",
                           "--again"), "more than what is left to refund (10.00 USD)", code=2)


def test_stores_configure_refuses_credentials_celerypay_refuses_and_saves_nothing(env: Env) -> None:
    """A wrong secret used to be saved ("secret set") and the next payment failed with invalid_signature."""
    env.add_store()
    before = env.query(select(stores))
    result = env.cli("stores", "configure", STORE_HASH, "--merchant-id", MERCHANT_ID,
                     env={"BCPAY_CELERYPAY_SECRET": "wrong-secret-but-long-enough-000000000000"})
    one_error_line(result, "CeleryPay refused these credentials (invalid_signature)", code=2)
    assert env.query(select(stores)) == before


def test_a_secret_with_nothing_to_read_it_from_is_one_clear_error(env: Env) -> None:
    """From a script with no $BCPAY_CELERYPAY_SECRET and nothing piped in: no prompt warnings, one line."""
    env.add_store()
    result = env.cli("stores", "configure", STORE_HASH, "--merchant-id", MERCHANT_ID, input="")
    one_error_line(result, "no CeleryPay API secret: set $BCPAY_CELERYPAY_SECRET", code=2)
    assert "Warning" not in result.output and "Aborted" not in result.output


def test_revoke_old_secret_ends_the_rotation_grace_at_once(env: Env) -> None:
    """After a rotation the old secret is accepted for 24 h; --revoke-old-secret ends that now, once."""
    env.add_store()
    new_secret = "n" * 40
    env.cp.add_merchant(MERCHANT_ID, new_secret, old_secret=MERCHANT_SECRET)
    env.ok("stores", "configure", STORE_HASH, "--merchant-id", MERCHANT_ID, env={"BCPAY_CELERYPAY_SECRET": new_secret})
    assert json.loads(env.ok("stores", "show", STORE_HASH, "--json").stdout)["old_secret_valid_until"] is not None
    revoked = env.ok("stores", "configure", STORE_HASH, "--revoke-old-secret")
    assert "Old CeleryPay secret revoked" in revoked.stdout
    shown = json.loads(env.ok("stores", "show", STORE_HASH, "--json").stdout)
    assert shown["old_secret_valid_until"] is None and shown["celerypay_secret"] == "set"
    assert "nothing to revoke" in env.ok("stores", "configure", STORE_HASH, "--revoke-old-secret").stdout
    one_error_line(env.cli("stores", "configure", "nosuch", "--revoke-old-secret"), "nosuch")


def test_serve_refuses_a_public_address_without_a_metrics_token_and_doctor_says_so(tmp_path: Path,
                                                                                  secret_key: str) -> None:
    """/metrics (outbox depth, traffic per route) answers without a token only on loopback: listening on any
    other address, `serve` stops before starting, naming the setting; doctor flags the same configuration."""
    config = tmp_path / "bcpay.toml"
    config.write_text(f'[app]\nsecret_key = "{secret_key}"\n[database]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    for host in ("0.0.0.0", "::", "10.1.2.3", "bcpay.internal"):
        result = CliRunner().invoke(app, ["--config", str(config), "serve", "--host", host])
        one_error_line(result, "server.metrics_token: required when server.host is not a loopback address")
    report = CliRunner().invoke(app, ["--config", str(config), "doctor", "--json"],
                                env={"BCPAY_SERVER_HOST": "0.0.0.0"})
    [check] = [c for c in json.loads(report.stdout)["checks"] if c["name"] == "metrics"]
    assert not check["ok"] and "refuses to start" in check["detail"]
    for env_ in ({"BCPAY_SERVER_HOST": "0.0.0.0", "BCPAY_SERVER_METRICS_TOKEN": "m" * 32}, {}):
        report = CliRunner().invoke(app, ["--config", str(config), "doctor", "--json"], env=env_)
        [check] = [c for c in json.loads(report.stdout)["checks"] if c["name"] == "metrics"]
        assert check["ok"], check
