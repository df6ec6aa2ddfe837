"""The process's HTTP transport: httpx's API over aiohttp's connection pool.

The clients speak httpx (requests, responses, errors, ``MockTransport`` and
respx in tests); this transport only moves the bytes. httpcore's pool, which
httpx uses by default, rescans every queued request against every pooled
connection on each acquire and release, and asks each idle connection's
socket whether it was closed (two system calls) while doing so. The outbox
worker's profile showed that bookkeeping as the largest single cost of a job,
and on loopback the default transport spent about 2 ms of CPU per request at
16 requests in flight, against about 0.4 ms through aiohttp's pool, whose HTTP
parser is compiled.

What the clients rely on is kept: the per-request timeouts of
``httpx.Timeout`` (connect, read, and pool as the time allowed to get a
connection), no redirects followed, bodies passed through undecoded (httpx
decodes), every failure raised as the matching ``httpx.TransportError``
with the request attached, so the retry policy in :mod:`bcpay.clients.http`
sees the same errors as before, and the proxy variables httpx honours
(``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), read once when
the transport is made. aiohttp's own environment handling stays off: it would
look for a ``.netrc`` on a worker thread before every request. Its cookie jar
is off too: a cookie one store's API sets must never ride along on another
store's call.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping

import aiohttp
import httpx

__all__ = ["AiohttpTransport"]

READ_CHUNK = 64 * 1024


def _mapped(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx error an aiohttp failure stands for (most specific first)."""
    text = str(exc) or type(exc).__name__
    kind: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(exc, (aiohttp.ServerTimeoutError, TimeoutError)):
        kind = httpx.ReadTimeout
    elif isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        kind = httpx.UnsupportedProtocol
    elif isinstance(exc, aiohttp.ClientConnectorError):  # refused, DNS, TLS handshake and certificate errors
        kind = httpx.ConnectError
    elif isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError)):
        kind = httpx.RemoteProtocolError  # closed before a whole answer, or not HTTP at all
    elif isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ClientOSError, OSError)):
        kind = httpx.ReadError
    else:
        kind = httpx.TransportError
    return kind(text, request=request)


def _bypassed(host: str, no_proxy: str) -> bool:
    """True when ``NO_PROXY`` names this host: ``*``, the host itself, or a domain it is in."""
    host = host.lower()
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        name = entry.lstrip(".").rsplit(":", 1)[0] if entry.count(":") == 1 else entry.lstrip(".")
        if entry == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


class _Body(httpx.AsyncByteStream):
    """The response body, read from aiohttp as httpx asks for it."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(READ_CHUNK):
                yield chunk
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _mapped(exc, self._request) from exc

    async def aclose(self) -> None:
        # Back to the pool when the body was read to the end, closed otherwise.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncClient`` transport over one ``aiohttp.ClientSession``.

    The session is made on first use, on the running loop (aiohttp binds a
    session to its loop), and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        *,
        limits: httpx.Limits | None = None,
        verify: ssl.SSLContext | bool = True,
        proxies: Mapping[str, str] | None = None,
    ) -> None:
        """``proxies`` maps a scheme (``http``, ``https``, ``all``, ``no``) to a proxy URL or
        a ``NO_PROXY`` list; by default it is read from the environment, as httpx does."""
        limits = limits or httpx.Limits()
        self._max_connections = limits.max_connections or 0  # 0: aiohttp's "no limit"
        self._keepalive = limits.keepalive_expiry if limits.keepalive_expiry is not None else 15.0
        if isinstance(verify, ssl.SSLContext):
            self._ssl: ssl.SSLContext | bool = verify
        elif verify:
            self._ssl = httpx.create_ssl_context()  # certifi's roots, as httpx's own transport
        else:
            self._ssl = False
        found = urllib.request.getproxies_environment() if proxies is None else proxies
        self._proxies = {k.lower(): v for k, v in found.items() if v}
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"AiohttpTransport(max_connections={self._max_connections})"

    def _open(self) -> aiohttp.ClientSession:
        session, loop = self._session, asyncio.get_running_loop()
        if session is None or session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive,
                                             ssl=self._ssl)
            session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None), trust_env=False,
            )
            self._session, self._loop = session, loop
        return session

    def _proxy_for(self, url: httpx.URL) -> str | None:
        if not self._proxies:
            return None
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if proxy is None or _bypassed(url.host, self._proxies.get("no", "")):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request; the response body streams from the pooled connection."""
        session = self._open()
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        # The body is whole by now, so aiohttp sends its Content-Length: never a chunked framing too.
        headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "transfer-encoding"]
        try:
            response = await session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                compress=None,
                proxy=self._proxy_for(request.url),
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeouts.get("pool"),
                    sock_connect=timeouts.get("connect"),
                    sock_read=timeouts.get("read"),
                ),
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _mapped(exc, request) from exc
        extensions = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode("latin-1", "replace")
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, request),
            extensions=extensions,
        )

    async def aclose(self) -> None:
        """Close the session and every pooled connection."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
