"""A bcpay deployment for benchmarks: fakes process, database, config, provisioning, server.

Everything is on loopback. The store is provisioned through the same library
calls the operator's commands use (``stores add``, ``stores configure``);
payments that notifications refer to are seeded straight into the database
(as ``pending`` attempts with a CeleryPay id), because creating tens of
thousands through the API would take longer than the benchmark itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_fakes import ACCESS_TOKEN, MERCHANT_ID, MERCHANT_SECRET, STORE_HASH, STORE_URL
from bench_lib import PYTHON, SCRIPTS, Child, http_get, http_post_json, raw_request, spawn, wait_file, wait_http

from bcpay import rules, stores
from bcpay.config import load_settings
from bcpay.crypto import generate_key
from bcpay.runtime import open_runtime
from bcpay.signatures import sign_notification
from bcpay.storage import migrate
from bcpay.storage import queries as q
from bcpay.storage.schema import payments

PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "postgres"}
AMOUNT = 1999  # the fakes' order total, 19.99 USD, in cents


@dataclass
class Fakes:
    """The fakes process and where it listens."""

    child: Child
    bc_url: str
    cp_url: str
    orders: list[tuple[int, str]]

    def log(self) -> list[list[Any]]:
        """Every timed BigCommerce call since the last reset."""
        _, body = http_get(self.bc_url + "/_bench/log", timeout=30)
        data: list[list[Any]] = json.loads(body)
        return data

    def reset(self) -> None:
        """Clear the call log and the quota windows."""
        http_post_json(self.bc_url + "/_bench/reset", {})


def start_fakes(workdir: Path, name: str, *, orders: int = 0, age_hours: float = 0.0, latency: float = 0.0,
                quota: tuple[int, int, bool] = (10_000_000, 30_000, False)) -> Fakes:
    """Start the fakes in their own process (a huge, unenforced quota unless told otherwise)."""
    ready = workdir / f"{name}.ready.json"
    ready.unlink(missing_ok=True)  # a stale file from an earlier run would point at dead ports
    argv = [PYTHON, str(SCRIPTS / "bench_fakes.py"), "--ready", str(ready), "--orders", str(orders),
            "--order-age-hours", str(age_hours), "--latency", str(latency),
            "--quota-requests", str(quota[0]), "--quota-window-ms", str(quota[1])]
    if quota[2]:
        argv.append("--quota-enforce")
    child = spawn(name, argv, workdir)
    info = wait_file(ready, child, timeout=120)
    return Fakes(child, info["bc_url"], info["cp_url"], [(int(i), str(c)) for i, c in info["orders"]])


class BenchDatabase:
    """A fresh SQLite file or PostgreSQL database, dropped by :meth:`drop`."""

    def __init__(self, kind: str, workdir: Path, label: str) -> None:
        self.kind = kind
        if kind == "sqlite":
            self.path = workdir / f"{label}.db"
            self.url = f"sqlite:///{self.path}"
        else:
            self.name = f"bcpay_bench_{os.getpid()}_{label}".lower()
            self.url = f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    def create(self) -> None:
        """Create the PostgreSQL database (SQLite files appear on first use)."""
        if self.kind == "postgresql":
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', f'CREATE DATABASE "{self.name}"'))

    def drop(self) -> None:
        """Remove what :meth:`create` made."""
        if self.kind == "postgresql":
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)


async def _pg(*statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(**PG_ADMIN)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


def postgres_available() -> bool:
    """True when PostgreSQL answers on 127.0.0.1:5432 as postgres."""
    try:
        asyncio.run(_pg("SELECT 1"))
        return True
    except Exception:
        return False


def write_config(path: Path, *, db_url: str, fakes: Fakes, port: int, run_worker: bool,
                 log_level: str = "info") -> Path:
    """A bcpay.toml pointing at the fakes; per-IP/per-store limits lifted (all load is one IP)."""
    path.write_text(f"""
[app]
public_url = "http://127.0.0.1:{port}"
secret_key = "{generate_key()}"

[database]
url = "{db_url}"

[bigcommerce]
api_url = "{fakes.bc_url}"
login_url = "{fakes.bc_url}"

[celerypay]
api_url = "{fakes.cp_url}"
sandbox_api_url = "{fakes.cp_url}"

[server]
host = "127.0.0.1"
port = {port}
run_worker = {str(run_worker).lower()}
rate_limit_per_ip = 1000000000
rate_limit_per_store = 1000000000
log_level = "{log_level}"
""")
    return path


@dataclass(frozen=True)
class Seeded:
    """A pending attempt written straight into the database."""

    order_id: int
    celerypay_id: str
    merchant_order_no: str
    token: str


def provision(config: Path, seed_orders: list[int]) -> list[Seeded]:
    """Migrate, add and configure the store, and seed a pending attempt per order id."""
    return asyncio.run(_provision(config, seed_orders))


async def _provision(config: Path, seed_orders: list[int]) -> list[Seeded]:
    settings = load_settings(config, environ={})
    async with open_runtime(settings) as rt:
        await migrate.upgrade(rt.db)
        await stores.register(rt, STORE_HASH, access_token=ACCESS_TOKEN, source="api_account",
                              scopes=" ".join(stores.REQUIRED_SCOPES))
        await stores.configure_merchant(rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=MERCHANT_SECRET,
                                        environment="sandbox")
        async with rt.db.read() as conn:
            store = await q.get_store(conn, STORE_HASH)
        assert store is not None
        now = datetime.now(UTC)
        seeded = [Seeded(oid, "pay_" + secrets.token_hex(12), rules.merchant_order_no(STORE_HASH, oid, 1),
                         secrets.token_urlsafe(24)) for oid in seed_orders]
        rows = [{
            "token": s.token, "store_id": store.id, "order_id": s.order_id, "attempt_no": 1,
            "merchant_order_no": s.merchant_order_no, "idempotency_key": "create-" + secrets.token_urlsafe(24),
            "celerypay_id": s.celerypay_id, "amount": AMOUNT, "currency": "USD", "status": rules.PENDING,
            "cashier_url": f"{settings.celerypay.sandbox_api_url}/cashier/{s.celerypay_id}",
            "expires_at": now + timedelta(minutes=30), "last_checked_at": now,
            "created_at": now, "updated_at": now,
        } for s in seeded]
        for start in range(0, len(rows), 5000):
            async with rt.db.transaction() as conn:
                await conn.execute(payments.insert(), rows[start:start + 5000])
    return seeded


def query(config: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one read-only SQL statement against the benchmark database."""
    async def run() -> list[tuple[Any, ...]]:
        from sqlalchemy import text

        settings = load_settings(config, environ={})
        async with open_runtime(settings) as rt, rt.db.read() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql))).all()]
    return asyncio.run(run())


def start_bcpay(workdir: Path, config: Path, name: str, *, profile_out: Path | None = None) -> Child:
    """``bcpay serve`` (the real command), or the same app under pyinstrument; waits for /healthz."""
    if profile_out is None:
        argv = [PYTHON, "-m", "bcpay", "--config", str(config), "serve"]
    else:
        argv = [PYTHON, str(SCRIPTS / "bench_serve.py"), "bcpay", str(config), str(profile_out)]
    child = spawn(name, argv, workdir)
    port = load_settings(config, environ={}).server.port
    wait_http(f"http://127.0.0.1:{port}/healthz", child, timeout=60)
    return child


def start_baseline(workdir: Path, port: int, log_level: str = "info") -> Child:
    """The bare Starlette endpoint under the same uvicorn settings."""
    child = spawn("baseline", [PYTHON, str(SCRIPTS / "bench_serve.py"), "baseline", str(port), log_level], workdir)
    wait_http(f"http://127.0.0.1:{port}/baseline", child, timeout=30)
    return child


# --- request builders ------------------------------------------------------------------


def baseline_requests(count: int) -> Iterator[bytes]:
    """GET /baseline, ``count`` times."""
    raw = raw_request("GET", "/baseline")
    for _ in range(count):
        yield raw


def start_requests(orders: list[tuple[int, str]]) -> Iterator[bytes]:
    """What the snippet sends for each order: POST /api/v1/payments from the store's origin."""
    for order_id, cart_id in orders:
        body = json.dumps({"store_hash": STORE_HASH, "order_id": order_id, "cart_id": cart_id}).encode()
        yield raw_request("POST", "/api/v1/payments", body=body,
                          headers={"Content-Type": "application/json", "Origin": STORE_URL})


def poll_requests(tokens: list[str], count: int) -> Iterator[bytes]:
    """GET /api/v1/payments/{token}, cycling over the tokens."""
    for i in range(count):
        yield raw_request("GET", f"/api/v1/payments/{tokens[i % len(tokens)]}", headers={"Origin": STORE_URL})


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def notification(seed: Seeded, *, now: datetime, public_url: str) -> bytes:
    """A new ``payment.succeeded`` event for a seeded attempt, signed as CeleryPay signs it."""
    stamp = _rfc3339(now)
    payment = {
        "id": seed.celerypay_id, "object": "payment", "merchant_order_no": seed.merchant_order_no,
        "amount": AMOUNT, "currency": "USD", "status": "succeeded", "paid_amount": AMOUNT,
        "refunded_amount": 0, "cashier_url": f"https://pay.example/cashier/{seed.celerypay_id}",
        "return_url": f"{public_url}/pay/{seed.token}/return",
        "notify_url": f"{public_url}/notify/celerypay/{STORE_HASH}", "description": f"Order #{seed.order_id}",
        "metadata": {"store_hash": STORE_HASH, "order_id": str(seed.order_id), "attempt": "1"},
        "failure_code": None, "failure_message": None, "created_at": stamp,
        "expires_at": _rfc3339(now + timedelta(minutes=30)), "paid_at": stamp, "updated_at": stamp,
    }
    event = {"id": "evt_" + secrets.token_hex(12), "object": "event", "type": "payment.succeeded",
             "created_at": stamp, "data": payment}
    body = json.dumps(event, separators=(",", ":")).encode()
    ts = int(now.timestamp())
    headers = {"Content-Type": "application/json", "CeleryPay-Merchant": MERCHANT_ID,
               "CeleryPay-Timestamp": str(ts), "CeleryPay-Signature": sign_notification(MERCHANT_SECRET, ts, body)}
    return raw_request("POST", f"/notify/celerypay/{STORE_HASH}", body=body, headers=headers)
