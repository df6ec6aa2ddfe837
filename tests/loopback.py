"""Real loopback servers for tests that drive the CLI: uvicorn on 127.0.0.1 in a thread.

The CLI opens its own runtime from settings, so its HTTP must reach the fakes
over real sockets. :class:`ServerThread` runs any number of uvicorn servers on
one background event loop; :class:`Switch` is an ASGI app whose target can be
replaced between tests (fresh fake state without restarting a server) and
which logs every request it passes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

T = TypeVar("T")


class Switch:
    """An ASGI app forwarding to a replaceable ``app``; records (method, path) of each call."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None
        self.calls: list[tuple[str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None, "no app behind this switch"
        if scope["type"] == "http":
            self.calls.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)

    def calls_to(self, method: str, fragment: str) -> int:
        """How many calls of ``method`` had ``fragment`` in their path."""
        return sum(1 for m, p in self.calls if m == method and fragment in p)


class _Server(uvicorn.Server):
    """No signal handlers: the test process owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def reserve_socket() -> socket.socket:
    """A listening-ready socket on a free loopback port (so a URL is known before the server starts)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://127.0.0.1:<port>`` of a bound socket."""
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


class ServerThread:
    """An event loop in a daemon thread that hosts uvicorn servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="loopback-servers", daemon=True)
        self._thread.start()
        self._servers: dict[str, tuple[_Server, asyncio.Task[None]]] = {}

    def call(self, factory: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
        """Run a coroutine on the servers' loop and wait for it."""
        async def runner() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(runner(), self.loop).result(timeout)

    def start(self, app: ASGIApp, *, lifespan: str = "off", sock: socket.socket | None = None) -> str:
        """Serve ``app`` on a free port (or on ``sock``); returns its base URL."""
        chosen = sock or reserve_socket()
        url = url_of(chosen)

        async def start() -> None:
            config = uvicorn.Config(app, lifespan=lifespan, log_level="warning", access_log=False,
                                    ws="none", http="h11", timeout_graceful_shutdown=2)
            server = _Server(config)
            task = asyncio.ensure_future(server.serve(sockets=[chosen]))
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.005)
            self._servers[url] = (server, task)

        self.call(start)
        return url

    def stop(self, url: str) -> None:
        """Stop the server at ``url`` (runs its lifespan shutdown)."""
        server, task = self._servers.pop(url)

        async def stop() -> None:
            server.should_exit = True
            await task

        self.call(stop)

    def close(self) -> None:
        """Stop every server and the loop."""
        for url in list(self._servers):
            self.stop(url)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def run_in(thread: ServerThread, fn: Callable[..., Any], *args: Any) -> Any:
    """Call a plain function on the servers' loop (to touch fake state the servers also touch)."""
    async def go() -> Any:
        return fn(*args)

    return thread.call(go)
