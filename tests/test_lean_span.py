"""Lean spans behave as the OTel SDK's spans: the same calls on both export the same span."""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

import gateway_otel
from gateway_otel import _span as lean_module
from gateway_otel._record_tree import TRACESTATE_KEY
from gateway_otel._sampling import BillingSafeSampler
from gateway_otel._server_span import start_server_span
from gateway_otel._span import LeanSpan, LeanTracer

LIMITS = SpanLimits(
    max_span_attributes=5,
    max_span_attribute_length=8,
    max_events=2,
    max_links=1,
    max_event_attributes=3,
    max_link_attributes=2,
)
REMOTE = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))


class Seen(SpanProcessor):
    """Records what processors are shown: the attributes at start, the span at end."""

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started.append(dict(span.attributes or {}))


def _pipeline(sampler: Sampler = ALWAYS_ON) -> tuple[trace.Tracer, InMemorySpanExporter, Seen]:
    provider = TracerProvider(sampler=sampler, span_limits=LIMITS)
    exporter = InMemorySpanExporter()
    seen = Seen()
    provider.add_span_processor(seen)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter, seen


Starter = Callable[[trace.Tracer, str, Context, dict[str, Any], SpanKind], trace.Span]


def sdk_start(tracer: trace.Tracer, name: str, ctx: Context, attributes: dict[str, Any], kind: SpanKind) -> trace.Span:
    return tracer.start_span(name, ctx, kind=kind, attributes=attributes, start_time=1_000)


def lean_start(tracer: trace.Tracer, name: str, ctx: Context, attributes: dict[str, Any], kind: SpanKind) -> trace.Span:
    return LeanTracer(tracer).start_span(name, ctx, attributes, kind=kind, start_time=1_000)


def _exercise(span: trace.Span) -> None:
    span.set_attribute("list", [1, 2, 3])
    span.set_attribute("long", "abcdefghijkl")  # cut to 8
    span.set_attribute("bad", object())  # type: ignore[arg-type]  # dropped with a warning
    span.set_attribute("", "empty key")  # dropped
    span.set_attribute("n", 2)  # replaces a start attribute
    span.set_attributes({"f": 1.5, "g": "abcdefghijkl"})  # over the limit of 5: the oldest go
    span.add_event("first", {"k": "v", "seq": [1, 2], "a": 1, "b": 2})  # over 3 attributes
    span.add_event("second", timestamp=2_000)
    span.add_link(REMOTE, {"why": "retry"})
    span.add_link(SpanContext(0x99, 0x98, is_remote=True), {"x": 1})  # over the limit of 1
    span.add_link(trace.INVALID_SPAN_CONTEXT)  # not a valid link: ignored
    span.record_exception(ValueError("boom"), {"extra": "yes"}, timestamp=3_000)  # a third event
    span.update_name("renamed")
    span.set_status(Status(StatusCode.ERROR, "failed"))
    span.set_status(StatusCode.UNSET)  # ignored
    span.end(end_time=5_000)
    span.set_attribute("after", 1)  # ignored: ended
    span.add_event("after")
    span.set_status(StatusCode.OK)
    span.update_name("after")
    span.end(end_time=6_000)  # ignored


def _summary(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind,
        "parent": span.parent,
        "trace_id": span.context.trace_id if span.context else None,
        "flags": span.context.trace_flags if span.context else None,
        "times": (span.start_time, span.end_time),
        "attributes": dict(span.attributes or {}),
        "dropped": (span.dropped_attributes, span.dropped_events, span.dropped_links),
        "events": [(e.name, dict(e.attributes or {}), e.timestamp if e.name != "first" else None) for e in span.events],
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource,
        "scope": span.instrumentation_scope,
        "json": bool(span.to_json()),
    }


def _run(start: Starter, caplog: pytest.LogCaptureFixture) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    tracer, exporter, seen = _pipeline()
    parent = trace.set_span_in_context(NonRecordingSpan(REMOTE))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        span = start(tracer, "op", parent, {"a": "x", "n": 1}, SpanKind.SERVER)
        _exercise(span)
    (finished,) = exporter.get_finished_spans()
    return _summary(finished), seen.started, sorted({record.levelname for record in caplog.records})


def test_lean_span_exports_what_the_sdk_span_exports(caplog: pytest.LogCaptureFixture) -> None:
    lean, lean_started, lean_warnings = _run(lean_start, caplog)
    sdk, sdk_started, sdk_warnings = _run(sdk_start, caplog)
    # The exception event's stack trace is formatted from the same exception: equal too.
    assert lean == sdk
    assert lean_started == sdk_started == [{"a": "x", "n": 1}]
    assert lean_warnings == sdk_warnings == ["WARNING"]
    # "n" set again moved to the end; "a", the oldest, made room; "" was no key. (Which of "list" and
    # "bad" the SDK keeps differs between SDK versions: the lean span keeps what the SDK keeps.)
    assert list(lean["attributes"].items())[-3:] == [("n", 2), ("f", 1.5), ("g", "abcdefgh")]
    assert "a" not in lean["attributes"]
    assert [name for name, _, _ in lean["events"]] == ["second", "exception"]


def test_lean_span_as_a_context_manager_records_the_exception() -> None:
    results = []
    for start in (sdk_start, lean_start):
        tracer, exporter, _ = _pipeline()
        with pytest.raises(KeyError), start(tracer, "op", Context(), {}, SpanKind.INTERNAL):
            raise KeyError("missing")
        (finished,) = exporter.get_finished_spans()
        event = finished.events[0]
        results.append((finished.status.status_code, finished.status.description, event.name, event.attributes))
    assert results[0] == results[1]
    assert results[1][0] is StatusCode.ERROR


@pytest.mark.parametrize(
    ("sampler", "parent_flags", "recording", "sampled"),
    [
        (ALWAYS_ON, None, True, True),
        (ALWAYS_OFF, None, False, False),
        (ParentBased(ALWAYS_ON), TraceFlags.DEFAULT, False, False),
        (ParentBased(ALWAYS_ON), TraceFlags.SAMPLED, True, True),
        (ParentBased(ALWAYS_ON), None, True, True),
        (BillingSafeSampler(ParentBased(ALWAYS_ON)), TraceFlags.DEFAULT, False, False),
        (BillingSafeSampler(ParentBased(ALWAYS_ON)), None, True, True),
        (ParentBased(ALWAYS_OFF), TraceFlags.SAMPLED, True, True),
        (BillingSafeSampler(ALWAYS_OFF), None, False, False),
        (TraceIdRatioBased(1.0), None, True, True),
    ],
)
def test_lean_tracer_samples_as_the_sdk_tracer(
    sampler: Sampler, parent_flags: int | None, recording: bool, sampled: bool
) -> None:
    ctx = Context()
    if parent_flags is not None:
        remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(parent_flags))
        ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    outcomes = []
    for start in (sdk_start, lean_start):
        tracer, exporter, _ = _pipeline(sampler)
        span = start(tracer, "op", ctx, {"a": "x"}, SpanKind.INTERNAL)
        context = span.get_span_context()
        span.end()
        outcomes.append(
            (
                isinstance(span, ReadableSpan),  # NonRecordingSpan is not one
                context.trace_flags,
                context.trace_id == 0xABC if parent_flags is not None else context.trace_id != 0,
                len(exporter.get_finished_spans()),
            )
        )
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][0] is recording
    assert outcomes[1][1].sampled is sampled


DEFAULT_SAMPLERS = [ParentBased(ALWAYS_ON), BillingSafeSampler(ParentBased(ALWAYS_ON))]


@pytest.mark.parametrize("sampler", [*DEFAULT_SAMPLERS, ParentBased(ALWAYS_OFF), BillingSafeSampler(ALWAYS_ON)])
def test_the_lean_tracer_decides_for_the_sdks_default_sampler_only(sampler: Sampler) -> None:
    tracer, _, _ = _pipeline(sampler)
    origin = lean_module._TracerSetup(tracer)  # type: ignore[arg-type]
    assert (origin.default_sampler is tracer.sampler) is (sampler in DEFAULT_SAMPLERS)  # type: ignore[attr-defined]


@pytest.mark.parametrize("sampler", DEFAULT_SAMPLERS)
@pytest.mark.parametrize("flags", [None, TraceFlags.SAMPLED, TraceFlags.DEFAULT])
@pytest.mark.parametrize("attributes", [{"a": "x"}, {"gateway.op_type": "op", "a": "x"}, {}])
def test_the_default_samplers_decision_is_the_sdks(
    sampler: Sampler, flags: int | None, attributes: dict[str, Any]
) -> None:
    ctx = Context()
    if flags is not None:
        state = trace.TraceState([("vendor", "v1")])
        remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(flags), trace_state=state)
        ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    outcomes = []
    for start in (sdk_start, lean_start):
        tracer, exporter, seen = _pipeline(sampler)
        span = start(tracer, "op", ctx, dict(attributes), SpanKind.SERVER)
        context = span.get_span_context()
        span.end()
        finished = [(s.name, dict(s.attributes or {}), others(s.context)) for s in exporter.get_finished_spans()]
        outcomes.append((span.is_recording(), context.trace_flags, others(context), seen.started, finished))
        # Only a record span names itself in its trace state, for the records started under it.
        named = context.trace_state.get(TRACESTATE_KEY)
        if start is lean_start and "gateway.op_type" in attributes:
            assert named == f"{context.span_id:016x}"
        else:
            assert named is None
    assert outcomes[0] == outcomes[1]


def others(context: SpanContext) -> list[tuple[str, str]]:
    """A trace state's entries but the adapter's own."""
    return [(key, value) for key, value in context.trace_state.items() if key != TRACESTATE_KEY]


def test_operation_spans_stay_recorded_when_the_sampler_drops_them() -> None:
    tracer, exporter, seen = _pipeline(BillingSafeSampler(ALWAYS_OFF))
    span = LeanTracer(tracer).start_span("op", Context(), {"gateway.op_type": "op"})
    span.end()
    assert isinstance(span, LeanSpan) and not span.get_span_context().trace_flags.sampled
    assert seen.started == [{"gateway.op_type": "op"}]
    assert exporter.get_finished_spans() == ()  # recorded for billing, not exported to OTLP


def test_a_tracer_other_than_the_sdks_starts_its_own_spans() -> None:
    tracer = trace.NoOpTracer()
    span = LeanTracer(tracer).start_span("op", Context(), {"a": "x"})
    assert not isinstance(span, LeanSpan)
    assert not span.is_recording()


def test_decorated_calls_run_in_lean_spans() -> None:
    seen: list[trace.Span] = []

    @gateway_otel.operation_log(op_type="lean")
    def work() -> None:
        seen.append(trace.get_current_span())

    token = otel_context.attach(Context())
    try:
        work()
    finally:
        otel_context.detach(token)
    assert isinstance(seen[0], LeanSpan)
    assert seen[0].attributes is not None and seen[0].attributes["gateway.op_type"] == "lean"


def test_a_span_ended_by_many_threads_at_once_ends_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow_clock() -> int:  # read between "not ended yet?" and "ended now": others get to run
        time.sleep(0.01)
        return time.time_ns()

    monkeypatch.setattr(lean_module, "_time_ns", slow_clock)
    tracer, exporter, _ = _pipeline()
    span = LeanTracer(tracer).start_span("op", Context(), {}, start_time=1)
    barrier = threading.Barrier(4)

    def end() -> None:
        barrier.wait()
        span.end()

    threads = [threading.Thread(target=end) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_child_forked_while_a_span_was_ending_can_end_spans() -> None:
    tracer, exporter, _ = _pipeline()
    lean = LeanTracer(tracer)
    with lean_module._ENDING:  # another thread was in the middle of end() when the process forked
        pid = os.fork()
        if pid == 0:  # the child: it must not wait for a lock nobody will release
            lean.start_span("in child", Context(), {}).end()
            os._exit(0 if len(exporter.get_finished_spans()) == 1 else 1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the child hung ending a span")


#: SDK 1.35+ calls ``_on_ending`` before ``on_end``; older SDKs have no such hook.
ENDING = hasattr(SpanProcessor, "_on_ending")


def ending(*calls: tuple[str, str]) -> list[tuple[str, str]]:
    """``calls`` without the ``_on_ending`` ones where the SDK has no such hook."""
    return [call for call in calls if ENDING or call[0] != "ending"]


class Counted(SpanProcessor):
    """Counts the spans a processor is shown at start, on ending and at end, by name."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.calls.append(("start", span.name))

    def _on_ending(self, span: Span) -> None:
        self.calls.append(("ending", span.name))

    def on_end(self, span: ReadableSpan) -> None:
        self.calls.append(("end", span.name))


def test_the_operations_processor_is_shown_operation_spans_only_and_the_others_every_span() -> None:
    provider = TracerProvider()
    operations, other = Counted(), Counted()
    provider.add_span_processor(operations)
    lean = LeanTracer(provider.get_tracer("test"), operations=operations)
    lean.start_span("server", Context(), {"http.request.method": "GET"}).end()
    provider.add_span_processor(other)  # a processor added later sees the spans from then on
    lean.start_span("op", Context(), {"gateway.op_type": "op"}).end()
    lean.start_span("server", Context(), {}).end()
    assert operations.calls == ending(("start", "op"), ("ending", "op"), ("end", "op"))
    assert other.calls == ending(
        ("start", "op"),
        ("ending", "op"),
        ("end", "op"),
        ("start", "server"),
        ("ending", "server"),
        ("end", "server"),
    )


def test_a_span_no_processor_would_see_records_nothing_and_its_context_is_as_real() -> None:
    provider = TracerProvider()
    operations = Counted()
    provider.add_span_processor(operations)
    lean = LeanTracer(provider.get_tracer("test"), operations=operations)
    server = lean.start_span("server", otel_context.Context(), {"http.request.method": "GET"}, kind=SpanKind.SERVER)
    assert type(server) is NonRecordingSpan and not server.is_recording()
    context = server.get_span_context()
    assert context.is_valid and context.trace_flags.sampled and not context.is_remote
    op = lean.start_span("op", trace.set_span_in_context(server), {"gateway.op_type": "op"})
    assert isinstance(op, LeanSpan) and op.is_recording()  # the operations processor takes it
    assert op.context.trace_id == context.trace_id and op.parent == context
    op.end()
    assert operations.calls == ending(("start", "op"), ("ending", "op"), ("end", "op"))
    # Under a remote parent that was not sampled, it carries the parent's trace and decision.
    unsampled = SpanContext(0xAB, 0xCD, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    child = lean.start_span("server", trace.set_span_in_context(NonRecordingSpan(unsampled)), {})
    assert type(child) is NonRecordingSpan and child.get_span_context().trace_id == 0xAB
    # A processor added later sees the spans started from then on, recorded.
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorded = lean.start_span("server", otel_context.Context(), {"http.request.method": "GET"}, kind=SpanKind.SERVER)
    assert isinstance(recorded, LeanSpan)
    recorded.end()
    assert [span.name for span in exporter.get_finished_spans()] == ["server"]


class Shown(Sampler):
    """Samples everything, keeping the attributes each decision was shown."""

    def __init__(self) -> None:
        self.shown: list[dict[str, Any]] = []

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> Any:
        attributes = kwargs.get("attributes", args[1] if len(args) > 1 else None)
        self.shown.append(dict(attributes or {}))
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, *args, **kwargs)

    def get_description(self) -> str:
        return "Shown"


SCOPE = {"method": "POST", "scheme": "http", "path": "/v1/chat", "http_version": "1.1", "server": ("127.0.0.1", 8000)}


def test_a_server_spans_attributes_are_built_only_for_a_sampler_or_processor_to_read() -> None:
    provider = TracerProvider()  # the SDK's default sampler
    operations = Counted()
    provider.add_span_processor(operations)
    lean = LeanTracer(provider.get_tracer("test"), operations=operations)
    assert not lean.records_non_operation_spans()
    span, _ = start_server_span(lean, SCOPE, {}, otel_context.Context(), records=False)
    assert type(span) is NonRecordingSpan and span.get_span_context().is_valid
    # A request record's span is recorded for the adapter's processor, with its records' attributes only.
    span, _ = start_server_span(lean, SCOPE, {}, otel_context.Context(), records=True)
    assert type(span) is LeanSpan and dict(span.attributes or {}) == {
        "gateway.op_type": "POST",
        "gateway.is_cost_log": False,
    }
    span.end()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # from now on, a processor reads them
    assert lean.records_non_operation_spans()
    start_server_span(lean, SCOPE, {}, otel_context.Context(), records=False)[0].end()
    (exported,) = exporter.get_finished_spans()
    assert exported.attributes is not None and exported.attributes["url.path"] == "/v1/chat"
    # A sampler of the user's decides on them, with no processor to record what it samples.
    sampler = Shown()
    other = TracerProvider(sampler=sampler)
    other.add_span_processor(operations)
    sampled = LeanTracer(other.get_tracer("test"), operations=operations)
    assert sampled.records_non_operation_spans()
    start_server_span(sampled, SCOPE, {}, otel_context.Context(), records=False)
    assert sampler.shown[-1]["http.request.method"] == "POST" and sampler.shown[-1]["server.port"] == 8000


def test_a_lean_spans_record_data_is_what_its_readable_span_properties_give() -> None:
    from gateway_otel._exporter import plain_attributes, span_data

    tracer, _, _ = _pipeline()
    parent = trace.set_span_in_context(NonRecordingSpan(REMOTE))
    span = LeanTracer(tracer).start_span("op", parent, {"gateway.op_type": "op", "a": "x"}, start_time=1_000)
    running = span_data(span)
    assert running == span_data(span, plain_attributes(span))
    span.set_attribute("b", "y")
    assert "b" not in running[5]  # a running span's attributes are copied
    span.set_status(Status(StatusCode.ERROR, "failed"))
    span.end(2_000)
    ended = span_data(span)
    assert ended == span_data(span, plain_attributes(span))
    assert ended[2] == REMOTE.span_id and ended[3:5] == (1_000, 2_000) and ended[6] is True


class Counting(IdGenerator):
    """Ids 1, 2, 3... (trace ids from 0: the first one is not a valid trace id)."""

    def __init__(self) -> None:
        self.next = 0

    def generate_span_id(self) -> int:
        self.next += 1
        return self.next

    def generate_trace_id(self) -> int:
        self.next += 1
        return self.next - 1

    def is_trace_id_random(self) -> bool:
        return False


@pytest.mark.parametrize("ids", [None, Counting])
def test_lean_span_contexts_are_the_sdks_with_its_own_id_generator_and_another(ids: type[IdGenerator] | None) -> None:
    contexts: dict[str, list[tuple[Any, ...]]] = {}
    for label, start in (("sdk", sdk_start), ("lean", lean_start)):
        provider = TracerProvider(id_generator=ids() if ids else None)
        provider.add_span_processor(Seen())  # a span no processor would see is not recorded
        tracer = provider.get_tracer("test")
        random.seed(7)  # the SDK's default generator draws from the random module: the same ids
        found = []
        for parent in (Context(), trace.set_span_in_context(NonRecordingSpan(REMOTE))):
            for _ in range(3):
                span = start(tracer, "op", parent, {}, SpanKind.INTERNAL)
                found.append((tuple(span.get_span_context()), span.parent))  # type: ignore[attr-defined]
        contexts[label] = found
    assert contexts["lean"] == contexts["sdk"]
    assert any(not context[-1] for context, _ in contexts["lean"]) is (ids is Counting)  # trace id 0: invalid


@pytest.mark.skipif(not hasattr(TracerProvider, "_set_tracer_configurator"), reason="SDK without tracer configurators")
def test_a_tracer_disabled_by_the_providers_configurator_starts_no_recording_spans_as_the_sdks() -> None:
    from opentelemetry.sdk.trace import _disable_tracer_configurator  # type: ignore[attr-defined]

    provider = TracerProvider()
    seen = Counted()
    provider.add_span_processor(seen)
    tracer = provider.get_tracer("test")
    lean = LeanTracer(tracer, operations=None)
    assert lean.start_span("before", Context(), {}).is_recording()
    provider._set_tracer_configurator(tracer_configurator=_disable_tracer_configurator)  # after the tracer was made
    span, sdk_span = lean.start_span("after", Context(), {}), tracer.start_span("after")
    assert not span.is_recording() and not sdk_span.is_recording()
    assert seen.calls == [("start", "before")]
