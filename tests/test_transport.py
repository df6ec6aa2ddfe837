"""The aiohttp-backed transport under the process's httpx client, against real loopback sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bcpay.clients.transport import AiohttpTransport
from bcpay.config import load_settings
from bcpay.runtime import make_http


@dataclass
class Seen:
    """One request as the server read it."""

    connection: int
    head: list[str]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (any case)."""
        for line in self.head[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


Reply = Callable[[Seen], Awaitable[bytes | None]]


@dataclass
class RawServer:
    """An HTTP/1.1 server on asyncio streams that records connections and requests."""

    reply: Reply
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    closed: int = 0
    close_after_answer: bool = False
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until the client closes it (or ``reply`` answers None: hang up)."""
        self.connections += 1
        number = self.connections
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")[:-2]
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                seen = Seen(number, head, b"")
                length = seen.header("content-length")
                if length:
                    seen.body = await reader.readexactly(int(length))
                self.requests.append(seen)
                answer = await self.reply(seen)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if self.close_after_answer:
                    return
        finally:
            self.open_now -= 1
            self.closed += 1
            writer.close()


def answer(status: int, body: bytes = b"{}", *headers: str, reason: str = "OK") -> bytes:
    """Raw bytes of one HTTP/1.1 answer with a Content-Length."""
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def ok(_seen: Seen) -> bytes:
    return answer(200, b'{"ok":true}', "Content-Type: application/json")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply = ok, tls: ssl.SSLContext | None = None) -> RawServer:
        raw = RawServer(reply)
        server = await asyncio.start_server(raw.handle, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        raw.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return raw

    yield start
    for server in servers:
        server.close()


def client(**limits: int) -> httpx.AsyncClient:
    """A client on the transport; no proxy, whatever the environment says (these are loopback tests)."""
    transport = AiohttpTransport(limits=httpx.Limits(**limits), proxies={})
    return httpx.AsyncClient(transport=transport, timeout=5.0)


async def test_a_request_and_its_answer_cross_intact(serve: Callable[..., Awaitable[RawServer]]) -> None:
    """Method, path, query, headers and body go out as httpx built them; status, reason, headers come back."""
    async def created(_seen: Seen) -> bytes:
        return answer(201, b'{"id": 7}', "Content-Type: application/json", "X-Rate-Limit-Requests-Left: 9",
                      "X-Multi: a", "X-Multi: b", reason="Created")

    server = await serve(created)
    async with client() as http:
        response = await http.post(f"{server.url}/stores/abc/v3/x?limit=5&page=2",
                                   json={"amount": 1999}, headers={"X-Auth-Token": "t0ken"})
    assert (response.status_code, response.reason_phrase, response.json()) == (201, "Created", {"id": 7})
    assert response.headers["x-rate-limit-requests-left"] == "9"
    assert response.headers.get_list("x-multi") == ["a", "b"]
    seen = server.requests[0]
    assert seen.head[0] == "POST /stores/abc/v3/x?limit=5&page=2 HTTP/1.1"
    assert seen.header("x-auth-token") == "t0ken"
    assert seen.header("content-type") == "application/json"
    assert seen.body == b'{"amount":1999}' and seen.header("content-length") == str(len(seen.body))
    assert seen.header("transfer-encoding") is None


async def test_sequential_requests_reuse_one_kept_alive_connection(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    """Five calls one after another ride on one connection."""
    server = await serve()
    async with client() as http:
        for _ in range(5):
            assert (await http.get(server.url + "/order")).json() == {"ok": True}
    assert server.connections == 1 and len(server.requests) == 5


async def test_requests_in_flight_stay_within_the_connection_limit(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    """Twelve concurrent calls with room for three connections: never more than three open, all answered."""
    async def slow(_seen: Seen) -> bytes:
        await asyncio.sleep(0.03)
        return await ok(_seen)

    server = await serve(slow)
    async with client(max_connections=3) as http:
        answers = await asyncio.gather(*(http.get(f"{server.url}/{i}") for i in range(12)))
    assert [a.status_code for a in answers] == [200] * 12
    assert server.most_open == 3 and server.connections == 3


async def test_a_streamed_request_body_is_sent_whole_with_its_length(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    """A body given as chunks arrives in one piece with a Content-Length, never chunked."""
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"abc", b"def", b"ghi"):
            yield part

    server = await serve()
    async with client() as http:
        await http.put(server.url + "/x", content=chunks())
    seen = server.requests[0]
    assert seen.body == b"abcdefghi" and seen.header("content-length") == "9"
    assert seen.header("transfer-encoding") is None


async def test_a_slow_answer_is_a_read_timeout(serve: Callable[..., Awaitable[RawServer]]) -> None:
    """The read timeout of httpx.Timeout applies."""
    async def stalls(_seen: Seen) -> bytes:
        await asyncio.sleep(2)
        return await ok(_seen)

    server = await serve(stalls)
    async with client() as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(server.url, timeout=httpx.Timeout(5.0, read=0.1))


async def test_a_refused_connection_is_a_connect_error() -> None:
    """Nothing listening: httpx.ConnectError, with the request attached."""
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with client() as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(f"http://127.0.0.1:{port}/x")
    assert caught.value.request.url.port == port


async def test_an_answer_cut_short_is_a_read_error(serve: Callable[..., Awaitable[RawServer]]) -> None:
    """A body shorter than its Content-Length, then a hang-up: httpx.ReadError, not a short body."""
    async def cut(_seen: Seen) -> bytes:
        return answer(200, b'{"id": 1}')[:-3]

    server = await serve(cut)
    server.close_after_answer = True
    async with client() as http:
        with pytest.raises(httpx.ReadError):
            await http.get(server.url)


async def test_an_answer_that_is_not_http_is_a_remote_protocol_error(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    """Garbage instead of a status line: httpx.RemoteProtocolError."""
    async def garbage(_seen: Seen) -> bytes:
        return b"HELLO THERE\r\n\r\n"

    server = await serve(garbage)
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url)


async def test_a_hang_up_before_any_answer_is_a_remote_protocol_error(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    """The server closes without answering: httpx.RemoteProtocolError."""
    async def hang_up(_seen: Seen) -> None:
        return None

    server = await serve(hang_up)
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(server.url, json={})


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting only that server's certificate) for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)

    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = tmp_path / "cert.pem"
    key_pem = tmp_path / "key.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_pem, key_pem)
    trusting = ssl.create_default_context(cafile=str(cert_pem))
    return server, trusting


async def test_https_verifies_the_server_certificate(
    serve: Callable[..., Awaitable[RawServer]], tmp_path: Path,
) -> None:
    """TLS works with a trusted certificate and is refused (ConnectError) with an unknown one."""
    server_ctx, trusting = _self_signed(tmp_path)
    server = await serve(ok, tls=server_ctx)
    async with httpx.AsyncClient(transport=AiohttpTransport(verify=trusting)) as http:
        assert (await http.get(server.url + "/secure")).json() == {"ok": True}
    async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
        with pytest.raises(httpx.ConnectError, match="(?i)certificate"):
            await http.get(server.url + "/secure")
    assert [s.head[0] for s in server.requests] == ["GET /secure HTTP/1.1"]


async def test_the_process_client_sends_no_cookie_an_answer_set(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    """A cookie one API answer sets never rides along on a later call (another store's, say)."""
    async def sets_cookie(_seen: Seen) -> bytes:
        return answer(200, b"{}", "Set-Cookie: __cf_bm=abc; Path=/", "Set-Cookie: session=x; Path=/")

    server = await serve(sets_cookie)
    async with make_http(load_settings(None, environ={})) as http:
        await http.get(server.url + "/stores/a/v2/orders/1")
        await http.get(server.url + "/stores/b/v2/orders/2")
    assert [s.header("cookie") for s in server.requests] == [None, None]


async def test_closing_the_client_closes_its_pooled_connections(
    serve: Callable[..., Awaitable[RawServer]],
) -> None:
    """After aclose() the server sees the kept-alive connection end."""
    server = await serve()
    async with client() as http:
        await http.get(server.url)
        assert server.closed == 0
    for _ in range(100):
        if server.closed:
            break
        await asyncio.sleep(0.01)
    assert server.closed == 1


async def test_calls_go_through_the_proxy_the_environment_names(
    serve: Callable[..., Awaitable[RawServer]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTP_PROXY is honoured as httpx honours it: the proxy gets the absolute URL."""
    proxy = await serve()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as http:  # proxies from the environment
        assert (await http.get("http://api.bigcommerce.invalid/stores/abc/v2/orders/1")).json() == {"ok": True}
    assert proxy.requests[0].head[0] == "GET http://api.bigcommerce.invalid/stores/abc/v2/orders/1 HTTP/1.1"


async def test_no_proxy_hosts_are_reached_directly(
    serve: Callable[..., Awaitable[RawServer]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host NO_PROXY names (itself or its domain) skips the proxy."""
    proxy = await serve()
    direct = await serve()
    transport = AiohttpTransport(proxies={"http": proxy.url, "no": "localhost, .internal.example,127.0.0.1"})
    async with httpx.AsyncClient(transport=transport) as http:
        assert (await http.get(direct.url + "/direct")).status_code == 200
    assert proxy.requests == [] and [s.head[0] for s in direct.requests] == ["GET /direct HTTP/1.1"]


def test_no_proxy_matching_follows_the_usual_rules() -> None:
    """``*``, exact names, domains with or without a leading dot, and ports on entries."""
    from bcpay.clients.transport import _bypassed

    assert _bypassed("anything.example", "*")
    assert _bypassed("api.example.com", "example.com") and _bypassed("api.example.com", ".example.com")
    assert _bypassed("example.com", "example.com:443")
    assert not _bypassed("badexample.com", "example.com")
    assert not _bypassed("api.example.com", "")
