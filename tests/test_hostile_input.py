"""Hostile input never hurts and never lets anyone in: malformed headers, gateways that answer
oddly, markup in records, secrets in server log lines, and spool files others could read."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import websockets
from fastapi import FastAPI, WebSocket
from rich.console import Console

from gateway_otel import GatewayClient, current_caller_id, instrument_app
from gateway_otel._servers import serve_in_thread
from gateway_otel._spool import Spool
from gateway_otel.cli import record_tree
from gateway_otel.middleware import WebSocketHttpContextMiddleware
from gateway_otel.testing import eventually, free_port

from conftest import PROGRAMS, Gateway, serving


class OddGateway:
    """A gateway whose token check answers 200 with whatever the token asks for."""

    ANSWERS: ClassVar[dict[str, tuple[str, bytes]]] = {
        "good": ("application/json", b'{"code": 0, "msg": "ok", "data": "alice"}'),
        "code-401": ("application/json", b'{"code": 401, "msg": "bad token", "data": null}'),
        "data-null": ("application/json", b'{"code": 0, "msg": "ok", "data": null}'),
        "data-false": ("application/json", b'{"code": 0, "msg": "ok", "data": false}'),
        "data-empty": ("application/json", b'{"code": 0, "msg": "ok", "data": ""}'),
        "not-json": ("text/html", b"<html>login page</html>"),
        "not-envelope": ("application/json", b'["alice"]'),
    }

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        token = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        content_type, body = self.ANSWERS.get(token, ("application/json", b'{"code": 401, "data": null}'))
        status = 200 if token in self.ANSWERS else 401
        headers = [(b"content-type", content_type.encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def odd_service(pipeline: Any) -> Iterator[tuple[str, OddGateway]]:
    odd = OddGateway()
    with serve_in_thread(odd, free_port()) as gateway_url:
        client = GatewayClient(gateway_url, failure_ttl=0.001)
        app = FastAPI()

        @app.get("/whoami")
        async def whoami() -> dict[str, Any]:
            return {"caller": current_caller_id()}

        @app.websocket("/ws")
        async def ws(socket: WebSocket) -> None:
            await socket.accept()
            await socket.send_json({"caller": current_caller_id()})
            await socket.close()

        app.add_middleware(WebSocketHttpContextMiddleware, client=client)
        instrument_app(app, client=client)
        with serve_in_thread(app, free_port()) as url:
            yield url, odd


@pytest.mark.parametrize("token", ["code-401", "data-null", "data-false", "data-empty", "not-json", "not-envelope"])
def test_anything_but_a_well_formed_success_is_a_401(odd_service: tuple[str, OddGateway], token: str) -> None:
    url, _ = odd_service
    response = httpx.get(f"{url}/whoami", headers={"Authorization": token})
    assert response.status_code == 401, response.text
    assert response.json()["code"] == 401
    assert httpx.get(f"{url}/whoami", headers={"Authorization": "good"}).json() == {"caller": "alice"}


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer t\xf6k\xe9n", b"\xff\xfe\x00x"[:2] + b"abc", b"x" * 40_000, b"Bearer " + b"y" * 9_000],
    ids=["latin-1", "binary", "40 KB", "9 KB"],
)
def test_a_malformed_or_oversized_authorization_is_a_401_without_a_gateway_call(
    odd_service: tuple[str, OddGateway], authorization: bytes
) -> None:
    url, odd = odd_service
    calls = odd.calls
    response = httpx.get(f"{url}/whoami", headers=[(b"Authorization", authorization)])
    assert response.status_code == 401
    assert response.json()["msg"] == "malformed token"
    assert odd.calls == calls


def test_a_websocket_with_a_malformed_token_is_refused_not_failed(odd_service: tuple[str, OddGateway]) -> None:
    url, _ = odd_service

    async def talk() -> None:
        async with websockets.connect(url.replace("http", "ws") + "/ws", additional_headers=[("Authorization", "tök")]):
            pass

    # Refused before the handshake completes: uvicorn answers the close (1008) with HTTP 403, not 500.
    with pytest.raises(websockets.InvalidStatus) as refused:
        asyncio.run(talk())
    assert refused.value.response.status_code == 403


def test_uvicorn_lines_never_show_a_token_with_the_middlewares_added_by_hand(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "uvicorn.log"
    rejected = f"bad-{uuid.uuid4().hex}"
    query = f"q-{uuid.uuid4().hex}"
    env = {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")}
    # uvicorn at its default log level: the test reads its access lines
    command = [sys.executable, "-m", "uvicorn", "middleware_only_app:app", "--port", str(port)]
    with serving(command, port=port, cwd=PROGRAMS, env=env, log=log):
        base = f"127.0.0.1:{port}"
        response = httpx.get(
            f"http://{base}/v1/items?access_token={query}&page=1", headers={"Authorization": "demo-alice"}
        )
        assert response.status_code == 200

        async def sockets() -> None:
            async with websockets.connect(f"ws://{base}/ws?token=demo-alice") as socket:
                assert await socket.recv() == "hello"
            with pytest.raises(websockets.InvalidStatus):  # refused: 403
                async with websockets.connect(f"ws://{base}/ws?token={rejected}"):
                    pass

        asyncio.run(sockets())
        assert eventually(lambda: log.read_text().count("WebSocket /ws") >= 2)
    text = log.read_text()
    assert "GET /v1/items?access_token=[REDACTED]&page=1" in text, text
    assert "/ws?token=[REDACTED]" in text, text
    for secret in ("demo-alice", rejected, query):
        assert secret not in text, text


def test_spool_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.put([("u-1", b'{"uuid": "u-1"}')], error="gateway unavailable")
    files = sorted((tmp_path / "spool").iterdir())
    assert {path.name for path in files} >= {"spool.sqlite3", "spool.sqlite3-wal", "spool.sqlite3-shm"}
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    spool.close()


HOSTILE = "route [/api/v1/chat] not found [link=https://evil.example]click[/link] \x1b[31mred\x07"


def test_record_trees_print_records_as_text() -> None:
    record = {
        "uuid": "u-1",
        "requestId": "r-[bold]1",
        "callerId": "bob[/]",
        "opLogType": "out",
        "opType": "chat[/x]",
        "isCostLog": False,
        "operationStatus": "failed",
        "errMsg": HOSTILE,
        "startTimeMillis": 1,
        "durationMillis": 2,
        "extraInfo": {"spanId": "s1", "service": "svc[red]"},
    }
    console = Console(record=True, width=400, force_terminal=True)
    console.print(record_tree("r-[bold]1", [record]))
    text = console.export_text()
    for literal in ("route [/api/v1/chat] not found", "[link=https://evil.example]click[/link]", "chat[/x]", "bob[/]"):
        assert literal in text, text
    assert "\\x1b[31mred\\x07" in text
    assert "evil.example" not in "".join(
        segment.style.link or "" for segment in console._record_buffer if segment.style
    )


def test_spool_show_prints_hostile_reasons_as_text(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.dead_letter("dead-1", b'{"uuid": "dead-1", "opType": "x[/y]", "requestId": "r"}', HOSTILE)
    spool.close()
    shown = subprocess.run(
        [sys.executable, "-m", "gateway_otel.cli", "spool", "show"],
        env={**os.environ, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path), "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "route [/api/v1/chat] not found" in shown.stdout and "x[/y]" in shown.stdout
    assert "\x1b[31m" not in shown.stdout and "\x07" not in shown.stdout
