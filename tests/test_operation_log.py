"""@operation_log: spans, in/out records at the real reference gateway."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from gateway_otel import (
    caller_id_context,
    current_request_id,
    operation_log,
    request_url_context,
    trace_id_context,
)
from gateway_otel._records import record_uuid

from conftest import Gateway


@pytest.fixture
def request_id(pipeline: Any) -> Iterator[str]:
    """A fresh request id set in context, as the ait_openapi README does, reset afterwards."""
    rid = uuid.uuid4().hex
    t_token = trace_id_context.set(rid)
    c_token = caller_id_context.set("alice")
    r_token = request_url_context.set("http://svc/v1/chat")
    yield rid
    trace_id_context.reset(t_token)
    caller_id_context.reset(c_token)
    request_url_context.reset(r_token)


@operation_log()
def safety_check(request: Any, *, validate_output: bool) -> dict[str, Any]:
    return {"safe": True, "validated": validate_output}


@operation_log(op_type="billed_check", is_cost_log=True)
async def async_safety_check(request: Any, *, validate_output: bool) -> str:
    await asyncio.sleep(0)
    return "ok"


def test_sync_call_reports_an_in_and_an_out_record(request_id: str, healthy_gateway: Gateway, flush: Any) -> None:
    assert safety_check("hello", validate_output=True) == {"safe": True, "validated": True}
    flush()
    records = healthy_gateway.wait_records(request_id, 2)
    assert [r["opLogType"] for r in records] == ["in", "out"]
    for record in records:
        assert record["requestId"] == request_id
        assert record["callerId"] == "alice"
        assert record["requestUrl"] == "http://svc/v1/chat"
        assert record["opType"] == "safety_check"
        assert record["isCostLog"] is False
        assert record["operationStatus"] == "success"
        assert record["request"] == {"request": "hello", "validate_output": True}
    assert records[0]["durationMillis"] == 0
    assert records[1]["response"] == {"safe": True, "validated": True}
    assert "response" not in records[0]


def test_async_call_with_op_type_and_billing(request_id: str, healthy_gateway: Gateway, flush: Any) -> None:
    assert asyncio.run(async_safety_check("hi", validate_output=False)) == "ok"
    flush()
    records = healthy_gateway.wait_records(request_id, 2)
    assert [(r["opLogType"], r["opType"], r["isCostLog"]) for r in records] == [
        ("in", "billed_check", True),
        ("out", "billed_check", True),
    ]
    assert records[1]["response"] == "ok"


def test_record_links_to_its_trace_and_has_a_stable_uuid(request_id: str, healthy_gateway: Gateway, flush: Any) -> None:
    safety_check(1, validate_output=False)
    flush()
    first, second = healthy_gateway.wait_records(request_id, 2)
    extra = first["extraInfo"]
    assert len(extra["traceId"]) == 32 and int(extra["traceId"], 16)
    assert len(extra["spanId"]) == 16 and int(extra["spanId"], 16)
    assert extra["service"]
    assert second["extraInfo"]["spanId"] == extra["spanId"]
    trace_id, span_id = int(extra["traceId"], 16), int(extra["spanId"], 16)
    assert first["uuid"] == record_uuid(trace_id, span_id, "in")
    assert second["uuid"] == record_uuid(trace_id, span_id, "out")


def test_exception_is_reraised_unchanged_and_recorded(request_id: str, healthy_gateway: Gateway, flush: Any) -> None:
    error = KeyError("missing")

    @operation_log
    def failing() -> None:
        raise error

    with pytest.raises(KeyError) as raised:
        failing()
    assert raised.value is error
    flush()
    records = healthy_gateway.wait_records(request_id, 2)
    assert records[0]["operationStatus"] == "success"
    assert records[1]["operationStatus"] == "failed"
    assert records[1]["errMsg"] == "KeyError: 'missing'"


def test_duration_is_measured(request_id: str, healthy_gateway: Gateway, flush: Any) -> None:
    @operation_log
    def slow() -> None:
        time.sleep(0.05)

    slow()
    flush()
    out = healthy_gateway.wait_records(request_id, 2)[1]
    assert out["durationMillis"] >= 50


def test_generator_reports_out_when_exhausted(request_id: str, healthy_gateway: Gateway, flush: Any) -> None:
    @operation_log
    def stream(n: int) -> Iterator[int]:
        assert current_request_id() == request_id
        yield from range(n)

    assert list(stream(3)) == [0, 1, 2]
    flush()
    records = healthy_gateway.wait_records(request_id, 2)
    assert [r["opLogType"] for r in records] == ["in", "out"]
    assert records[1]["response"] == [0, 1, 2]


def test_generator_closed_early_reports_out(request_id: str, healthy_gateway: Gateway, flush: Any) -> None:
    closed = []

    @operation_log
    def stream() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    generator = stream()
    assert next(generator) == 1
    generator.close()
    assert closed == [True]
    flush()
    records = healthy_gateway.wait_records(request_id, 2)
    assert [r["opLogType"] for r in records] == ["in", "out"]
    assert records[1]["response"]["closedEarly"] is True


def test_generator_send_and_return_value_pass_through(pipeline: Any) -> None:
    @operation_log
    def echo() -> Any:
        received = yield "ready"
        return f"got {received}"

    generator = echo()
    assert next(generator) == "ready"
    with pytest.raises(StopIteration) as stop:
        generator.send("x")
    assert stop.value.value == "got x"


def test_async_generator_reports_out_when_exhausted_or_closed(
    request_id: str, healthy_gateway: Gateway, flush: Any
) -> None:
    @operation_log(is_cost_log=True)
    async def tokens(n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield f"t{i}"

    async def main() -> list[str]:
        collected = [item async for item in tokens(2)]
        early = tokens(5)
        collected.append(await early.__anext__())
        await early.aclose()
        return collected

    assert asyncio.run(main()) == ["t0", "t1", "t0"]
    flush()
    records = healthy_gateway.wait_records(request_id, 4)
    assert sorted(r["opLogType"] for r in records) == ["in", "in", "out", "out"]
    outs = [r for r in records if r["opLogType"] == "out"]
    assert {r["operationStatus"] for r in outs} == {"success"}
    assert all(r["isCostLog"] for r in outs)


def test_decorator_forms_preserve_the_function(pipeline: Any) -> None:
    @operation_log
    def bare(x: int) -> int:
        """Doc."""
        return x

    @operation_log("named")
    def positional(x: int) -> int:
        return x

    assert bare(1) == 1 and positional(2) == 2
    assert bare.__name__ == "bare" and bare.__doc__ == "Doc."
    assert positional.__wrapped__.__name__ == "positional"  # type: ignore[attr-defined]


def test_method_records_arguments_without_self(request_id: str, healthy_gateway: Gateway, flush: Any) -> None:
    class Service:
        @operation_log
        def run(self, prompt: str, *rest: int, **options: Any) -> int:
            return len(rest)

    assert Service().run("p", 1, 2, temperature=0.5) == 2
    flush()
    record = healthy_gateway.wait_records(request_id, 2)[0]
    assert record["request"] == {"prompt": "p", "rest": [1, 2], "temperature": 0.5}


def test_request_id_defaults_to_the_trace_id(pipeline: Any, captured_records: Any) -> None:
    safety_check("x", validate_output=True)
    records = captured_records.records
    assert len(records) == 2
    assert records[0]["requestId"] == records[0]["extraInfo"]["traceId"]
    assert records[0]["callerId"] == "anonymous"


def test_nested_operations_share_the_trace_and_record_their_parent(request_id: str, captured_records: Any) -> None:
    @operation_log
    def inner() -> int:
        return 1

    @operation_log
    def outer() -> int:
        return inner() + 1

    assert outer() == 2
    records = {(r["opType"], r["opLogType"]): r for r in captured_records.records}
    assert records[("inner", "out")]["extraInfo"]["traceId"] == records[("outer", "out")]["extraInfo"]["traceId"]
    assert records[("inner", "out")]["extraInfo"]["parentSpanId"] == records[("outer", "out")]["extraInfo"]["spanId"]
    spans = {span.name: span for span in captured_records.spans}
    assert spans["outer"].attributes["gateway.op_type"] == "outer"
    assert spans["outer"].attributes["gateway.caller_id"] == "alice"
    assert spans["outer"].attributes["gateway.request_id"] == request_id
    assert spans["outer"].attributes["gateway.request_url"] == "http://svc/v1/chat"
    assert spans["outer"].attributes["gateway.is_cost_log"] is False


def test_record_uuid_is_uuid5_of_trace_span_and_kind() -> None:
    from gateway_otel._records import RECORD_NAMESPACE

    for trace_id, span_id, kind in ((1, 2, "in"), (2**128 - 1, 2**64 - 1, "out"), (123456789, 987654321, "out")):
        expected = uuid.uuid5(RECORD_NAMESPACE, f"{trace_id:032x}{span_id:016x}{kind}")
        assert record_uuid(trace_id, span_id, kind) == str(expected)


def test_capture_policy_per_operation(captured_records: Any) -> None:
    @operation_log(capture_request=False, capture_response=False)
    def private(document: str) -> str:
        return document.upper()

    @operation_log(capture_request=lambda args: {"length": len(args["document"])}, capture_response=len)
    def summarized(document: str) -> str:
        return document.upper()

    assert private("secret text") == "SECRET TEXT"
    assert summarized("four") == "FOUR"
    records = {(r["opType"], r["opLogType"]): r for r in captured_records.records}
    assert records[("private", "in")]["request"] == {}
    assert "response" not in records[("private", "out")]
    assert records[("summarized", "in")]["request"] == {"length": 4}
    assert records[("summarized", "out")]["response"] == 4


def test_extra_patterns_and_allow_list_shape_redaction() -> None:
    from gateway_otel._scrub import REDACTED, Scrubber

    scrubber = Scrubber(patterns=[r"^ssn$"], allow=["session_id"])
    assert scrubber.scrub({"ssn": "123", "session_id": "abc", "Api-Key": "k", "max_tokens": 5}) == {
        "ssn": REDACTED,
        "session_id": "abc",
        "Api-Key": REDACTED,
        "max_tokens": 5,
    }


def test_serialized_json_is_scrubbed_whatever_the_case_of_its_keys() -> None:
    import orjson

    from gateway_otel._scrub import REDACTED, Scrubber

    scrubber = Scrubber()
    for key in ("PASSWORD", "X-Api-Key", "Authorization", "SessionToken", "JWT"):
        assert orjson.loads(scrubber.scrub_json(orjson.dumps({key: "s3cret", "n": 1}))) == {key: REDACTED, "n": 1}
    clean = orjson.dumps({"prompt": "Hello", "temperature": 0.5})
    assert scrubber.scrub_json(clean) is clean  # nothing suspect: not parsed again


def test_counts_of_tokens_are_kept_and_tokens_are_not() -> None:
    import orjson

    from gateway_otel._scrub import REDACTED, Scrubber

    scrubber = Scrubber()
    answer = orjson.dumps({"echo": "hi", "tokens": 47, "usage": {"total_tokens": 5, "completion_tokens": 2.5}})
    assert scrubber.scrub_json(answer) is answer  # counts only: nothing suspect, not parsed again
    assert scrubber.scrub(
        {"tokens": ["sk-1"], "token": 5, "tokens_used": 3, "access_tokens": "abc", "tokens ok": True}
    ) == {
        "tokens": REDACTED,  # not a number
        "token": REDACTED,  # one token, not a count
        "tokens_used": 3,
        "access_tokens": REDACTED,
        "tokens ok": REDACTED,  # a boolean is not a count
    }


@pytest.mark.parametrize(
    "value",
    [
        {"tokens": 47, "api_key": "k"},
        {"tokens": "sk-live-abc"},
        {"note": 'tokens=abc":5'},  # a quote inside a string is escaped: still suspect
        {'tok"ens': 1, "tokens\\": 2},
        {"text": "Bearer abcdefgh", "tokens": -3},
        {"items": [{"max_tokens": 1}, {"token": "t"}]},
        {"tokens": 1e300, "Tokens": 0},
        {"upstream": "Basic dXNlcjpzM2NyM3Q="},  # a credential in a string, under no secret name
        {"x-api.key": "k", "Private Key": "p"},
    ],
)
def test_the_quick_look_at_serialized_json_agrees_with_the_full_scrub(value: dict[str, Any]) -> None:
    import orjson

    from gateway_otel._scrub import Scrubber

    scrubber = Scrubber()
    data = orjson.dumps(value)
    assert orjson.loads(scrubber.scrub_json(data)) == scrubber.scrub(value)


def test_records_waiting_for_delivery_keep_no_span_alive() -> None:
    """Queued records hold plain values, not spans: under load, spans kept alive in the queue filled
    the garbage collector's old generations and its full collections became the service's p99."""
    import gc
    import weakref

    from opentelemetry.sdk.trace import TracerProvider

    from gateway_otel._exporter import GatewaySpanExporter
    from gateway_otel._processor import OperationSpanProcessor

    queued: list[tuple[Any, Any]] = []

    class Queue:
        def submit(self, build: Any, item: Any) -> None:
            queued.append((build, item))

        def shutdown(self) -> None:
            pass

    provider = TracerProvider()
    provider.add_span_processor(OperationSpanProcessor(GatewaySpanExporter(Queue())))  # type: ignore[arg-type]
    span = provider.get_tracer("test").start_span(
        "bill", attributes={"gateway.op_type": "bill", "gateway.is_cost_log": True, "gateway.request": '{"i":1}'}
    )
    span.set_attribute("gateway.response", "1")
    span.end()
    trace_id, span_id = span.get_span_context().trace_id, span.get_span_context().span_id
    alive = weakref.ref(span)
    del span
    gc.collect()
    assert alive() is None
    assert len(queued) == 2
    # Each is one tuple of values the collector never follows (no containers, no spans).
    assert all(not gc.is_tracked(value) for _, item in queued for value in item)
    records = [build(item) for build, item in queued]
    assert [r["opLogType"] for r in records] == ["in", "out"]
    assert [r["uuid"] for r in records] == [record_uuid(trace_id, span_id, "in"), record_uuid(trace_id, span_id, "out")]
    assert "response" not in records[0]
    assert records[1]["isCostLog"] is True
