"""``bcpay sandbox``: the whole flow on one machine, on loopback, in one process.

Five servers share one event loop:

======================  ===============  =====================================
port                    what             code
======================  ===============  =====================================
``port_base``           bcpay            the real ``create_app`` (nothing special-cased)
``port_base + 1``       BigCommerce API  ``bcpay.sandbox.bigcommerce`` (+ OAuth token)
``port_base + 2``       storefront       ``bcpay.sandbox.storefront`` (+ control panel view)
``port_base + 3``       CeleryPay        ``bcpay.sandbox.celerypay`` (+ cashier page)
``port_base + 4``       second channel   the storefront of channel 2, "bcpay Sandbox Outlet"
======================  ===============  =====================================

The store has two storefront channels (multi-storefront, reference section
11): channel 1 on ``port_base + 2`` and channel 2 on ``port_base + 4``, whose
site has its own checkout URL, so a shopper who pays there comes back there.

The store installs bcpay as a BigCommerce app (the OAuth callback's library
call: snippets, webhooks, the order page's panel), then gets its CeleryPay
merchant as ``stores configure`` gives it, so the Script Manager snippet the
storefront renders is the one the install produced. ``port_base = 0`` picks free ports (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from starlette.types import ASGIApp

from bcpay import install, stores
from bcpay.config import Settings, load_settings, replace
from bcpay.runtime import Runtime
from bcpay.sandbox.bc_channels import add_channel
from bcpay.sandbox.bc_state import FakeBigCommerce
from bcpay.sandbox.bigcommerce import Chaos, Quota, create_bigcommerce_api
from bcpay.sandbox.celerypay import FakeCeleryPay, FakeOptions
from bcpay.sandbox.storefront import create_storefront
from bcpay.scopes import CHANNEL_SCOPES, EXTENSION_SCOPES
from bcpay.server.app import create_app
from bcpay.storage.records import StoreRecord

T = TypeVar("T")

STORE_HASH = "sandbox1"
ACCESS_TOKEN = "sandbox-access-token"  # accepted only by the fake BigCommerce
# The sandbox store installs bcpay as an app (OAuth, /bc/load, the order page's panel). Public on purpose:
# the fake BigCommerce is the only one that knows this app.
APP_CLIENT_ID = "sandbox-app-client-id"
APP_CLIENT_SECRET = "sandbox-app-client-secret-not-for-production-01"
MERCHANT_ID = "mch_SandboxMerchant0001"
MERCHANT_SECRET = "sandbox-merchant-secret-not-for-production-0001"
OUTLET_CHANNEL = 2
OUTLET_NAME = "bcpay Sandbox Outlet"
SHORT_SWEEP = 10  # seconds between the worker's sweeps when a hold is chosen on the command line


@dataclass
class SandboxOptions:
    """What ``bcpay sandbox`` flags control."""

    port_base: int = 8700
    host: str = "127.0.0.1"
    db: str | None = None  # a SQLite file; a temporary one when None
    notify_delay: float = 0.0  # seconds before CeleryPay's first delivery attempt
    chaos: bool = False  # duplicated, reordered notifications; BigCommerce 5xx/429 bursts
    time_scale: float = 1.0  # compress CeleryPay's retry schedule and expiry
    confirmation_variant: str = "fetch"  # how the confirmation page reads the order
    storefront_delay_ms: int = 300
    quota: Quota | None = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra overrides
    unpaid_hold: int | None = None  # the store's hold in minutes (None: a new store's default)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the sandbox (several share a loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@dataclass
class Urls:
    """Where each part listens."""

    bcpay: str = ""
    api: str = ""
    storefront: str = ""
    celerypay: str = ""
    outlet: str = ""  # the storefront of channel 2

    @property
    def control_panel(self) -> str:
        return self.storefront + "/manage/orders"


class Sandbox:
    """Start, provision and stop the sandbox; usable as ``async with``."""

    def __init__(self, options: SandboxOptions | None = None, settings: Settings | None = None) -> None:
        self.options = options or SandboxOptions()
        self.base_settings = settings or load_settings(environ={})
        self.urls = Urls()
        self.bc = FakeBigCommerce()
        cp_options = FakeOptions(
            time_scale=self.options.time_scale,
            notify_delay=self.options.notify_delay,
            duplicates=2 if self.options.chaos else 0,
            reorder=self.options.chaos,
            seed=7,
        )
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0))
        self.celerypay = FakeCeleryPay(cp_options, http=self.http)
        self.settings: Settings | None = None
        self.app: Any = None
        self._servers: list[_Server] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.store: StoreRecord | None = None  # as provisioned

    @property
    def runtime(self) -> Runtime:
        """bcpay's runtime (open while the sandbox runs)."""
        rt: Runtime = self.app.state.runtime
        return rt

    async def _serve(self, app: ASGIApp, port: int) -> str:
        config = uvicorn.Config(app, host=self.options.host, port=port, log_level="warning", lifespan="on",
                                access_log=False)
        server = _Server(config)
        self._servers.append(server)
        task = asyncio.create_task(server.serve())
        self._tasks.append(task)
        while not server.started:
            if task.done():
                task.result()  # raises the start-up error (port in use, ...)
                raise RuntimeError("a sandbox server stopped during start-up")
            await asyncio.sleep(0.02)
        bound = server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.options.host}:{bound}"

    def _port(self, offset: int) -> int:
        return 0 if self.options.port_base == 0 else self.options.port_base + offset

    def _db_url(self) -> str:
        if self.options.db:
            return f"sqlite:///{Path(self.options.db).resolve()}"
        self._tmp = tempfile.TemporaryDirectory(prefix="bcpay-sandbox-")
        return f"sqlite:///{Path(self._tmp.name) / 'sandbox.db'}"

    async def start(self) -> None:
        """Start the fakes, then bcpay, then provision the sandbox store."""
        opts = self.options
        self.urls.celerypay = await self._serve(self.celerypay.app, self._port(3))
        self.urls.api = await self._serve(
            create_bigcommerce_api(self.bc, quota=opts.quota, webhook_client=self.http), self._port(1)
        )
        if opts.chaos:
            self.bc.chaos = Chaos(error_rate=0.05, burst_429_every=40, seed=7)
        # The storefront's origin must exist before the store is registered (CORS, return URLs).
        store_port = self._port(2)
        if store_port == 0:
            store_port = _free_port(opts.host)
        self.urls.storefront = f"http://{opts.host}:{store_port}"
        outlet_port = self._port(4) or _free_port(opts.host)
        self.urls.outlet = f"http://{opts.host}:{outlet_port}"
        self.bc.add_store(STORE_HASH, secure_url=self.urls.storefront, name="bcpay Sandbox Store",
                          access_token=ACCESS_TOKEN)
        add_channel(self.bc, STORE_HASH, name=OUTLET_NAME, url=self.urls.outlet, channel_id=OUTLET_CHANNEL,
                    checkout_url=self.urls.outlet)
        for channel_id, port in ((1, store_port), (OUTLET_CHANNEL, outlet_port)):
            await self._serve(create_storefront(
                self.bc, STORE_HASH, confirmation_variant=opts.confirmation_variant,  # type: ignore[arg-type]
                storefront_delay_ms=opts.storefront_delay_ms, http=self.http, channel_id=channel_id,
            ), port)
        self.celerypay.add_merchant(MERCHANT_ID, MERCHANT_SECRET)

        bcpay_port = self._port(0) or _free_port(opts.host)
        self.urls.bcpay = f"http://{opts.host}:{bcpay_port}"
        overrides: dict[str, dict[str, Any]] = {
            "app": {"public_url": self.urls.bcpay, "sandbox": True, "client_id": APP_CLIENT_ID,
                    "client_secret": APP_CLIENT_SECRET, "control_panel_origins": [self.urls.storefront]},
            "database": {"url": self._db_url()},
            "bigcommerce": {"api_url": self.urls.api, "login_url": self.urls.api},
            "celerypay": {"sandbox_api_url": self.urls.celerypay},
            "server": {"host": opts.host, "port": bcpay_port},
        }
        if opts.unpaid_hold:
            # A short hold is there to be watched: sweep often enough to see it act within the minute.
            overrides["outbox"] = {"sweep_interval": min(self.base_settings.outbox.sweep_interval, SHORT_SWEEP)}
        for section, values in opts.settings.items():
            overrides.setdefault(section, {}).update(values)
        self.settings = replace(self.base_settings, **overrides)
        self.app = create_app(self.settings)
        await self._serve(self.app, bcpay_port)
        self._tasks.append(asyncio.create_task(self.celerypay.run_background(interval=0.25)))
        await self.provision()

    async def provision(self) -> None:
        """What a merchant and an operator do: install the app (OAuth: the snippet per channel, the webhooks,
        the order page's panel), then enter the CeleryPay merchant (``stores configure``)."""
        rt = self.runtime
        app = rt.settings.app  # the sandbox app's, unless a caller's settings name another
        client_id, client_secret = app.client_id, app.client_secret.get()
        self.bc.register_app(client_id, client_secret, load_url=rt.public_url("/bc/load"))
        scope = " ".join((*stores.REQUIRED_SCOPES, *CHANNEL_SCOPES, *EXTENSION_SCOPES))
        code = self.bc.issue_oauth_code(STORE_HASH, client_id=client_id, client_secret=client_secret,
                                        redirect_uri=rt.public_url(install.AUTH_PATH), scope=scope)
        await install.install_from_oauth(rt, code=code, scope=scope, context=f"stores/{STORE_HASH}")
        store = await stores.configure_merchant(rt, STORE_HASH, merchant_id=MERCHANT_ID, api_secret=MERCHANT_SECRET,
                                                environment="sandbox")
        if self.options.unpaid_hold is not None:
            store = await stores.update_settings(rt, STORE_HASH, {"unpaid_hold": self.options.unpaid_hold})
        self.store = store

    async def stop(self) -> None:
        """Stop every server and task, newest first."""
        for server in reversed(self._servers):
            server.should_exit = True
        for task in reversed(self._tasks):
            if not task.done() and task not in self._server_tasks():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.aclose()
        if self._tmp is not None:
            self._tmp.cleanup()

    def _server_tasks(self) -> list[asyncio.Task[Any]]:
        return self._tasks[: len(self._servers)]

    async def __aenter__(self) -> Sandbox:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def banner(self) -> str:
        """The URLs to open and what to try."""
        u = self.urls
        return "\n".join([
            "bcpay sandbox is running (Ctrl+C to stop).",
            "",
            f"  Storefront       {u.storefront}/  (channel 1)",
            f"  Second channel   {u.outlet}/  (channel {OUTLET_CHANNEL}, {OUTLET_NAME})",
            f"  Control panel    {u.control_panel}",
            f"  bcpay server     {u.bcpay}  (health: {u.bcpay}/healthz, metrics: {u.bcpay}/metrics)",
            f"  BigCommerce API  {u.api}",
            f"  CeleryPay        {u.celerypay}",
            "",
            "What to try:",
            "  1. Open the storefront, add a product to the cart, check out with \"OKCloud Pay\".",
            "  2. On the order confirmation page you are sent to the OKCloud Pay cashier: press Pay.",
            "  3. Back on the store you see \"Payment received\"; the control panel shows the order",
            "     in Awaiting Fulfillment with a staff note.",
            "  4. Try Decline (then retry), Abandon (the payment expires), or pay with",
            "     \"Test Payment Gateway\" (bcpay stays out of the way).",
            "  5. Do the same on the second channel: you come back to that channel's own domain.",
            *self._hold_lines(),
            "",
            "The CLI works against the sandbox too, from another shell:",
            f"  {self.cli_env()} bcpay doctor {STORE_HASH}",
        ])

    def _hold_lines(self) -> list[str]:
        hold = self.runtime.policy(self.store).unpaid_hold if self.store is not None else 0
        if not hold:
            return ["  6. Unpaid orders are kept (start with --unpaid-hold 1 to watch them cancelled)."]
        return [f"  6. Leave an order unpaid (close the cashier, or block the snippet): {hold} minute(s) after",
                "     it was placed the worker cancels it with a staff note, and its pay page says so."]

    def cli_env(self) -> str:
        """Environment variables that point the ``bcpay`` CLI at this sandbox."""
        assert self.settings is not None
        return " ".join([
            "BCPAY_APP_SANDBOX=true",
            f"BCPAY_DATABASE_URL={self.settings.database.url}",
            f"BCPAY_APP_PUBLIC_URL={self.urls.bcpay}",
            f"BCPAY_BIGCOMMERCE_API_URL={self.urls.api}",
            f"BCPAY_CELERYPAY_SANDBOX_API_URL={self.urls.celerypay}",
        ])


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def main(
    *,
    settings: Settings,
    port_base: int = 8700,
    db: str | None = None,
    notify_delay: float = 0.0,
    chaos: bool = False,
    open_browser: bool = False,
    unpaid_hold: int | None = None,
    print_: Callable[[str], None] = print,
) -> None:
    """Run the sandbox until interrupted (the ``bcpay sandbox`` command)."""
    options = SandboxOptions(port_base=port_base, db=db, notify_delay=notify_delay, chaos=chaos,
                             unpaid_hold=unpaid_hold)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # signal.signal works on every platform (add_signal_handler is Unix-only).
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        started = time.perf_counter()
        async with Sandbox(options, settings) as sandbox:
            print_(sandbox.banner())
            print_(f"\nReady in {time.perf_counter() - started:.1f} s.")
            if open_browser:
                print_(f"Open this in your browser: {sandbox.urls.storefront}/")
            await stop.wait()

    asyncio.run(run())


class SandboxThread:
    """A sandbox in a background thread, for synchronous callers (browser tests)."""

    def __init__(self, options: SandboxOptions | None = None, settings: Settings | None = None) -> None:
        self.sandbox = Sandbox(options, settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bcpay-sandbox", daemon=True)

    def __enter__(self) -> Sandbox:
        self._thread.start()
        try:
            self.call(self.sandbox.start)
        except BaseException:
            self.__exit__()
            raise
        return self.sandbox

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.call(self.sandbox.stop, timeout=20)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def call(
        self, factory: Callable[[], Coroutine[Any, Any, T]] | Callable[[], Awaitable[T]], timeout: float = 60
    ) -> T:
        """Run a coroutine on the sandbox's loop and wait for its result."""

        async def runner() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(runner(), self._loop).result(timeout)
