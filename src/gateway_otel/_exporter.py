"""The gateway exporter: finished operation spans become ``out`` records (and ``in`` records)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, Protocol

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from . import _attributes as attrs
from ._queue import Builder
from ._record_tree import REQUEST_KINDS, remote_or_direct_parent
from ._records import IN, OUT, SpanData, build_record
from ._scrub import Scrubber
from ._span import LeanSpan


class RecordSink(Protocol):
    """Where an exporter's records go: the process's ``Delivery``, or a test's capture."""

    def submit(self, build: Builder, item: Any) -> None: ...

    def force_flush(self, timeout: float | None = None) -> bool: ...

    def shutdown(self, timeout: float | None = None) -> None: ...


#: Every exporter made so far; ``configure()`` quiets those the OTel SDK made from the entry
#: point, because its own processor then produces the same records without a bounded queue.
_instances: weakref.WeakSet[GatewaySpanExporter] = weakref.WeakSet()


def plain_attributes(span: ReadableSpan) -> dict[str, Any]:
    """A plain dict of the span's attributes: the SDK's mapping proxy copies them in C (item by
    item, ``dict()`` of it costs five times as much, on the caller's side)."""
    attributes = span.attributes
    if not attributes:
        return {}
    copy = getattr(attributes, "copy", None)
    return dict(copy() if copy is not None else attributes)


def span_data(span: ReadableSpan, attributes: dict[str, Any] | None = None, *, failed: bool = False) -> SpanData:
    """The values of ``span`` that its records are built from (``attributes``: its plain attributes;
    ``failed``: failed whatever its status)."""
    if type(span) is LeanSpan and attributes is None:
        return span.record_data()
    context = span.context
    return SpanData(
        context.trace_id,
        context.span_id,
        remote_or_direct_parent(span.parent),
        span.start_time or 0,
        span.end_time,
        plain_attributes(span) if attributes is None else attributes,
        failed or (span.end_time is not None and span.status.status_code is StatusCode.ERROR),
        _service(span.resource),
    )


def request_data(span: ReadableSpan, scrubber: Scrubber) -> SpanData:
    """The record data of a request's span that another instrumentation made (the contrib FastAPI
    instrumentor's SERVER span, under ``opentelemetry-instrument``): the HTTP method and route as
    the operation (else the span's name), the status code as the response, failed on a 5xx."""
    found = plain_attributes(span)
    method = found.get("http.request.method") or found.get("http.method")
    route = found.get("http.route")
    status = found.get("http.response.status_code", found.get("http.status_code"))
    own: dict[str, Any] = {key: found[key] for key in attrs.BAGGAGE_KEYS if key in found}
    own[attrs.OP_TYPE] = f"{method} {route}" if method and route else span.name
    own[attrs.IS_COST_LOG] = False
    if attrs.REQUEST_URL not in own:
        url = _request_url(found)
        if url:
            own[attrs.REQUEST_URL] = scrubber.scrub_url(url)
    failed = False
    if isinstance(status, int):
        own[attrs.RESPONSE] = str(status)
        if status >= 500:
            failed = True
            own[attrs.ERROR] = f"HTTP {status}"
    if attrs.ERROR not in own and span.status.status_code is StatusCode.ERROR:
        own[attrs.ERROR] = scrubber.scrub_text(span.status.description or "failed")
    return span_data(span, own, failed=failed)


def _request_url(found: dict[str, Any]) -> str:
    """The URL of a request span, from the HTTP semantic conventions' attributes (new or old)."""
    full = found.get("url.full") or found.get("http.url")
    if isinstance(full, str):
        return full
    host = found.get("server.address") or found.get("http.host") or found.get("net.host.name")
    path = found.get("url.path") or found.get("http.target")
    if not host or not isinstance(path, str):
        return ""
    port = found.get("server.port") or found.get("net.host.port")
    scheme = found.get("url.scheme") or found.get("http.scheme") or "http"
    authority = f"{host}:{port}" if port and ":" not in str(host) else str(host)
    query = found.get("url.query")
    return f"{scheme}://{authority}{path}" + (f"?{query}" if query else "")


_last_service: tuple[Resource | None, str] = (None, "unknown_service")


def _service(resource: Resource | None) -> str:
    """``service.name`` of a resource (remembered for the last one: a provider has one resource)."""
    global _last_service  # a one-entry cache
    last, name = _last_service
    if resource is not last:
        name = attrs.service_name(resource.attributes if resource is not None else None)
        _last_service = (resource, name)
    return name


def _record(op_log_type: str, data: SpanData) -> dict[str, Any]:
    return build_record(
        op_log_type,
        trace_id=data.trace_id,
        span_id=data.span_id,
        parent_span_id=data.parent_span_id,
        start_time_ns=data.start_ns,
        end_time_ns=data.end_ns,
        attributes=data.attributes,
        failed=data.failed,
        service=data.service,
    )


def in_record(data: SpanData) -> dict[str, Any]:
    return _record(IN, data)


def out_record(data: SpanData) -> dict[str, Any]:
    return _record(OUT, data)


def records_at_end(span: ReadableSpan) -> bool:
    """Whether ``span`` is a request's (SERVER, CONSUMER): both its records are made at its end,
    when its route and status are known."""
    return span.kind in REQUEST_KINDS


def operation_data(span: ReadableSpan) -> SpanData | None:
    """``span_data(span)`` when ``span`` is an operation, else ``None`` (checked before its attributes
    are copied: most spans are not operations)."""
    if type(span) is LeanSpan:  # the adapter's own spans, twice an operation: one call, not three
        return span.record_data() if attrs.OP_TYPE in span._attributes else None
    return span_data(span) if is_operation(span) else None


def is_operation(span: ReadableSpan) -> bool:
    if type(span) is LeanSpan:
        return attrs.OP_TYPE in span._attributes  # its own field: one call less
    attributes = span.attributes
    return attributes is not None and attrs.OP_TYPE in attributes


class GatewaySpanExporter(SpanExporter):
    """A ``SpanExporter`` that reports operation spans to the gateway's ``/v1/openapi/report/log``.

    ``export`` only queues: building the records and the network are the delivery thread's work,
    so it never blocks and never raises. Made with no arguments (``OTEL_TRACES_EXPORTER=gateway``),
    it uses the process's delivery pipeline, configured from the environment.

    Args:
        delivery: where records go; the process's pipeline by default.
        in_records: also report the ``in`` record of each span (off when ``OperationSpanProcessor``
            reports it at span start).

    With ``request_records`` (the default), a request's span of another instrumentation (SERVER,
    CONSUMER) is reported as a record pair as well, as ``instrument_app``'s own server spans are.
    """

    def __init__(self, delivery: RecordSink | None = None, *, in_records: bool = True) -> None:
        self._delivery = delivery
        self._in_records = in_records
        self._quiet = False
        self._shut_down = False
        if delivery is None:
            _instances.add(self)

    def quiet(self) -> None:
        """Stop exporting: another part of the pipeline reports the same spans."""
        self._quiet = True

    def delivery(self) -> RecordSink:
        if self._delivery is None:
            from ._pipeline import current_pipeline  # the pipeline builds exporters: import at use

            return current_pipeline().delivery
        return self._delivery

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            return SpanExportResult.FAILURE
        if self._quiet:
            return SpanExportResult.SUCCESS
        try:
            delivery = self.delivery()
            requests = self._request_scrubber()
            for span in spans:
                data = operation_data(span)
                if data is None and requests is not None and records_at_end(span):
                    data = request_data(span, requests)
                if data is not None:
                    if self._in_records or records_at_end(span):
                        delivery.submit(in_record, data)
                    delivery.submit(out_record, data)
        except Exception:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    @staticmethod
    def _request_scrubber() -> Scrubber | None:
        """The process's scrubber when request spans are reported (``request_records``), else ``None``."""
        from ._pipeline import current_pipeline  # the pipeline builds exporters: import at use

        pipeline = current_pipeline()
        return pipeline.scrubber if pipeline.settings.request_records else None

    def export_start(self, span: ReadableSpan) -> None:
        """Report the ``in`` record of a span that just started."""
        self.delivery().submit(in_record, span_data(span))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._quiet or self._shut_down:
            return True
        return self.delivery().force_flush(timeout_millis / 1000)

    def shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        if self._delivery is not None:
            self._delivery.shutdown()
