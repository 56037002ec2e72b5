"""Log correlation: request id, trace id, span id and caller id on every log record.

``install()`` adds them to every record made from then on (``%(request_id)s`` and friends work
in any format); ``RequestContextFilter`` does the same for one handler or logger; ``AccessFormatter``
is a uvicorn access-log formatter showing the request id and the request's duration.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.baggage import get_all as get_baggage

from . import _attributes as attrs

__all__ = ["AccessFormatter", "AccessScrubFilter", "RequestContextFilter", "install"]

#: ``perf_counter()`` when the current request arrived (set by the context middleware).
request_started: ContextVar[float | None] = ContextVar("gateway_otel_request_started", default=None)
_installed = False


def _annotate(record: logging.LogRecord) -> None:
    bag = get_baggage()
    span_context = trace.get_current_span().get_span_context()
    record.request_id = str(bag.get(attrs.REQUEST_ID) or "-")
    record.caller_id = str(bag.get(attrs.CALLER_ID) or "-")
    if span_context.is_valid:
        record.trace_id = format(span_context.trace_id, "032x")
        record.span_id = format(span_context.span_id, "016x")
    else:
        record.trace_id = record.span_id = "-"


class RequestContextFilter(logging.Filter):
    """Adds ``request_id``, ``trace_id``, ``span_id`` and ``caller_id`` to each record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            _annotate(record)
        return True


class AccessScrubFilter(logging.Filter):
    """Redacts secret query parameters in uvicorn's access lines (``?access_token=...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            from ._pipeline import current

            record.args = (*args[:2], current().scrubber.scrub_text(args[2]), *args[3:])
        return True


def install() -> None:
    """Annotate every log record made from now on, and scrub uvicorn's access lines (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    logging.getLogger("uvicorn.access").addFilter(AccessScrubFilter())
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        _annotate(record)
        return record

    logging.setLogRecordFactory(factory)


class AccessFormatter(logging.Formatter):
    """uvicorn access lines with the request id and the time the request took.

    ``%(request_id)s``, ``%(duration_ms)s`` and uvicorn's ``%(client_addr)s``, ``%(request_line)s``,
    ``%(status_code)s`` are available; the default format shows them all.
    """

    default_format = (
        '%(asctime)s %(client_addr)s "%(request_line)s" %(status_code)s %(duration_ms)sms rid=%(request_id)s'
    )

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, style: Any = "%") -> None:
        super().__init__(fmt or self.default_format, datefmt, style)

    def formatMessage(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            _annotate(record)
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) == 5:
            client_addr, method, path, version, status = args
            record.client_addr = client_addr
            record.request_line = f"{method} {path} HTTP/{version}"
            record.status_code = status
        started = request_started.get()
        record.duration_ms = f"{(time.perf_counter() - started) * 1000:.1f}" if started is not None else "-"
        return super().formatMessage(record)
