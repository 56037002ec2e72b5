"""Request identity in OTel Context: set/reset, threads, pools, processes."""

from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from opentelemetry import baggage, context

from gateway_otel import (
    ThreadCopyContext,
    caller_id_context,
    context_executor,
    current_caller_id,
    current_request_id,
    request_url_context,
    run_in_context,
    trace_id_context,
)
from gateway_otel._client import GatewayClient
from gateway_otel.middleware import HttpContextMiddleware


def test_values_are_otel_baggage() -> None:
    token = trace_id_context.set("req-1")
    try:
        assert current_request_id() == "req-1"
        assert baggage.get_baggage("gateway.request_id") == "req-1"
        assert trace_id_context.get() == "req-1"
    finally:
        trace_id_context.reset(token)
    assert current_request_id() is None


def test_identity_is_set_as_three_baggage_calls_would_set_it() -> None:
    from gateway_otel._context import with_identity

    key = context.create_key("other")
    base = context.set_value(key, "kept", baggage.set_baggage("gateway.caller_id", "upstream"))
    base = baggage.set_baggage("tenant", "t1", base)
    for ids in [("r1", "alice", "http://x/y"), ("r2", None, "http://x/z"), (None, None, None)]:
        ctx = with_identity(base, request_id=ids[0], caller_id=ids[1], request_url=ids[2])
        expected = base
        for name, value in zip(("gateway.request_id", "gateway.caller_id", "gateway.request_url"), ids, strict=True):
            expected = (
                baggage.remove_baggage(name, expected) if value is None else baggage.set_baggage(name, value, expected)
            )
        assert dict(baggage.get_all(ctx)) == dict(baggage.get_all(expected))
        assert context.get_value(key, ctx) == "kept"
    assert dict(baggage.get_all(base)) == {"gateway.caller_id": "upstream", "tenant": "t1"}  # base untouched


def test_the_direct_context_calls_are_the_otel_apis_own(caplog: Any) -> None:
    from gateway_otel import _context

    assert _context._CURRENT is not None  # the SDK's default runtime context: its ContextVar is used
    key = context.create_key("direct")
    ours = context.set_value(key, "ours")
    token = _context.attach(ours)
    assert context.get_current() is ours is _context.get_current()
    api_token = context.attach(context.set_value(key, "api's"))
    assert _context.get_current().get(key) == "api's"
    context.detach(api_token)
    _context.detach(token)
    assert context.get_value(key) is None
    _context.detach(token)  # used twice: logged as context.detach logs it, never raised
    assert "Failed to detach context" in caplog.text


def test_tokens_reset_in_the_order_they_were_set() -> None:
    # The ait_openapi README sets trace, caller, url and resets them in that same order.
    t_token = trace_id_context.set("t")
    c_token = caller_id_context.set("c")
    r_token = request_url_context.set("r")
    trace_id_context.reset(t_token)
    assert (current_request_id(), current_caller_id(), request_url_context.get()) == (None, "c", "r")
    caller_id_context.reset(c_token)
    request_url_context.reset(r_token)
    assert (current_request_id(), current_caller_id(), request_url_context.get()) == (None, None, None)


def test_nested_set_and_reset_restore_the_outer_value() -> None:
    outer = caller_id_context.set("outer")
    inner = caller_id_context.set("inner")
    assert current_caller_id() == "inner"
    caller_id_context.reset(inner)
    assert current_caller_id() == "outer"
    caller_id_context.reset(outer)
    assert current_caller_id() is None


def test_thread_copy_context_carries_the_values_and_plain_threads_do_not() -> None:
    seen: list[Any] = []
    token = request_url_context.set("http://localhost:8000")
    try:
        plain = threading.Thread(target=lambda: seen.append(request_url_context.get()))
        plain.start()
        plain.join()
        copied = ThreadCopyContext(
            target=lambda suffix: seen.append(f"{request_url_context.get()}{suffix}"), args=("/x",)
        )
        copied.start()
        copied.join()
    finally:
        request_url_context.reset(token)
    assert seen == [None, "http://localhost:8000/x"]


def test_context_executor_runs_thread_pool_tasks_in_the_submitters_context() -> None:
    token = trace_id_context.set("pooled")
    try:
        with ThreadPoolExecutor(2) as pool:
            executor = context_executor(pool)
            assert executor.submit(current_request_id).result() == "pooled"
            assert list(executor.map(lambda _: current_request_id(), range(3))) == ["pooled"] * 3
    finally:
        trace_id_context.reset(token)


def _identity() -> tuple[str | None, str | None]:
    return current_request_id(), current_caller_id()


def test_run_in_context_crosses_into_a_process_pool() -> None:
    t_token = trace_id_context.set("proc-req")
    c_token = caller_id_context.set("bob")
    try:
        with ProcessPoolExecutor(1) as pool:
            assert pool.submit(run_in_context(_identity)).result(timeout=60) == ("proc-req", "bob")
    finally:
        caller_id_context.reset(c_token)
        trace_id_context.reset(t_token)


def test_run_in_context_binds_the_context_at_wrap_time() -> None:
    token = trace_id_context.set("at-wrap")
    bound = run_in_context(current_request_id)
    trace_id_context.reset(token)
    assert current_request_id() is None
    assert bound() == "at-wrap"
    assert context.get_current() is not None


def test_a_request_without_a_server_span_gets_a_random_request_id_of_32_hex_digits() -> None:
    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_request_id())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    # As ait_openapi's users add it: no server span (no trace id to take), no gateway (anonymous).
    middleware = HttpContextMiddleware(app, client=GatewayClient(None))
    returned: list[str] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            returned.extend(value.decode() for name, value in message["headers"] if name == b"x-request-id")

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def requests() -> None:
        for _ in range(3):
            scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}
            await middleware(scope, receive, send)

    asyncio.run(requests())
    assert returned == seen and len(set(returned)) == 3
    assert all(re.fullmatch("[0-9a-f]{32}", request_id or "") for request_id in returned)
