"""When a request fails, its request id is in the response, the logs, the span and the records.

Real uvicorn and gunicorn processes serve ``programs/failing_app.py``; the tests read their logs.
"""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI
from opentelemetry.trace import SpanKind, StatusCode

from gateway_otel import GatewayClient, instrument_app
from gateway_otel.testing import eventually, free_port, serve_in_thread

from conftest import PROGRAMS, Gateway, run_program, serving

ALICE = {"Authorization": "demo-alice"}


class Served:
    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def lines_with(self, text: str) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if text in line]


def serve(command: list[str], gateway: Gateway, tmp_path: Path, port: int) -> Iterator[Served]:
    log = tmp_path / "server.log"
    env = {
        "OPENAPI_HOST": gateway.url,
        "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool"),
        "OTEL_SERVICE_NAME": "failing-app",
    }
    with serving(command, port=port, cwd=PROGRAMS, env=env, log=log):
        yield Served(f"http://127.0.0.1:{port}", log)


@pytest.fixture(params=["uvicorn", "gunicorn"])
def served(request: pytest.FixtureRequest, healthy_gateway: Gateway, tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    if request.param == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "failing_app:app", "--port", str(port)]
    else:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "failing_app:app",
            "-w",
            "1",
            "-k",
            "gateway_otel.gunicorn.GatewayOtelWorker",
            "-b",
            f"127.0.0.1:{port}",
        ]
    yield from serve(command, healthy_gateway, tmp_path, port)


def test_an_unhandled_exception_answers_500_with_the_request_id_everywhere(
    served: Served, healthy_gateway: Gateway
) -> None:
    rid = f"fail-{uuid.uuid4().hex}"
    response = httpx.post(f"{served.url}/explode", json={"text": "t"}, headers={**ALICE, "X-Request-ID": rid})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == rid
    assert response.json() == {"code": 500, "msg": "Internal Server Error", "data": None, "requestId": rid}
    # The exception's log line and the access line of the 500 name the request and its caller.
    assert eventually(lambda: served.lines_with("Exception in ASGI application") and served.lines_with("/explode"))
    (error,) = served.lines_with("Exception in ASGI application")
    assert f"[{rid}] [alice] [" in error and "[-]" not in error, error
    access = served.lines_with("POST /explode")
    assert access and all(rid in line for line in access), access
    # The records say where it failed.
    records = healthy_gateway.wait_records(rid, 2)
    out = next(r for r in records if r["opLogType"] == "out")
    assert out["operationStatus"] == "failed"
    assert "RuntimeError" in out["errMsg"] and "model failed" in out["errMsg"]


def test_the_apps_own_handlers_answer_as_before_with_the_request_id(served: Served) -> None:
    rid = f"refused-{uuid.uuid4().hex}"
    response = httpx.post(f"{served.url}/refuse", headers={**ALICE, "X-Request-ID": rid})
    assert response.status_code == 418
    assert response.json() == {"refused": True}
    assert response.headers["x-request-id"] == rid


def test_a_stream_that_breaks_keeps_its_id_and_fails_its_records(served: Served, healthy_gateway: Gateway) -> None:
    rid = f"stream-{uuid.uuid4().hex}"
    with httpx.stream("GET", f"{served.url}/stream", headers={**ALICE, "X-Request-ID": rid}) as response:
        assert response.headers["x-request-id"] == rid
        with pytest.raises(httpx.HTTPError):
            response.read()
    records = healthy_gateway.wait_records(rid, 4)
    outs = {r["opType"]: r["operationStatus"] for r in records if r["opLogType"] == "out"}
    assert outs == {"GET /stream": "failed", "words": "failed"}
    assert eventually(lambda: served.lines_with("Exception in ASGI application"))
    (error,) = served.lines_with("Exception in ASGI application")
    assert f"[{rid}] [alice]" in error, error


def test_a_websocket_that_fails_closes_with_1011_and_logs_its_request_id(served: Served) -> None:
    rid = f"ws-{uuid.uuid4().hex}"

    async def talk() -> int | None:
        url = served.url.replace("http", "ws") + "/ws"
        async with websockets.connect(url, additional_headers={**ALICE, "X-Request-ID": rid}) as socket:
            with pytest.raises(websockets.ConnectionClosed):
                await socket.recv()
            return socket.close_code

    assert asyncio.run(talk()) == 1011
    assert eventually(lambda: served.lines_with("Exception in ASGI application"))
    (error,) = served.lines_with("Exception in ASGI application")
    assert f"[{rid}] [alice]" in error, error


def test_log_lines_outside_a_request_format_with_dashes_before_and_after_set_up(tmp_path: Path) -> None:
    result = run_program(
        "log_format_outside_requests", env={"OPENAPI_HOST": "", "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    assert "Logging error" not in result.stderr, result.stderr
    assert "INFO [-] [-] [-] before set-up" in result.stdout
    assert re.search(r"WARNING \[-\] \[-\] \[-\] gateway-otel: OPENAPI_HOST is not set", result.stdout), result.stdout
    assert "INFO [-] [-] [-] after set-up" in result.stdout


def test_the_server_span_is_an_error_with_the_exception_recorded(
    healthy_gateway: Gateway, pipeline: Any, captured_spans: Any
) -> None:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise LookupError("no such thing")

    instrument_app(app, client=GatewayClient(healthy_gateway.url))
    rid = f"span-{uuid.uuid4().hex}"
    with serve_in_thread(app, free_port()) as url:
        response = httpx.get(f"{url}/boom", headers={**ALICE, "X-Request-ID": rid})
    assert response.status_code == 500 and response.headers["x-request-id"] == rid

    def server_span() -> Any:
        return next(
            (s for s in captured_spans.get_finished_spans() if s.kind is SpanKind.SERVER and s.name == "GET /boom"),
            None,
        )

    span = eventually(server_span, timeout=5)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "LookupError"
    (event,) = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "LookupError"
    assert event.attributes["exception.message"] == "no such thing"
