"""The span processor: ``in`` records at span start, ``out`` records at span end, none ever dropped."""

from __future__ import annotations

from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from ._exporter import GatewaySpanExporter, in_record, operation_data, out_record, records_at_end, request_data
from ._queue import Builder
from ._scrub import Scrubber


class OperationSpanProcessor(SpanProcessor):
    """Hands every operation span (one with ``gateway.op_type``) to the gateway exporter's delivery.

    Unlike ``BatchSpanProcessor``, nothing is dropped when a burst outruns the network: the
    delivery queue spills to the spool instead. It sees the spans of traces the sampler dropped
    too (they are recorded, not sampled), so billing never depends on sampling.

    A request's span (SERVER, CONSUMER) gives both its records at its end, when its route and status
    are known; one of another instrumentation's that carries no ``gateway.*`` attributes is reported
    too when ``requests`` (the scrubber of its URL) is given: ``request_records``.
    """

    def __init__(self, exporter: GatewaySpanExporter, requests: Scrubber | None = None) -> None:
        #: The scrubber of the URLs of other instrumentations' request spans, which are reported
        #: while it is set (``request_records``).
        self.requests = requests
        #: The provider it was added to (``configure()`` joins it once).
        self.joined: TracerProvider | None = None
        self.use(exporter)

    def use(self, exporter: GatewaySpanExporter) -> None:
        """Report through ``exporter`` from now on (``configure()`` called again, a test's capture)."""
        self.exporter = exporter
        self._submit = exporter.delivery().submit

    def submit(self, build: Builder, item: Any) -> None:
        """Queue a record made by hand (``submit_log``) where the operation spans' records go."""
        self._submit(build, item)

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if records_at_end(span):
            return  # a request's: both records at its end (its data is not taken twice)
        data = operation_data(span)
        if data is not None:
            self._submit(in_record, data)

    def on_end(self, span: ReadableSpan) -> None:
        data = operation_data(span)
        if data is None:
            if self.requests is None or not records_at_end(span):
                return
            data = request_data(span, self.requests)
            self._submit(in_record, data)
        elif records_at_end(span):
            self._submit(in_record, data)
        self._submit(out_record, data)

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.exporter.force_flush(timeout_millis)
