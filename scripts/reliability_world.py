"""The world of ``scripts/reliability.py``: fake upstreams in this loop, bcpay in its own processes.

- :class:`Fakes`: the sandbox's fake BigCommerce and CeleryPay served by uvicorn on
  loopback ports in the caller's event loop, so their state stays inspectable;
  :class:`RacingCeleryPay` can act the moment a payment is created.
- :class:`BcpayServer`: one ``bcpay serve`` process group (its own session, so
  ``kill -9`` reaches the uvicorn supervisor and every worker), restartable.
- :func:`run_cli`, :func:`fresh_database`, :func:`bcpay_env`: the rest of what a
  run needs, all on loopback and bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bcpay.crypto import generate_key
from bcpay.sandbox.bc_state import FakeBigCommerce
from bcpay.sandbox.bigcommerce import create_bigcommerce_api
from bcpay.sandbox.celerypay import FakeCeleryPay, FakeOptions
from bcpay.sandbox.celerypay_records import PaymentRecord
from bcpay.sandbox.celerypay_rules import PaymentRequest

ROOT = Path(__file__).resolve().parent.parent
_VENV_BCPAY = ROOT / ".venv" / "bin" / "bcpay"
BCPAY = str(_VENV_BCPAY) if _VENV_BCPAY.exists() else (shutil.which("bcpay") or "bcpay")
HOST = "127.0.0.1"
PG_ADMIN_DSN = os.environ.get("BCPAY_RELIABILITY_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

STORE_HASH = "reliab1"
STORE_URL = "https://shop.reliability.test"
MERCHANT_ID = "mch_ReliabilityMerchant01"
SCOPES = "store_v2_orders store_v2_content store_v2_information_read_only"


@dataclass(frozen=True)
class Secrets:
    """The run's credentials: random each run, so that a scan can look for them."""

    access_token: str
    merchant_secret: str
    client_secret: str
    secret_key: str

    @classmethod
    def fresh(cls) -> Secrets:
        """New random values."""
        return cls(
            access_token="bcat" + secrets.token_hex(16),
            merchant_secret="cpms" + secrets.token_hex(20),
            client_secret="bccs" + secrets.token_hex(16),
            secret_key=generate_key(),
        )


# --- the fakes, served in this loop ------------------------------------------------------------


class _Server(uvicorn.Server):
    """No signal handlers: several servers share this loop and the script owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RacingCeleryPay(FakeCeleryPay):
    """The fake CeleryPay with a hook called when a payment is created (before the 201 leaves)."""

    on_create: Callable[[PaymentRecord], None] | None = None

    def create_payment(self, merchant_id: str, request: PaymentRequest, cashier_base: str) -> PaymentRecord:
        """Create as the fake does, then call the hook."""
        payment = super().create_payment(merchant_id, request, cashier_base)
        if self.on_create is not None:
            self.on_create(payment)
        return payment


class Fakes:
    """Fake BigCommerce and CeleryPay on loopback ports, one store and one merchant."""

    def __init__(self, creds: Secrets, seed: int) -> None:
        self.bc = FakeBigCommerce()
        self.cp = RacingCeleryPay(FakeOptions(seed=seed))
        self.bc.add_store(STORE_HASH, secure_url=STORE_URL, name="Reliability Shop", access_token=creds.access_token)
        self.cp.add_merchant(MERCHANT_ID, creds.merchant_secret)
        self.bc_url = self.cp_url = ""
        self._servers: list[tuple[_Server, asyncio.Task[None]]] = []

    async def _serve(self, app: Any) -> str:
        config = uvicorn.Config(app, host=HOST, port=0, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2, log_config=None)
        server = _Server(config)
        task = asyncio.create_task(server.serve())
        self._servers.append((server, task))
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("a fake stopped during start-up")
            await asyncio.sleep(0.02)
        return f"http://{HOST}:{server.servers[0].sockets[0].getsockname()[1]}"

    async def start(self) -> None:
        """Serve both fakes."""
        self.cp_url = await self._serve(self.cp.app)
        self.bc_url = await self._serve(create_bigcommerce_api(self.bc))

    async def stop(self) -> None:
        """Stop both servers and the fake's own client."""
        for server, _ in self._servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in self._servers), return_exceptions=True)
        await self.cp.aclose()


# --- bcpay processes and databases -------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def bcpay_env(*, db_url: str, creds: Secrets, fakes: Fakes, public_url: str, log_level: str = "warning",
              lease_seconds: int = 60, poll_every_time: bool = False) -> dict[str, str]:
    """The environment of a bcpay process: this one's minus any BCPAY_*, plus the run's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCPAY_")}
    env.update({
        "PYTHONUNBUFFERED": "1",
        "BCPAY_DATABASE_URL": db_url,
        "BCPAY_APP_SECRET_KEY": creds.secret_key,
        "BCPAY_APP_PUBLIC_URL": public_url,
        "BCPAY_APP_CLIENT_ID": "reliability-client-id",
        "BCPAY_APP_CLIENT_SECRET": creds.client_secret,
        "BCPAY_BIGCOMMERCE_API_URL": fakes.bc_url,
        "BCPAY_BIGCOMMERCE_LOGIN_URL": fakes.bc_url,
        "BCPAY_CELERYPAY_API_URL": fakes.cp_url,
        "BCPAY_CELERYPAY_SANDBOX_API_URL": fakes.cp_url,
        "BCPAY_SERVER_RATE_LIMIT_PER_IP": "1000000",
        "BCPAY_SERVER_RATE_LIMIT_PER_STORE": "1000000",
        "BCPAY_SERVER_LOG_LEVEL": log_level,
        "BCPAY_OUTBOX_BACKOFF_CAP": "3",
        "BCPAY_OUTBOX_POLL_INTERVAL": "0.2",
        "BCPAY_OUTBOX_LEASE_SECONDS": str(lease_seconds),
    })
    if poll_every_time:
        env["BCPAY_PAYMENTS_STATUS_POLL_INTERVAL"] = "0"  # every poll asks CeleryPay: the hardest race
    return env


class BcpayServer:
    """One ``bcpay serve`` process group that can be killed with SIGKILL and started again."""

    def __init__(self, name: str, port: int, workers: int, env: dict[str, str], log_path: Path, cwd: Path) -> None:
        self.name, self.port, self.workers, self.env = name, port, workers, env
        self.log_path, self.cwd = log_path, cwd
        self.url = f"http://{HOST}:{port}"
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self, timeout: float = 60.0) -> None:
        """Start the process group and wait until /healthz answers."""
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                BCPAY, "serve", "--host", HOST, "--port", str(self.port), "--workers", str(self.workers),
                env=self.env, cwd=self.cwd, stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url + "/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer /healthz within {timeout:.0f} s:\n{self.log_tail()}")

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)  # the session leader's pid is the group id

    async def kill9(self) -> None:
        """SIGKILL the supervisor and every worker at once, as a crash would."""
        self._signal_group(signal.SIGKILL)
        assert self.proc is not None
        await self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            await self.kill9()
        self._signal_group(signal.SIGKILL)  # stray workers, if any

    def log_tail(self, lines: int = 30) -> str:
        """The end of this server's log."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


async def run_cli(*args: str, env: dict[str, str], cwd: Path, log_path: Path, timeout: float = 180.0) -> int:
    """Run ``bcpay ARGS`` to completion (killed after ``timeout``); output appended to ``log_path``."""
    with log_path.open("ab") as log:
        log.write(f"\n$ bcpay {' '.join(args)}\n".encode())
        log.flush()
        proc = await asyncio.create_subprocess_exec(BCPAY, *args, env=env, cwd=cwd, stdout=log,
                                                    stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return -9


async def _pg_admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database(kind: str, workdir: Path) -> AsyncIterator[str]:
    """A new, empty database URL: a PostgreSQL database dropped at the end, or a SQLite file."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bcpay.db'}"
        return
    name = f"bcpay_rel_{secrets.token_hex(4)}"
    await _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
