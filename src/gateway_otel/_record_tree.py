"""Where a record hangs in its request's tree: under the nearest enclosing record, across services.

A record's ``parentSpanId`` names the span of another record of the same request, so that the
gateway's log of a request reads as one tree (request -> operations -> downstream request -> its
operations). Spans that make no record can sit between two that do: an httpx CLIENT span between
an operation and the downstream service's request, a span of the user's between a request and its
operation. So each record span carries its own span id in its W3C ``tracestate`` (key
``gateway``): every span started under it inherits that entry, as the SDK's samplers pass the
parent's trace state on, and the tracecontext propagator carries it to the next service with
``traceparent``. A record span's parent record is then its parent span when that makes a record,
else the record the parent's trace state names, else the parent span itself.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.span import TraceState

from . import _attributes as attrs
from ._otel_internals import MAX_TRACE_STATE_ENTRIES, trace_state

__all__ = [
    "REQUEST_KINDS",
    "TRACESTATE_KEY",
    "is_record_span",
    "named_record",
    "parent_record",
    "record_state",
    "remote_or_direct_parent",
]

#: The ``tracestate`` key whose value is the span id (16 hex digits) of the innermost record span.
TRACESTATE_KEY: Final = "gateway"
#: The kinds of span that are requests: reported as records (``request_records``) when they end.
REQUEST_KINDS: Final = (SpanKind.SERVER, SpanKind.CONSUMER)
_MAX_SPAN_ID = (1 << 64) - 1


def is_record_span(span: object) -> bool:
    """Whether ``span`` (a parent found in the context) makes records: an operation's span, or a
    request's (a SERVER or CONSUMER span, the adapter's or another instrumentation's)."""
    if getattr(span, "kind", None) in REQUEST_KINDS:
        return True
    attributes = getattr(span, "attributes", None)
    return attributes is not None and attrs.OP_TYPE in attributes


def parent_record(parent: SpanContext | None, parent_span: object = None) -> int | None:
    """The span id of the record a new record span hangs under: ``parent`` itself when its span
    (``parent_span``) makes records, else the record named in ``parent``'s trace state, else
    ``parent`` (a caller that is no record span, or a service without gateway-otel)."""
    if parent is None or not parent.is_valid:
        return None
    if parent_span is not None and is_record_span(parent_span):
        return parent.span_id
    return named_record(parent.trace_state) or parent.span_id


def named_record(state: TraceState | None) -> int | None:
    """The record span id a trace state names (``None``: none, or not 16 hex digits)."""
    value = state.get(TRACESTATE_KEY) if state else None
    if not value or len(value) != 16:
        return None
    try:
        span_id = int(value, 16)
    except ValueError:
        return None
    return span_id if 0 < span_id <= _MAX_SPAN_ID else None


def record_state(parent_state: TraceState | None, span_id: int) -> TraceState:
    """``parent_state`` naming ``span_id`` as the innermost record (the entry moves to the front,
    as W3C trace context asks of an updated entry; past 32 entries the last one goes)."""
    entries = {TRACESTATE_KEY: f"{span_id:016x}"}
    if parent_state:
        for key, value in parent_state.items():
            if key != TRACESTATE_KEY and len(entries) < MAX_TRACE_STATE_ENTRIES:
                entries[key] = value
    return trace_state(entries)


def remote_or_direct_parent(span_parent: SpanContext | None) -> int | None:
    """The parent record of a span started by another tracer (its parent span object unknown): the
    record a remote caller's trace state names, else the parent span."""
    if span_parent is None or not span_parent.is_valid:
        return None
    if span_parent.is_remote:
        return named_record(span_parent.trace_state) or span_parent.span_id
    return span_parent.span_id
