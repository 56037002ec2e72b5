"""Spans through a TracerProvider that is not the OpenTelemetry SDK's and wraps none (a vendor's own).

Such a provider's spans cannot be read by the adapter's span processor: it has no processors, and
its spans are not ``ReadableSpan``s. So each span the adapter starts is started by the provider in
force, and is what the code sees (current, parent of the spans opened inside it); a span that makes
records also gets a twin, started by an SDK provider of the adapter's own, carrying the same trace
and span ids, that only the adapter's processor sees. The twin records what the span records, and
ends with it; its records name the span ids the provider in force exported.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util import types

from . import _attributes as attrs
from . import _record_tree as record_tree
from ._span import LeanTracer

__all__ = ["MirroredSpan", "MirroringTracer", "TwinIds"]


class TwinIds(IdGenerator):
    """The ids of the adapter's own SDK provider: those of the span being twinned while
    ``MirroringTracer`` starts its twin (on this thread), random ones otherwise."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self._twinned = threading.local()

    def twinning(self, context: SpanContext | None) -> None:
        self._twinned.context = context

    def _context(self) -> SpanContext | None:
        return getattr(self._twinned, "context", None)

    def generate_span_id(self) -> int:
        context = self._context()
        return context.span_id if context is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        context = self._context()
        return context.trace_id if context is not None else self._random.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return False  # the twinned span's trace id comes from a provider whose ids are unknown


class MirroringTracer(LeanTracer):
    """Starts each span with ``outer`` (the provider in force's tracer), and a twin of each span that
    makes records with ``tracer`` (the adapter's SDK provider's, whose id generator is ``ids``)."""

    __slots__ = ("_ids", "outer")

    def __init__(
        self,
        outer: trace_api.Tracer,
        tracer: trace_api.Tracer,
        ids: TwinIds,
        operations: SpanProcessor | None = None,
        *,
        lean: bool = True,
    ) -> None:
        super().__init__(tracer, operations, lean=lean)
        self.outer = outer
        self._ids = ids

    def records_non_operation_spans(self) -> bool:
        return True  # what the provider in force does with a span is its own affair

    def start_span(
        self,
        name: str,
        context: otel_context.Context,
        attributes: dict[str, Any],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        start_time: int | None = None,
    ) -> trace_api.Span:
        outer = self.outer.start_span(name, context, kind=kind, attributes=dict(attributes), start_time=start_time)
        if attrs.OP_TYPE not in attributes:
            return outer
        twinned = outer.get_span_context()
        if not twinned.is_valid:  # a provider that makes no spans (a no-op one): the twin stands alone
            return super().start_span(name, context, attributes, kind=kind, start_time=start_time)
        self._ids.twinning(twinned)
        try:
            twin = super().start_span(name, context, attributes, kind=kind, start_time=start_time)
        finally:
            self._ids.twinning(None)
        # The spans started under it inherit the record tree's trace state entry, as under a lean span.
        state = record_tree.record_state(twinned.trace_state, twinned.span_id)
        return MirroredSpan(
            outer, twin, SpanContext(twinned.trace_id, twinned.span_id, twinned.is_remote, twinned.trace_flags, state)
        )


class MirroredSpan(trace_api.Span):
    """A span of the provider in force (``outer``) and its twin: what is done to one is done to both;
    its context is the outer span's, with the record tree's entry in its trace state."""

    __slots__ = ("_context", "outer", "twin")

    def __init__(self, outer: trace_api.Span, twin: trace_api.Span, context: SpanContext) -> None:
        self.outer = outer
        self.twin = twin
        self._context = context

    def __repr__(self) -> str:
        return f"MirroredSpan({self.outer!r})"

    @property
    def kind(self) -> SpanKind:
        return getattr(self.twin, "kind", SpanKind.INTERNAL)

    @property
    def attributes(self) -> Mapping[str, Any] | None:
        """The twin's (the record tree reads whether a parent span makes records)."""
        return getattr(self.twin, "attributes", None)

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self.twin.is_recording() or self.outer.is_recording()

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self.outer.set_attribute(key, value)
        self.twin.set_attribute(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self.outer.set_attributes(attributes)
        self.twin.set_attributes(attributes)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        self.outer.add_event(name, attributes, timestamp)
        self.twin.add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        self.outer.add_link(context, attributes)
        self.twin.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        self.outer.update_name(name)
        self.twin.update_name(name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self.outer.set_status(status, description)
        self.twin.set_status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self.outer.record_exception(exception, attributes, timestamp, escaped)
        self.twin.record_exception(exception, attributes, timestamp, escaped)

    def end(self, end_time: int | None = None) -> None:
        self.outer.end(end_time)
        self.twin.end(end_time)
