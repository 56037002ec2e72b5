"""A small keep-alive HTTP/1.1 client for the delivery thread's POSTs.

Hand-written for speed, where a library would fit otherwise: under a burst, httpx's async
client spent most of the delivery thread's CPU in its own machinery (py-spy: a third of the
samples in httpcore's per-request async-library detection, most of the rest in anyio stream
and pool bookkeeping), about 1.7 ms of CPU per record. Delivery only ever POSTs JSON to one
host, so this client does just that: one request per connection at a time, connections reused,
``Content-Length`` and chunked bodies, a timeout over the whole exchange, TLS for ``https``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = ["HttpPool", "HttpResponse", "TransportError", "within"]

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def within(coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """``coroutine``'s result, or ``asyncio.TimeoutError`` after ``timeout`` seconds: a deadline on
        the running task (``wait_for`` wraps each call in a task of its own before 3.12)."""
        async with asyncio.timeout(timeout):
            return await coroutine

else:  # pragma: no cover - Python 3.10
    within = asyncio.wait_for


class TransportError(Exception):
    """The request did not get a complete answer (refused, dropped, timed out, malformed)."""


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


class HttpPool:
    """POSTs to one base URL over reused connections; at most ``size`` idle connections are kept."""

    def __init__(self, base_url: str, *, size: int, timeout: float, user_agent: str = "gateway-otel") -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = parts.hostname
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        host_header = parts.netloc.rsplit("@", 1)[-1]
        self._head = f"Host: {host_header}\r\nUser-Agent: {user_agent}\r\nContent-Type: application/json\r\n"
        self._size = size
        self._timeout = timeout
        self._idle: list[_Connection] = []
        self._ssl = ssl.create_default_context() if self._tls else None

    async def post(self, path: str, body: bytes) -> HttpResponse:
        """POST ``body`` as JSON; raises ``TransportError`` when no complete answer arrives."""
        request = (
            f"POST {self._prefix}{path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
            + body
        )
        reused = bool(self._idle)
        try:
            return await within(self._exchange(request), self._timeout)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            if reused and isinstance(exc, (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError)):
                # A kept-alive connection the server had closed: one fresh try (the gateway dedupes by uuid).
                try:
                    return await within(self._exchange(request, fresh=True), self._timeout)
                except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as again:
                    raise TransportError(f"{type(again).__name__}: {again}") from again
                except asyncio.TimeoutError:
                    raise TransportError(f"no answer within {self._timeout}s") from None
            raise TransportError(f"{type(exc).__name__}: {exc}") from exc
        except asyncio.TimeoutError:
            raise TransportError(f"no answer within {self._timeout}s") from None

    async def _exchange(self, request: bytes, *, fresh: bool = False) -> HttpResponse:
        if self._idle and not fresh:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(
                self._host, self._port, ssl=self._ssl, limit=MAX_HEADER_BYTES
            )
        try:
            writer.write(request)
            response, keep = await self._read_response(reader)
        except BaseException:
            writer.close()
            raise
        if keep and len(self._idle) < self._size:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return response

    async def _read_response(self, reader: asyncio.StreamReader) -> tuple[HttpResponse, bool]:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._read_chunked(reader)
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length > MAX_BODY_BYTES:
                raise ValueError(f"answer of {length} bytes")
            body = await reader.readexactly(length)
        else:
            body = await reader.read(MAX_BODY_BYTES)
            keep = False
        return HttpResponse(status, headers, body), keep

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise ValueError(f"answer over {MAX_BODY_BYTES} bytes")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:  # the loop may end next: let each transport really close its socket
            with contextlib.suppress(OSError):
                await writer.wait_closed()
