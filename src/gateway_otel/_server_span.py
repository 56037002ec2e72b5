"""A lean OpenTelemetry HTTP server span for ASGI requests (stable HTTP semantic conventions).

Why: the stock ``opentelemetry-instrumentation-fastapi`` costs more than the app itself, its cost
spread thin over header decoding, attribute building, route look-ups and its send wrapper. The context middleware reads
the headers once anyway, so it starts this span from them: W3C trace context and baggage
extracted, one span per request, the route and status set when the response is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import _attributes as attrs
from ._context import _SPAN_KEY, PROPAGATOR
from ._scrub import Scrubber
from ._serialize import error_message
from ._span import LeanTracer

__all__ = ["describe_failure", "describe_request", "end_server_span", "server_span_in", "start_server_span"]


def server_span_in(ctx: otel_context.Context) -> Span | None:
    """The SERVER span that another instrumentation started for this request (the contrib ASGI or
    FastAPI instrumentor, Logfire), current in ``ctx``; ``None`` when there is none. The context
    middleware then gives the request no second one: identity goes on that span, and operations
    are its children."""
    span = ctx.get(_SPAN_KEY)  # most requests: no span before this middleware's
    if span is None or getattr(span, "kind", None) is not SpanKind.SERVER:
        return None
    return span if isinstance(span, Span) else None


def start_server_span(
    tracer: LeanTracer,
    scope: Mapping[str, Any],
    headers: Mapping[str, str],
    base: otel_context.Context,
    *,
    records: bool,
) -> tuple[Span, otel_context.Context]:
    """Start the request's SERVER span under the caller's trace; returns it and its parent context
    (the caller's trace context and baggage, extracted from the headers). ``records``: the span is
    reported as a request record pair (``request_records``); its ``gateway.*`` attributes are set
    by the middleware once the request's identity is known, and at its end."""
    parent = PROPAGATOR.extract(headers, base) if "traceparent" in headers or "baggage" in headers else base
    method = scope.get("method", "GET")
    attributes: dict[str, Any] = {attrs.OP_TYPE: method, attrs.IS_COST_LOG: False} if records else {}
    if not tracer.records_non_operation_spans():  # no processor but the adapter's sees it: its records' attributes only
        return tracer.start_span(method, parent, attributes, kind=SpanKind.SERVER), parent
    attributes |= {
        "http.request.method": method,
        "url.scheme": scope.get("scheme", "http"),
        "url.path": scope.get("root_path", "") + scope.get("path", ""),
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    server = scope.get("server")
    if server:
        attributes["server.address"], attributes["server.port"] = server[0], server[1]
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    agent = headers.get("user-agent")
    if agent:
        attributes["user_agent.original"] = agent[:512]
    return tracer.start_span(method, parent, attributes, kind=SpanKind.SERVER), parent


def describe_request(
    span: Span, scope: Mapping[str, Any], status: int | None, error: BaseException | None, scrubber: Scrubber
) -> None:
    """Set what a request's records say at its end on its span (ours, or another instrumentation's
    that it ends itself): ``"<METHOD> <route>"`` as the operation, the status code as the response,
    an exception or a 5xx as the failure."""
    route = getattr(scope.get("route"), "path", None)
    method = scope.get("method", "GET")
    span.set_attribute(attrs.OP_TYPE, f"{method} {route}" if route else method)
    if status is not None:
        span.set_attribute(attrs.RESPONSE, str(status))
    if error is not None:
        describe_failure(span, error, scrubber)
    elif status is not None and status >= 500:
        span.set_attribute(attrs.ERROR, f"HTTP {status}")


def describe_failure(span: Span, error: BaseException, scrubber: Scrubber) -> None:
    """Set the exception that failed a request as its records' error message."""
    span.set_attribute(attrs.ERROR, error_message(error, scrubber))


def end_server_span(
    span: Span,
    scope: Mapping[str, Any],
    status: int | None,
    error: BaseException | None,
    scrubber: Scrubber | None = None,
) -> None:
    """Name the span after the matched route, set the response status, end it (``scrubber``: the
    span is a request record's, ``describe_request`` too)."""
    if not span.is_recording():  # no processor would see it (or it was not sampled)
        return
    if scrubber is not None:
        describe_request(span, scope, status, error, scrubber)
    route = getattr(scope.get("route"), "path", None)
    if route:
        span.set_attribute("http.route", route)
        span.update_name(f"{scope.get('method', 'GET')} {route}")
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if error is not None:
        span.set_attribute("error.type", type(error).__qualname__)
        span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
        span.record_exception(error)
    elif status is not None and status >= 500:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))
    span.end()
