"""The package's fake BigCommerce and fake CeleryPay in one process of their own, for benchmarks.

    bench_fakes.py --ready FILE [--orders N] [--order-age-hours H] [--latency S]
                   [--quota-requests Q --quota-window-ms W --quota-enforce]

Pre-creates N Awaiting Payment orders (paid with "OKCloud Pay", total 19.99
USD) and writes ``{"bc_url", "cp_url", "orders": [[id, cart_id], ...]}`` to
FILE once both servers listen. Every BigCommerce call is timed: GET
``/_bench/log`` answers ``[[t_start, t_end, method, path, status, window_start_ms], ...]``
(wall-clock seconds, so other processes can compare), POST ``/_bench/reset``
clears the log and the quota windows. The fake CeleryPay's own rate limit is
lifted so that it never throttles the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import uvicorn
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from bcpay.sandbox.bc_state import Chaos, FakeBigCommerce, Quota
from bcpay.sandbox.bigcommerce import create_bigcommerce_api
from bcpay.sandbox.celerypay import FakeCeleryPay, FakeOptions

STORE_HASH = "bench1"
STORE_URL = "https://bench-shop.example.com"
ACCESS_TOKEN = "bench-access-token"
MERCHANT_ID = "mch_BenchMerchant000001"
MERCHANT_SECRET = "bench-merchant-secret-0123456789abcdef"
ORDER_TOTAL = "19.99"


class Timed:
    """Records every BigCommerce call with wall-clock start/end and its quota window."""

    def __init__(self, app: ASGIApp, state: FakeBigCommerce) -> None:
        self.app = app
        self.state = state
        self.entries: list[tuple[float, float, str, str, int, float]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/_bench/log":
            await JSONResponse(self.entries)(scope, receive, send)
            return
        if path == "/_bench/reset":
            self.entries.clear()
            self.state.quota._windows.clear()  # a fresh quota window for the measured run
            await JSONResponse({"ok": True})(scope, receive, send)
            return
        started = time.time()
        status = 0

        async def capture(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, capture)
        parts = path.split("/")
        window = self.state.quota._windows.get(parts[2], (0.0, 0))[0] if len(parts) > 2 else 0.0
        self.entries.append((started, time.time(), scope["method"], path, status, window))


async def serve(app: ASGIApp, port: int) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """Start one uvicorn server on the running loop; (server, task, bound port)."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    server.capture_signals = lambda: _no_signals()  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task, server.servers[0].sockets[0].getsockname()[1]


class _no_signals:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def main(args: argparse.Namespace) -> None:
    """Build the fakes, serve them until SIGINT/SIGTERM."""
    bc = FakeBigCommerce()
    bc.add_store(STORE_HASH, secure_url=STORE_URL, name="Bench Shop", access_token=ACCESS_TOKEN)
    created = datetime.now(UTC) - timedelta(hours=args.order_age_hours)
    orders = []
    for _ in range(args.orders):
        order = bc.create_order(STORE_HASH, total=Decimal(ORDER_TOTAL), created=created)
        orders.append([order["id"], order["cart_id"]])
    quota = Quota(requests=args.quota_requests, window_ms=args.quota_window_ms, enforce=args.quota_enforce)
    chaos = Chaos(latency=args.latency)
    timed = Timed(create_bigcommerce_api(bc, quota=quota, chaos=chaos), bc)
    cp = FakeCeleryPay(FakeOptions(rate_limit_per_second=1_000_000))
    cp.add_merchant(MERCHANT_ID, MERCHANT_SECRET)

    gc.collect()
    gc.freeze()  # the pre-made orders live all run: no full collection should walk them (pauses of ~40 ms)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bc_server, bc_task, bc_port = await serve(timed, args.bc_port)
    cp_server, cp_task, cp_port = await serve(cp.app, args.cp_port)
    ready = {"bc_url": f"http://127.0.0.1:{bc_port}", "cp_url": f"http://127.0.0.1:{cp_port}", "orders": orders}
    tmp = Path(args.ready + ".tmp")
    tmp.write_text(json.dumps(ready))
    tmp.rename(args.ready)
    await stop.wait()
    for server in (bc_server, cp_server):
        server.should_exit = True
    await asyncio.gather(bc_task, cp_task, return_exceptions=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready", required=True)
    parser.add_argument("--orders", type=int, default=0)
    parser.add_argument("--order-age-hours", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--quota-requests", type=int, default=10_000_000)
    parser.add_argument("--quota-window-ms", type=int, default=30_000)
    parser.add_argument("--quota-enforce", action="store_true")
    parser.add_argument("--bc-port", type=int, default=0)
    parser.add_argument("--cp-port", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
