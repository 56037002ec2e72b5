"""Delivery's HTTP against servers that speak HTTP/1.1 in all its allowed ways, through proxies and TLS.

Each server here is real (a socket on 127.0.0.1) and answers as a gateway or a proxy may: 204 with
no length on a kept-alive connection, a body ended by closing the connection, chunks, a redirect.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11
import httpx
import orjson
import pytest
import trustme

from gateway_otel import GatewayClient
from gateway_otel._delivery import Delivery
from gateway_otel._settings import load_settings
from gateway_otel._spool import Spool
from gateway_otel._transport import HttpConfig, HttpPool
from gateway_otel.testing import free_port

from conftest import Gateway, request_body

Answer = Callable[[bytes], list[bytes]]  # the request body -> what to write, piece by piece; b"" closes


class RawServer:
    """An HTTP/1.1 server on 127.0.0.1 whose answers are written byte by byte by the test."""

    def __init__(self, answer: Answer, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.bodies: list[bytes] = []
        self.connections = 0
        self.port = free_port()
        self._tls = tls
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self._tls))
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        http = h11.Connection(h11.SERVER)
        try:
            while True:
                body = b""
                while True:
                    event = http.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        if not data:
                            return
                        http.receive_data(data)
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                self.bodies.append(body)
                for piece in self.answer(body):
                    if piece == b"":
                        return
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)
                http = h11.Connection(h11.SERVER)  # the next request on this connection
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            writer.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def make(answer: Answer, tls: ssl.SSLContext | None = None) -> RawServer:
        servers.append(RawServer(answer, tls))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def check_token(client: GatewayClient, token: str) -> str:
    try:
        return client.validate_token(token)
    finally:
        client.close()


def post_twice(url: str, config: HttpConfig | None = None) -> list[tuple[int, bytes]]:
    async def run() -> list[tuple[int, bytes]]:
        pool = HttpPool(url, size=2, timeout=3, config=config)
        try:
            answers = []
            for _ in range(2):
                response = await pool.post("/v1/openapi/report/log", b'{"uuid": "x"}')
                answers.append((response.status, response.body))
            return answers
        finally:
            await pool.aclose()

    return asyncio.run(run())


def test_a_204_without_length_on_a_kept_alive_connection_ends_at_its_head(raw_server: Any) -> None:
    server = raw_server(lambda body: [b"HTTP/1.1 204 No Content\r\nServer: proxy\r\n\r\n"])
    assert post_twice(server.url) == [(204, b""), (204, b"")]
    assert server.connections == 1  # and the connection was kept for the second request


def test_a_body_ended_by_closing_the_connection_is_read_whole(raw_server: Any) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
    server = raw_server(lambda body: [head, b'{"code":', b"0}", b""])
    assert post_twice(server.url) == [(200, b'{"code":0}'), (200, b'{"code":0}')]
    assert server.connections == 2  # a close-delimited answer ends its connection


def test_a_chunked_body_is_read_whole(raw_server: Any) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    server = raw_server(lambda body: [head, b"3\r\nabc\r\n", b"2\r\nde\r\n0\r\n\r\n"])
    assert post_twice(server.url) == [(200, b"abcde"), (200, b"abcde")]


def deliver(url: str, tmp_path: Path, records: int) -> Spool:
    """Deliver ``records`` records to ``url`` through a real ``Delivery``; returns its spool."""
    settings = load_settings({"openapi_host": url, "spool_dir": str(tmp_path), "relay": False, "timeout": 3})
    delivery = Delivery(settings, Spool(str(tmp_path)))
    for i in range(records):
        delivery.submit(lambda payload: payload, {"uuid": f"r-{i}", "opType": "x"})
    assert delivery.force_flush(20)
    delivery.shutdown(5)
    return Spool(str(tmp_path))


def test_a_gateway_answering_204_gets_every_record_once_and_nothing_hangs(raw_server: Any, tmp_path: Path) -> None:
    server = raw_server(lambda body: [b"HTTP/1.1 204 No Content\r\n\r\n"])
    spool = deliver(server.url, tmp_path, 40)
    uuids = [orjson.loads(body)["uuid"] for body in server.bodies]
    assert sorted(uuids) == sorted(f"r-{i}" for i in range(40))
    assert spool.counts() == (0, 0)


def test_a_redirect_is_refused_clearly_not_followed(raw_server: Any, tmp_path: Path) -> None:
    redirect = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n"
    server = raw_server(lambda body: [redirect])
    spool = deliver(server.url, tmp_path, 1)
    assert len(server.bodies) == 1  # sent once: not resent, not sent elsewhere
    (dead,) = spool.dead_letters()
    assert dead.last_error is not None and "HTTP 307" in dead.last_error


class ForwardProxy:
    """A plain-HTTP forward proxy: absolute-form requests are passed on; it notes each one."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await request_body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        # A request to a proxy names the whole URL (uvicorn leaves it in the path).
        url = scope["path"] if scope["path"].startswith("http://") else f"http://{headers['host']}{scope['path']}"
        query = scope["query_string"].decode()
        target = url + (f"?{query}" if query else "")
        self.seen.append(f"{scope['method']} {urlsplit(url).path}")
        async with httpx.AsyncClient(trust_env=False) as client:
            forwarded = {k: v for k, v in headers.items() if k in ("authorization", "content-type")}
            response = await client.request(scope["method"], target, content=body, headers=forwarded)
        head = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": response.status_code, "headers": head})
        await send({"type": "http.response.body", "body": response.content})


@pytest.fixture
def forward_proxy() -> Iterator[tuple[str, ForwardProxy]]:
    from gateway_otel._servers import serve_in_thread

    proxy = ForwardProxy()
    with serve_in_thread(proxy, free_port()) as url:
        yield url, proxy


@pytest.mark.parametrize("no_proxy", ["", "127.0.0.1"])
def test_token_checks_and_delivery_honour_the_proxy_variables_alike(
    healthy_gateway: Gateway,
    forward_proxy: tuple[str, ForwardProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy: str,
) -> None:
    proxy_url, proxy = forward_proxy
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    if no_proxy:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    assert check_token(GatewayClient(healthy_gateway.url), "demo-alice") == "alice"
    rid = f"proxied-{uuid.uuid4().hex}"
    settings = load_settings({"openapi_host": healthy_gateway.url, "spool_dir": str(tmp_path), "relay": False})
    delivery = Delivery(settings, Spool(str(tmp_path)))
    record = {
        "uuid": str(uuid.uuid4()),
        "requestId": rid,
        "callerId": "alice",
        "requestUrl": "",
        "opLogType": "in",
        "opType": "proxied",
        "isCostLog": False,
        "operationStatus": "success",
        "startTimeMillis": 1,
        "durationMillis": 0,
        "request": {},
    }
    delivery.submit(lambda payload: payload, record)
    assert delivery.force_flush(20)
    delivery.shutdown(5)
    assert healthy_gateway.count(rid) == 1
    through = sorted(proxy.seen)
    if no_proxy:
        assert through == []
    else:
        assert through == ["GET /v1/openapi/validate/tokens", "POST /v1/openapi/report/log"]


@pytest.fixture
def tls_gateway(raw_server: Any, tmp_path: Path) -> tuple[RawServer, Path]:
    """A gateway over TLS whose certificate a new CA signed, and that CA's bundle (trusted by no one yet)."""
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    envelope = b'{"code": 0, "msg": "ok", "data": "alice"}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(envelope), envelope)
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    return raw_server(lambda body: [answer], tls=server_context), bundle


def test_a_ca_bundle_is_trusted_by_delivery_and_token_checks_alike(tls_gateway: tuple[RawServer, Path]) -> None:
    server, bundle = tls_gateway
    # Without the bundle the server's certificate is not trusted, on either path.
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        post_twice(server.url)
    with pytest.raises(Exception, match="gateway unreachable"):
        check_token(GatewayClient(server.url, http=HttpConfig()), "t")
    trusted = HttpConfig(ca_bundle=str(bundle))
    assert [status for status, _ in post_twice(server.url, trusted)] == [200, 200]
    assert check_token(GatewayClient(server.url, http=trusted), "t") == "alice"


def test_ssl_cert_file_is_honoured_by_both_paths(
    tls_gateway: tuple[RawServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, bundle = tls_gateway
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert [status for status, _ in post_twice(server.url, HttpConfig())] == [200, 200]
    assert check_token(GatewayClient(server.url, http=HttpConfig()), "t") == "alice"
