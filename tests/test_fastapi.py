"""FastAPI integration over real uvicorn servers: auth, identity, request ids, logs, WebSockets."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import websockets
from fastapi import FastAPI, WebSocket
from opentelemetry.trace import SpanKind

from gateway_otel import GatewayClient, current_caller_id, current_request_id, instrument_app, operation_log
from gateway_otel._servers import serve_in_thread
from gateway_otel.middleware import WebSocketHttpContextMiddleware
from gateway_otel.testing import eventually, free_port

from conftest import Gateway, assert_one_tree, run_program

logger = logging.getLogger("tests.app")


@operation_log(is_cost_log=True)
async def chat(prompt: str, api_key: str | None = None) -> dict[str, Any]:
    logger.warning("handling chat")
    return {"answer": prompt.upper()}


def make_app(gateway_url: str, records: list[logging.LogRecord]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat")
    async def chat_endpoint(body: dict[str, Any]) -> dict[str, Any]:
        return await chat(body["prompt"], api_key=body.get("api_key"))

    @app.get("/v1/actuator/health/{probe}")
    async def health(probe: str) -> dict[str, Any]:
        return {"ok": probe, "caller": current_caller_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom, password=hunter2")

    @app.get("/whoami")
    async def whoami() -> dict[str, Any]:
        return {"caller": current_caller_id(), "request_id": current_request_id()}

    @app.websocket("/ws")
    async def ws(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_json({"caller": current_caller_id()})
        await socket.close()

    client = GatewayClient(gateway_url, token_ttl=60, failure_ttl=1)
    app.add_middleware(WebSocketHttpContextMiddleware, client=client)
    instrument_app(app, exclude_path=["/v1/actuator/health/<pattern>"], client=client)

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    return app


@pytest.fixture(scope="module")
def log_records() -> list[logging.LogRecord]:
    return []


@pytest.fixture(scope="module")
def service(gateway: Gateway, pipeline: Any, log_records: list[logging.LogRecord]) -> Iterator[str]:
    with serve_in_thread(make_app(gateway.url, log_records), free_port()) as url:
        yield url


ALICE = {"Authorization": "Bearer demo-alice"}


def test_records_carry_the_tokens_caller_the_url_and_the_returned_request_id(
    service: str, healthy_gateway: Gateway, flush: Any
) -> None:
    response = httpx.post(f"{service}/v1/chat?api_key=sk-secret&lang=en", json={"prompt": "hi"}, headers=ALICE)
    assert response.status_code == 200 and response.json() == {"answer": "HI"}
    request_id = response.headers["x-request-id"]
    flush()
    records = healthy_gateway.wait_records(request_id, 4)
    assert sorted((r["opType"], r["opLogType"]) for r in records) == [
        ("POST /v1/chat", "in"),  # the request is a record pair too, beside its operation's
        ("POST /v1/chat", "out"),
        ("chat", "in"),
        ("chat", "out"),
    ]
    for record in records:
        assert record["callerId"] == "alice"
        assert record["requestUrl"].endswith("/v1/chat?api_key=[REDACTED]&lang=en")
        assert "sk-secret" not in str(record)
        assert record["operationStatus"] == "success"
    assert records[0]["extraInfo"]["traceId"] == request_id  # no X-Request-ID: the trace id
    (request_out,) = [r for r in records if r["opType"] == "POST /v1/chat" and r["opLogType"] == "out"]
    assert request_out["response"] == 200
    assert {r["opType"] for r in records if r["isCostLog"]} == {"chat"}  # only the operation bills
    assert_one_tree(records, root="POST /v1/chat")


def test_requests_are_records_failed_on_a_server_error_and_never_billed(
    service: str, healthy_gateway: Gateway, flush: Any
) -> None:
    rid = f"req-{uuid.uuid4().hex}"
    answered = {
        path: httpx.get(f"{service}{path}", headers={**ALICE, "X-Request-ID": f"{rid}-{n}"}).status_code
        for n, path in enumerate(["/whoami", "/boom", "/v1/actuator/health/live", "/nowhere"])
    }
    assert answered == {"/whoami": 200, "/boom": 500, "/v1/actuator/health/live": 200, "/nowhere": 404}
    flush()
    outs = {}
    for n in range(4):
        records = healthy_gateway.wait_records(f"{rid}-{n}", 2)
        assert [r["opLogType"] for r in records] == ["in", "out"]
        assert not any(r["isCostLog"] for r in records)
        outs[records[1]["opType"]] = records[1]
    assert {op: (r["operationStatus"], r["response"]) for op, r in outs.items()} == {
        "GET /whoami": ("success", 200),
        "GET /boom": ("failed", 500),
        "GET /v1/actuator/health/{probe}": ("success", 200),  # the route's template, not the path
        "GET": ("success", 404),  # no route matched: the method alone
    }
    assert outs["GET /boom"]["errMsg"].startswith("RuntimeError: boom")
    assert "hunter2" not in outs["GET /boom"]["errMsg"]


def test_a_sane_client_request_id_is_honoured(service: str) -> None:
    response = httpx.get(f"{service}/whoami", headers={**ALICE, "X-Request-ID": "client-req.1:abc"})
    assert response.headers["x-request-id"] == "client-req.1:abc"
    assert response.json() == {"caller": "alice", "request_id": "client-req.1:abc"}


@pytest.mark.parametrize("bad", ["x" * 129, "has space", "semi;colon", "ünïcode"])
def test_an_insane_client_request_id_is_replaced(service: str, bad: str) -> None:
    response = httpx.get(f"{service}/whoami", headers={**ALICE, "X-Request-ID": bad.encode("utf-8")})
    returned = response.headers["x-request-id"]
    assert returned != bad and len(returned) == 32
    assert response.json()["request_id"] == returned


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "garbage \x01\x02"}, {"Authorization": ""}],
    ids=["missing", "bad", "garbage", "empty"],
)
def test_bad_tokens_get_401_with_a_json_body(service: str, headers: dict[str, str]) -> None:
    response = httpx.get(f"{service}/whoami", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"] == 401
    assert response.headers["x-request-id"]


def test_a_10_mb_header_is_refused_and_the_service_stays_up(service: str) -> None:
    with pytest.raises(httpx.HTTPError):
        response = httpx.get(f"{service}/whoami", headers={"Authorization": "x" * (10 * 1024 * 1024)})
        assert response.status_code in (400, 401, 413, 431)
        raise httpx.HTTPError("answered")
    assert httpx.get(f"{service}/whoami", headers=ALICE).status_code == 200


def test_excluded_paths_need_no_token(service: str) -> None:
    response = httpx.get(f"{service}/v1/actuator/health/liveness")
    assert response.status_code == 200 and response.json() == {"ok": "liveness", "caller": None}


def test_100_concurrent_requests_with_a_new_token_make_one_gateway_call(service: str, healthy_gateway: Gateway) -> None:
    token = f"new-{uuid.uuid4().hex}"
    healthy_gateway.faults(token_delay=0.2)
    before = healthy_gateway.stats()["tokenChecks"]

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
            responses = await asyncio.gather(
                *(client.get(f"{service}/whoami", headers={"Authorization": f"Bearer {token}"}) for _ in range(100))
            )
        return [r.status_code for r in responses]

    statuses = asyncio.run(burst())
    assert statuses == [401] * 100  # an unknown token, rejected once for all
    assert healthy_gateway.stats()["tokenChecks"] - before == 1


def test_baggage_cannot_spoof_the_caller(service: str, healthy_gateway: Gateway, flush: Any) -> None:
    headers = {**ALICE, "baggage": "gateway.caller_id=admin,gateway.request_id=spoofed"}
    response = httpx.post(f"{service}/v1/chat", json={"prompt": "x"}, headers=headers)
    request_id = response.headers["x-request-id"]
    assert request_id != "spoofed"
    flush()
    records = healthy_gateway.wait_records(request_id, 2)
    assert {r["callerId"] for r in records} == {"alice"}
    assert healthy_gateway.records("spoofed") == []


def test_the_event_loop_is_not_blocked_by_a_slow_token_check(service: str, healthy_gateway: Gateway) -> None:
    healthy_gateway.faults(token_delay=2.0)
    checks = healthy_gateway.stats()["tokenChecks"]

    async def scenario() -> bool:
        async with httpx.AsyncClient(timeout=30) as client:
            slow = asyncio.ensure_future(
                client.get(f"{service}/whoami", headers={"Authorization": f"Bearer slow-{uuid.uuid4().hex}"})
            )
            under_way = lambda: healthy_gateway.stats()["tokenChecks"] > checks  # noqa: E731 - at the gateway
            assert await asyncio.to_thread(eventually, under_way, 10)
            fast = await client.get(f"{service}/v1/actuator/health/readiness")
            assert fast.status_code == 200
            answered_while_checking = not slow.done()
            assert (await slow).status_code == 401
            return answered_while_checking

    try:
        # Blocking the loop would hold the fast request until the slow check's answer.
        assert asyncio.run(scenario())
    finally:
        healthy_gateway.faults()


def test_log_lines_inside_a_request_carry_its_request_id(service: str, log_records: list[logging.LogRecord]) -> None:
    log_records.clear()
    response = httpx.post(f"{service}/v1/chat", json={"prompt": "log"}, headers={**ALICE, "X-Request-ID": "log-req-1"})
    assert response.status_code == 200
    lines = [r for r in log_records if r.getMessage() == "handling chat"]
    assert len(lines) == 1
    assert lines[0].request_id == "log-req-1"  # type: ignore[attr-defined]
    assert lines[0].caller_id == "alice"  # type: ignore[attr-defined]
    assert len(lines[0].trace_id) == 32  # type: ignore[attr-defined]


def test_websocket_takes_the_token_from_the_query_and_closes_1008_on_a_bad_one(service: str) -> None:
    ws_url = service.replace("http://", "ws://") + "/ws"

    async def scenario() -> tuple[Any, int | None]:
        async with websockets.connect(f"{ws_url}?token=demo-bob") as socket:
            greeting = await socket.recv()
        try:
            async with websockets.connect(f"{ws_url}?token=wrong") as socket:
                await socket.recv()
        except websockets.exceptions.ConnectionClosed as closed:
            return greeting, closed.rcvd.code if closed.rcvd else None
        except websockets.exceptions.InvalidStatus as refused:
            return greeting, refused.response.status_code
        return greeting, None

    greeting, code = asyncio.run(scenario())
    assert greeting == '{"caller":"bob"}'
    assert code in (1008, 403)


def test_concurrent_blocking_look_ups_of_one_token_make_one_gateway_call(healthy_gateway: Gateway) -> None:
    client = GatewayClient(healthy_gateway.url)
    healthy_gateway.faults(token_delay=0.2)
    before = healthy_gateway.stats()["tokenChecks"]
    try:
        with ThreadPoolExecutor(20) as pool:
            callers = list(pool.map(lambda _: client.validate_token("Bearer demo-bob"), range(20)))
    finally:
        client.close()
    assert callers == ["bob"] * 20
    assert healthy_gateway.stats()["tokenChecks"] - before == 1


def test_the_token_cache_holds_hashes_and_answers_as_the_gateway_did(healthy_gateway: Gateway) -> None:
    from gateway_otel import AuthorizationException

    client = GatewayClient(healthy_gateway.url, failure_ttl=60)
    try:
        assert client._cached_caller("Bearer demo-alice") is None  # not looked up yet: the gateway is asked
        assert client.validate_token("Bearer demo-alice") == "alice"
        with pytest.raises(AuthorizationException):
            client.validate_token("Bearer not-a-token")
        before = healthy_gateway.stats()["tokenChecks"]
        assert client._cached_caller("bearer  demo-alice ") == "alice"  # the same token, written otherwise
        with pytest.raises(AuthorizationException, match="invalid token"):
            client._cached_caller("Bearer not-a-token")  # a rejection is cached too
        for empty in ("Bearer ", " bearer", ""):
            with pytest.raises(AuthorizationException, match="missing token"):
                client._cached_caller(empty)
        assert healthy_gateway.stats()["tokenChecks"] == before
        keys = list(client._cache)
        assert len(keys) == 2 and all(isinstance(key, bytes) and len(key) == 32 for key in keys)
        assert not any(b"demo-alice" in key or b"not-a-token" in key for key in keys)
    finally:
        client.close()


def test_each_request_is_a_server_span_joining_the_callers_trace(service: str, captured_records: Any) -> None:
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{'1' * 16}-01"
    headers = {**ALICE, "traceparent": traceparent, "tracestate": "vendor=v1", "user-agent": "probe/1.0"}
    response = httpx.post(f"{service}/v1/chat", json={"prompt": "t"}, headers=headers)
    assert response.status_code == 200

    def our_spans() -> list[Any]:
        # Only this request's spans: a span of an earlier test's request may end after its response.
        return [span for span in captured_records.spans if format(span.context.trace_id, "032x") == trace_id]

    # The server span ends once the response is sent: it may end just after the client has it.
    assert eventually(lambda: any(span.kind is SpanKind.SERVER for span in our_spans()), timeout=5)
    ours = our_spans()
    spans = {span.name: span for span in ours}
    assert [span.kind for span in ours].count(SpanKind.SERVER) == 1
    server, operation = spans["POST /v1/chat"], spans["chat"]
    assert server.kind is SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.parent is not None and format(server.parent.span_id, "016x") == "1" * 16
    assert operation.parent is not None and operation.parent.span_id == server.context.span_id
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/v1/chat"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["url.path"] == "/v1/chat"
    assert server.attributes["user_agent.original"] == "probe/1.0"
    assert server.context.trace_state.get("vendor") == "v1"  # the caller's trace state goes on
    # no X-Request-ID sent: the request id is the (caller's) trace id
    assert response.headers["x-request-id"] == trace_id


@pytest.mark.parametrize(("options", "frozen"), [((), True), (("no-freeze",), False)])
def test_the_first_request_moves_the_start_up_heap_out_of_the_collectors_way(
    options: tuple[str, ...], frozen: bool, tmp_path: Any
) -> None:
    env = {"GATEWAY_OTEL_SPOOL_DIR": str(tmp_path), "OPENAPI_HOST": ""}
    result = run_program("frozen_heap", *options, env=env)
    assert result.returncode == 0, result.stderr
    before, during, later = map(int, result.stdout.split())
    # The modules, the app and its routes: thousands of objects (the interpreter may freeze some of
    # its own at start, as 3.12 does).
    assert (during - before > 1000) is frozen
    assert later <= during  # once per process


@pytest.mark.skipif(
    os.environ.get("GATEWAY_OTEL_LEAN_SPANS") == "0", reason="the lean tracer tells which processors see a span"
)
@pytest.mark.parametrize("exported", [False, True])
def test_fastapis_own_tracing_runs_only_when_something_would_see_its_spans(exported: bool, tmp_path: Any) -> None:
    # The middleware added by itself, as ait_openapi's users add it, to a FastAPI 0.16x app: the
    # provider configure() sets would make FastAPI trace every request, for nothing without an exporter.
    env = {"GATEWAY_OTEL_SPOOL_DIR": str(tmp_path), "OPENAPI_HOST": ""}
    result = run_program("drop_in_middleware", *(["exported"] if exported else []), env=env)
    assert result.returncode == 0, result.stderr
    tracing, spans = result.stdout.split()
    assert tracing == str(exported)
    assert (int(spans) >= 3) is exported  # FastAPI's spans of the three requests, when exported
