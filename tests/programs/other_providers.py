"""Operations under a TracerProvider set by the app: python other_providers.py RID (SDK_AFTER|FOREIGN).

``SDK_AFTER``: the app sets an SDK provider of its own *after* ``configure()``. ``FOREIGN``: the app
sets a provider that is not the SDK's (a vendor's own: spans of its own kind, kept in a list), before
``configure()``. Either way an operation opens a span of the app's inside, and an inner operation
inside that, and one operation fails. Prints what the app's provider saw, a span a line: its span
id, its name, its parent's name, and its ``gateway.op_type``; then the records' service name.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types

import gateway_otel
from gateway_otel import operation_log, trace_id_context
from gateway_otel._pipeline import current_pipeline

rid, kind = sys.argv[1], sys.argv[2]
_ids: Iterator[int] = itertools.count(0x1000)


class VendorSpan(trace.Span):
    """A span of a provider that is not the SDK's: it keeps what it is told, nothing more."""

    def __init__(self, name: str, context: SpanContext, parent: SpanContext | None, attributes: Any) -> None:
        self.name, self.context, self.parent = name, context, parent
        self.attributes: dict[str, Any] = dict(attributes or {})
        self.ended = False

    def get_span_context(self) -> SpanContext:
        return self.context

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self.attributes.update(attributes)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self.attributes[key] = value

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        pass

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        pass

    def update_name(self, name: str) -> None:
        self.name = name

    def is_recording(self) -> bool:
        return not self.ended

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        pass

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        pass

    def end(self, end_time: int | None = None) -> None:
        self.ended = True


class VendorTracer(trace.Tracer):
    def __init__(self, spans: list[VendorSpan]) -> None:
        self.spans = spans

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = trace.get_current_span(context).get_span_context()
        trace_id = parent.trace_id if parent.is_valid else next(_ids)
        own = SpanContext(trace_id, next(_ids), False, TraceFlags(TraceFlags.SAMPLED), parent.trace_state)
        span = VendorSpan(name, own, parent if parent.is_valid else None, attributes)
        self.spans.append(span)
        return span

    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return trace.use_span(self.start_span(name, *args, **kwargs), end_on_exit=True)


class VendorProvider(trace.TracerProvider):
    def __init__(self) -> None:
        self.spans: list[VendorSpan] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return VendorTracer(self.spans)


@operation_log(op_type="inner")
def inner() -> str:
    return "in"


@operation_log(op_type="outer", is_cost_log=True)
def outer() -> str:
    with trace.get_tracer("app").start_as_current_span("app-span"):
        return inner()


@operation_log(op_type="failing")
def failing() -> None:
    raise ValueError("no")


exporter = InMemorySpanExporter()
seen: list[tuple[int, str, str, object]] = []
if kind == "FOREIGN":
    vendor = VendorProvider()
    trace.set_tracer_provider(vendor)
    gateway_otel.configure()
else:
    gateway_otel.configure()
    provider = TracerProvider(resource=Resource.create({"service.name": "app-own"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

trace_id_context.set(rid)
outer()
with contextlib.suppress(ValueError):
    failing()
assert gateway_otel.force_flush(20)
if kind == "FOREIGN":
    names = {span.context.span_id: span.name for span in vendor.spans}
    for span in vendor.spans:
        parent = names.get(span.parent.span_id, "-") if span.parent is not None else "-"
        seen.append((span.context.span_id, span.name, parent, span.attributes.get("gateway.op_type")))
else:
    finished = exporter.get_finished_spans()
    names = {span.context.span_id: span.name for span in finished}
    for one in finished:
        parent = names.get(one.parent.span_id, "-") if one.parent is not None else "-"
        seen.append((one.context.span_id, one.name, parent, (one.attributes or {}).get("gateway.op_type")))
for span_id, name, parent, op_type in sorted(seen, key=lambda one: one[1]):
    print(f"{span_id:016x} {name} {parent} {op_type or '-'}", flush=True)
print(current_pipeline().service, flush=True)
