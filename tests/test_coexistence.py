"""Living with the user's OpenTelemetry: the contrib instrumentors installed and applied."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import SpanKind

from gateway_otel import GatewayClient, instrument_app, operation_log
from gateway_otel._servers import serve_in_thread
from gateway_otel.testing import eventually, free_port

from conftest import Gateway, parent_op, run_program


@operation_log(is_cost_log=True)
async def answer(prompt: str) -> str:
    return prompt.upper()


def test_with_the_contrib_fastapi_instrumentor_each_request_has_one_server_span(
    healthy_gateway: Gateway, pipeline: Any, captured_spans: Any
) -> None:
    app = FastAPI()

    @app.post("/v1/answer")
    async def endpoint(body: dict[str, str]) -> dict[str, str]:
        return {"answer": await answer(body["prompt"])}

    FastAPIInstrumentor.instrument_app(app)
    instrument_app(app, client=GatewayClient(healthy_gateway.url))
    trace_id = uuid.uuid4().hex
    rid = f"one-span-{uuid.uuid4().hex}"
    headers = {"Authorization": "demo-alice", "X-Request-ID": rid, "traceparent": f"00-{trace_id}-{'2' * 16}-01"}
    try:
        with serve_in_thread(app, free_port()) as url:
            assert httpx.post(f"{url}/v1/answer", json={"prompt": "hi"}, headers=headers).status_code == 200

            def ours() -> list[Any]:
                return [s for s in captured_spans.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]

            assert eventually(lambda: any(s.kind is SpanKind.SERVER for s in ours()), timeout=5)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    spans = ours()
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(servers) == 1, [(s.name, s.instrumentation_scope.name) for s in servers]
    (server,) = servers
    assert server.instrumentation_scope.name.startswith("opentelemetry.instrumentation")  # the contrib's
    assert server.attributes["gateway.request_id"] == rid
    assert server.attributes["gateway.caller_id"] == "alice"
    (operation,) = [s for s in spans if s.name == "answer"]
    assert operation.parent is not None and operation.parent.span_id == server.context.span_id
    assert server.parent is not None and f"{server.parent.span_id:016x}" == "2" * 16


def test_with_the_contrib_instrumentor_a_stream_broken_after_the_response_started_fails_with_its_error(
    healthy_gateway: Gateway, pipeline: Any, captured_records: Any
) -> None:
    """The contrib's span is described at the response's start; an exception that breaks the body
    later still gives the request's out record the exception as its error, as the adapter's own
    server span does."""
    app = FastAPI()

    @app.get("/v1/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"one\n"
            raise RuntimeError("the model went away")

        return StreamingResponse(chunks())

    FastAPIInstrumentor.instrument_app(app)
    instrument_app(app, client=GatewayClient(healthy_gateway.url))
    trace_id = uuid.uuid4().hex
    headers = {"Authorization": "demo-alice", "traceparent": f"00-{trace_id}-{'4' * 16}-01"}
    try:
        with serve_in_thread(app, free_port()) as url:
            with pytest.raises(httpx.RemoteProtocolError):  # the body was cut short
                httpx.get(f"{url}/v1/stream", headers=headers)
            assert eventually(lambda: len(captured_records.of(trace_id)) == 2, timeout=5)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    out = captured_records.of(trace_id)[1]
    assert (out["opType"], out["opLogType"], out["response"]) == ("GET /v1/stream", "out", 200)
    assert out["operationStatus"] == "failed"
    assert out["errMsg"] == "RuntimeError: the model went away"


class HeaderKeeper:
    """A gateway's token check that keeps the headers of each call."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"code": 0, "msg": "ok", "data": "alice"}'})


@pytest.fixture
def instrumented_httpx() -> Iterator[None]:
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument()
    try:
        yield
    finally:
        instrumentor.uninstrument()


def test_the_adapters_own_calls_make_no_spans_and_send_no_trace_headers(
    pipeline: Any, captured_spans: Any, instrumented_httpx: None
) -> None:
    keeper = HeaderKeeper()
    app = FastAPI()

    @app.get("/who")
    async def who() -> dict[str, str]:
        return {"ok": "yes"}

    with serve_in_thread(keeper, free_port()) as gateway_url:
        client = GatewayClient(gateway_url)
        instrument_app(app, client=client)
        with serve_in_thread(app, free_port()) as url:
            assert httpx.get(f"{url}/who", headers={"Authorization": "async-token"}).status_code == 200
        try:
            assert client.validate_token("sync-token") == "alice"
        finally:
            client.close()
    assert len(keeper.headers) == 2
    for headers in keeper.headers:
        assert "traceparent" not in headers and "baggage" not in headers, headers
    client_spans = [
        s for s in captured_spans.get_finished_spans() if s.kind is SpanKind.CLIENT and "validate" in str(s.attributes)
    ]
    assert client_spans == []


def test_the_sdks_own_span_metrics_count_the_adapters_spans(tmp_path: Any) -> None:
    """``otel.sdk.span.started`` counts three operations and two spans of the user's: five; ``live``
    is back to nought once they ended."""
    env = {
        "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": "true",
        "OPENAPI_HOST": "",
        "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path),
    }
    result = run_program("sdk_span_metrics", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["5", "0"]


@pytest.mark.parametrize("order", ["AFTER", "BEFORE"])
def test_with_logfire_configured_before_or_after_operations_go_through_logfires_provider(
    healthy_gateway: Gateway, tmp_path: Any, order: str
) -> None:
    """Logfire's provider wraps the SDK's: the operation spans reach Logfire's processors, a
    ``logfire.span`` inside an operation is its child, and the records carry Logfire's service name;
    also when ``configure()`` came first (one provider: Logfire's, joined at the first span)."""
    rid = f"logfire-{uuid.uuid4().hex}"
    env = {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)}
    result = run_program("logfire_app", rid, order, env=env)
    assert result.returncode == 0, result.stderr
    assert "not the OpenTelemetry SDK's" not in result.stderr
    assert "Overriding of current TracerProvider" not in result.stderr
    assert sorted(result.stdout.splitlines()) == ["inner_{i} work", "inner_{i} work", "work -", "work -"]
    records = healthy_gateway.wait_records(rid, 4)
    assert len(records) == 4
    assert {r["extraInfo"]["service"] for r in records} == {"lf-service"}


def test_a_contrib_server_span_nothing_adopted_is_a_request_record_pair(pipeline: Any, captured_records: Any) -> None:
    """The contrib FastAPI instrumentor alone (no ``instrument_app``): its SERVER span is reported as
    the request's record pair, anonymous, under its trace id, the route's template as the operation."""
    app = FastAPI()

    @app.get("/v1/items/{item}")
    async def item(item: int) -> dict[str, int]:
        return {"item": item}

    FastAPIInstrumentor.instrument_app(app)
    trace_id = uuid.uuid4().hex
    try:
        with serve_in_thread(app, free_port()) as url:
            headers = {"traceparent": f"00-{trace_id}-{'3' * 16}-01"}
            assert httpx.get(f"{url}/v1/items/7?api_key=sk-1", headers=headers).status_code == 200
            assert eventually(lambda: len(captured_records.of(trace_id)) == 2, timeout=5)
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    records = captured_records.of(trace_id)
    assert [(r["opType"], r["opLogType"], r["isCostLog"]) for r in records] == [
        ("GET /v1/items/{item}", "in", False),
        ("GET /v1/items/{item}", "out", False),
    ]
    out = records[1]
    assert out["callerId"] == "anonymous" and out["response"] == 200
    assert out["extraInfo"]["parentSpanId"] == "3" * 16
    assert "sk-1" not in out["requestUrl"] and out["requestUrl"].endswith("/v1/items/7?api_key=[REDACTED]")


@pytest.mark.parametrize("kind", ["SDK_AFTER", "FOREIGN"])
def test_operation_spans_go_through_the_provider_the_app_set_and_records_flow(
    healthy_gateway: Gateway, tmp_path: Any, kind: str
) -> None:
    """``SDK_AFTER``: the app sets an SDK provider of its own after ``configure()``: it is joined (one
    provider, its processors see the operations, the records carry its service name). ``FOREIGN``: a
    provider that is not the SDK's starts the operation spans, the spans opened inside are their
    children, and the records name the span ids that provider made, in one tree."""
    rid = f"provider-{uuid.uuid4().hex}"
    env = {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)}
    result = run_program("other_providers", rid, kind, env=env)
    assert result.returncode == 0, result.stderr
    assert "Overriding of current TracerProvider" not in result.stderr
    *lines, service = result.stdout.splitlines()
    seen = {name: (span_id, parent, op_type) for span_id, name, parent, op_type in map(str.split, lines)}
    assert {name: rest[1:] for name, rest in seen.items()} == {
        "app-span": ("outer", "-"),
        "failing": ("-", "failing"),
        "inner": ("app-span", "inner"),
        "outer": ("-", "outer"),
    }
    records = healthy_gateway.wait_records(rid, 6)
    assert len(records) == 6
    for record in records:
        assert record["extraInfo"]["spanId"] == seen[record["opType"]][0]
        assert record["extraInfo"]["service"] == service
    assert service == ("app-own" if kind == "SDK_AFTER" else "other_providers")
    inner = next(r for r in records if r["opType"] == "inner")
    if os.environ.get("GATEWAY_OTEL_LEAN_SPANS") == "0":  # the SDK's start_span: a record's parent is its span's
        assert inner["extraInfo"]["parentSpanId"] == seen["app-span"][0]
    else:  # the nearest record above it, past the app's span (the record tree's trace state entry)
        assert {r["opType"]: parent_op(records, r) for r in records} == {
            "outer": None,
            "inner": "outer",
            "failing": None,
        }
    outs = {r["opType"]: r for r in records if r["opLogType"] == "out"}
    assert outs["failing"]["operationStatus"] == "failed" and "ValueError" in outs["failing"]["errMsg"]
    assert outs["outer"]["operationStatus"] == "success" and outs["outer"]["isCostLog"]
