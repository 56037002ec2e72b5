"""The gateway exporter: finished operation spans become ``out`` records (and ``in`` records)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from . import _attributes as attrs
from ._delivery import Delivery
from ._records import IN, OUT, build_record

#: Every exporter made so far; ``configure()`` quiets those the OTel SDK made from the entry
#: point, because its own processor then produces the same records without a bounded queue.
_instances: weakref.WeakSet[GatewaySpanExporter] = weakref.WeakSet()


def span_record(op_log_type: str, span: ReadableSpan) -> dict[str, Any]:
    """The ``in`` or ``out`` record of an operation span."""
    context = span.context
    parent = span.parent
    resource = span.resource.attributes if span.resource is not None else {}
    return build_record(
        op_log_type,
        trace_id=context.trace_id,
        span_id=context.span_id,
        parent_span_id=parent.span_id if parent is not None else None,
        start_time_ns=span.start_time or 0,
        end_time_ns=span.end_time,
        attributes=dict(span.attributes or {}),  # one copy: a dict's get is cheaper than a mapping proxy's
        failed=span.status.status_code is StatusCode.ERROR,
        service=str(resource.get("service.name", "unknown_service")),
    )


def in_record(span: ReadableSpan) -> dict[str, Any]:
    return span_record(IN, span)


def out_record(span: ReadableSpan) -> dict[str, Any]:
    return span_record(OUT, span)


def is_operation(span: ReadableSpan) -> bool:
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
    """

    def __init__(self, delivery: Delivery | None = None, *, in_records: bool = True) -> None:
        self._delivery = delivery
        self._in_records = in_records
        self._quiet = False
        self._shut_down = False
        if delivery is None:
            _instances.add(self)

    def quiet(self) -> None:
        """Stop exporting: another part of the pipeline reports the same spans."""
        self._quiet = True

    def delivery(self) -> Delivery:
        if self._delivery is None:
            from ._pipeline import current  # the pipeline builds exporters: import at use

            return current().delivery
        return self._delivery

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            return SpanExportResult.FAILURE
        if self._quiet:
            return SpanExportResult.SUCCESS
        try:
            delivery = self.delivery()
            for span in spans:
                if is_operation(span):
                    if self._in_records:
                        delivery.submit(in_record, span)
                    delivery.submit(out_record, span)
        except Exception:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def export_start(self, span: ReadableSpan) -> None:
        """Report the ``in`` record of a span that just started."""
        self.delivery().submit(in_record, span)

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
