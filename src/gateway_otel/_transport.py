"""The delivery thread's HTTP: keep-alive POSTs to the gateway.

Delivery only ever POSTs JSON to one host, thousands of times a second. httpx's async client spent
most of the delivery thread's CPU in its own machinery under a burst (async-library detection,
anyio stream and pool bookkeeping), and h11 alone, the protocol library under httpx, costs the
sender more per record than the whole exchange did without it (``benchmarks/results/``). So this
module keeps a small pool of asyncio connections of its own, writes its one kind of request
itself, and reads answers in two ways: the common one (HTTP/1.1, a ``Content-Length``, a status
that has a body) directly, anything else through h11 (no body for 1xx, 204 and 304, chunked
bodies, bodies ended by closing the connection, HTTP/1.0, ``Connection: close``), which knows
HTTP/1.1's rules for each. Redirects are not followed: a report is not to be moved elsewhere, and
the sender treats a 3xx as the gateway's refusal of the record.

TLS, proxies and certificates come from ``HttpConfig``, which the token checks (httpx) use too:
one configuration for both paths to the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
import sys
import urllib.request
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import h11

__all__ = ["HttpConfig", "HttpPool", "HttpResponse", "TransportError", "within"]

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
READ_SIZE = 64 * 1024


T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def within(coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """``coroutine``'s result, or ``asyncio.TimeoutError`` after ``timeout`` seconds: a deadline on
        the running task (``wait_for`` wraps each call in a task of its own before 3.12)."""
        async with asyncio.timeout(timeout):
            return await coroutine

else:  # pragma: no cover - Python 3.10
    within = asyncio.wait_for


#: What a failed exchange raises: the network, an answer that ended early, malformed or too large.
_FAILURES = (OSError, EOFError, h11.ProtocolError, ValueError, asyncio.LimitOverrunError)


class TransportError(Exception):
    """The request did not get a complete answer (refused, dropped, timed out, malformed)."""


@dataclasses.dataclass(frozen=True)
class HttpConfig:
    """How to reach the gateway, for delivery and token checks alike.

    ``ca_bundle``: a PEM file of the CAs to trust (else the system's, and ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when set); ``client_cert`` / ``client_key``: a client certificate for mutual
    TLS. Proxies come from ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` and ``NO_PROXY``, as
    curl, requests and httpx read them.
    """

    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_bundle)
        if self.client_cert:
            context.load_cert_chain(self.client_cert, self.client_key)
        return context

    @staticmethod
    def proxy_for(url: str) -> str | None:
        """The proxy URL the environment sets for ``url``, or ``None`` (none set, or ``NO_PROXY``)."""
        parts = urlsplit(url)
        proxies = urllib.request.getproxies_environment()
        proxy = proxies.get(parts.scheme) or proxies.get("all")
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # public, not in typeshed
        if not proxy or bypass(parts.netloc.rsplit("@", 1)[-1], proxies):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"


class HttpResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _address(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    return parts.hostname, parts.port or (443 if tls else 80), tls


class Transport(Protocol):
    """What the sender posts records through: an ``HttpPool``, or a test's stand-in."""

    async def post(self, path: str, body: bytes) -> HttpResponse: ...

    async def aclose(self) -> None: ...


class HttpPool:
    """POSTs to one base URL over reused connections; at most ``size`` idle connections are kept."""

    def __init__(
        self,
        base_url: str,
        *,
        size: int,
        timeout: float,
        config: HttpConfig | None = None,
        user_agent: str = "gateway-otel",
        token: str | None = None,
    ) -> None:
        self._host, self._port, tls = _address(base_url)
        parts = urlsplit(base_url)
        self._prefix = parts.path.rstrip("/")
        self._authority = parts.netloc.rsplit("@", 1)[-1]
        config = config or HttpConfig()
        self._ssl = config.ssl_context() if tls else None
        proxy = config.proxy_for(base_url)
        self._proxy = _address(proxy)[:2] if proxy else None
        # Through a proxy, a plain-HTTP request names the whole URL; an HTTPS one goes through a tunnel.
        self._absolute = f"http://{self._authority}" if proxy and not tls else ""
        self._head = f"Host: {self._authority}\r\nUser-Agent: {user_agent}\r\nContent-Type: application/json\r\n"
        if token:
            self._head += f"Authorization: Bearer {token}\r\n"
        self._size = size
        self._timeout = timeout
        self._idle: list[_Connection] = []

    async def post(self, path: str, body: bytes) -> HttpResponse:
        """POST ``body`` as JSON; raises ``TransportError`` when no complete answer arrives."""
        target = f"{self._absolute}{self._prefix}{path}"
        request = f"POST {target} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
        reused = bool(self._idle)
        try:
            return await within(self._exchange(target, request, body), self._timeout)
        except _FAILURES as exc:
            if reused and isinstance(exc, (ConnectionError, EOFError, h11.RemoteProtocolError)):
                # A kept-alive connection the server had closed: one fresh try (the gateway dedupes by uuid).
                try:
                    return await within(self._exchange(target, request, body, fresh=True), self._timeout)
                except _FAILURES as again:
                    raise TransportError(f"{type(again).__name__}: {again}") from again
                except asyncio.TimeoutError:
                    raise TransportError(f"no answer within {self._timeout}s") from None
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        except asyncio.TimeoutError:
            raise TransportError(f"no answer within {self._timeout}s") from None

    async def _connect(self) -> _Connection:
        if self._proxy is None:
            reader, writer = await asyncio.open_connection(
                self._host, self._port, ssl=self._ssl, limit=MAX_HEADER_BYTES
            )
            return reader, writer
        reader, writer = await asyncio.open_connection(*self._proxy, limit=MAX_HEADER_BYTES)
        if self._ssl is not None:
            try:
                await self._tunnel(reader, writer)
            except BaseException:
                writer.close()
                raise
        return reader, writer

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``CONNECT`` through the proxy, then TLS with the gateway over that tunnel."""
        tunnel = h11.Connection(h11.CLIENT)
        authority = f"{self._host}:{self._port}"
        writer.write(tunnel.send(h11.Request(method="CONNECT", target=authority, headers=[("Host", authority)])))
        writer.write(tunnel.send(h11.EndOfMessage()))
        response = await _next_response(tunnel, reader)
        if not 200 <= response.status_code < 300:
            raise ConnectionError(f"the proxy refused the tunnel: HTTP {response.status_code}")
        start_tls = getattr(writer, "start_tls", None)
        if start_tls is None:  # pragma: no cover - Python 3.10
            raise ConnectionError("HTTPS through a proxy needs Python 3.11 or newer")
        await start_tls(self._ssl, server_hostname=self._host)

    async def _exchange(self, target: str, request: bytes, body: bytes, *, fresh: bool = False) -> HttpResponse:
        reader, writer = self._idle.pop() if self._idle and not fresh else await self._connect()
        try:
            writer.write(request + body)  # one write: head and body leave in one segment
            head = await reader.readuntil(b"\r\n\r\n")
            response = _plain_answer(head)
            if response is not None:
                status, headers, length = response
                answer = HttpResponse(status, headers, await reader.readexactly(length))
                keep = headers.get("connection", "").lower() != "close"
            else:
                answer, keep = await _answer_by_h11(target, request, body, head, reader)
        except BaseException:
            writer.close()
            raise
        if keep and len(self._idle) < self._size:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return answer

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:  # the loop may end next: let each transport really close its socket
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _plain_answer(head: bytes) -> tuple[int, dict[str, str], int] | None:
    """(status, headers, body length) of an answer framed the common way: HTTP/1.1, a status that
    has a body, one ``Content-Length`` and no ``Transfer-Encoding``; ``None`` for any other (h11
    reads it)."""
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status_text = rest[:3]
    if version != "HTTP/1.1" or not status_text.isdigit():
        return None
    status = int(status_text)
    if status < 200 or status in (204, 304):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, colon, value = line.partition(":")
            name = name.lower()
            if not colon or (name in headers and name in ("content-length", "transfer-encoding")):
                return None
            headers[name] = value.strip()
    length = headers.get("content-length", "")
    if "transfer-encoding" in headers or not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return None
    return status, headers, int(length)


async def _answer_by_h11(
    target: str, request: bytes, body: bytes, head: bytes, reader: asyncio.StreamReader
) -> tuple[HttpResponse, bool]:
    """Read an answer through h11 (told the request that was sent), its head already read; returns
    it and whether the connection may carry the next request."""
    http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADER_BYTES)
    http.send(h11.Request(method="POST", target=target, headers=_request_headers(request)))
    http.send(h11.Data(data=body))
    http.send(h11.EndOfMessage())
    http.receive_data(head)
    response = await _next_response(http, reader)
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await _next_event(http, reader)
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY_BYTES:
                raise ValueError(f"answer over {MAX_BODY_BYTES} bytes")
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            break
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in response.headers}
    return HttpResponse(response.status_code, headers, b"".join(chunks)), _reusable(http, response)


def _request_headers(request: bytes) -> list[tuple[str, str]]:
    lines = request.decode("latin-1").split("\r\n")[1:]
    return [(name, value.strip()) for name, _, value in (line.partition(":") for line in lines if line)]


def _reusable(http: h11.Connection, response: h11.Response) -> bool:
    """Whether the connection may carry the next request: both sides done, and the answer's body
    was framed (a length, chunks, or none by its status) rather than ended by closing."""
    if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
        return False
    names = {name for name, _ in response.headers}
    return b"content-length" in names or b"transfer-encoding" in names or response.status_code in (204, 304)


async def _next_event(http: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await reader.read(READ_SIZE))  # b"" at the end: h11 knows what it means
            continue
        if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
            raise EOFError("the connection closed before the answer was complete")
        return event


async def _next_response(http: h11.Connection, reader: asyncio.StreamReader) -> h11.Response:
    """The final response's head (informational 1xx answers skipped)."""
    while True:
        event = await _next_event(http, reader)
        if isinstance(event, h11.Response):
            return event
