"""Log correlation: request id, trace id, span id and caller id on every log record.

Importing the package gives every log record these fields as ``-``, and ``install()`` fills them
from the current request from then on (``%(request_id)s`` and friends work in any format, before
and after the set-up, inside and outside requests); ``RequestContextFilter`` does the same for one
handler or logger; ``AccessFormatter`` is a uvicorn access-log formatter showing the request id and
the request's duration.
"""

from __future__ import annotations

import contextlib
import logging
import time
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.baggage import get_all as get_baggage
from opentelemetry.context import Context

from . import _attributes as attrs
from ._request_context import log_fields, store_of

__all__ = ["AccessFormatter", "AccessScrubFilter", "RequestContextFilter", "install"]

#: ``perf_counter()`` when the current request arrived (set by the context middleware).
request_started: ContextVar[float | None] = ContextVar("gateway_otel_request_started", default=None)
#: The attribute under which an exception that left a request keeps that request's context.
_CONTEXT_OF_EXCEPTION = "_gateway_otel_context"
_installed = False
_correlate = False


def remember_context(exc: BaseException, ctx: Context) -> None:
    """Keep the request's context on an exception leaving it: the server logs the exception after the
    request's context is gone (uvicorn's ``Exception in ASGI application``), and its log line should
    still name the request."""
    with contextlib.suppress(AttributeError, TypeError):  # an exception type with ``__slots__``
        setattr(exc, _CONTEXT_OF_EXCEPTION, ctx)


def _annotate(record: logging.LogRecord, ctx: Context | None = None) -> None:
    bag = get_baggage(ctx)
    span_context = trace.get_current_span(ctx).get_span_context()
    record.request_id = str(bag.get(attrs.REQUEST_ID) or "-")
    record.caller_id = str(bag.get(attrs.CALLER_ID) or "-")
    if span_context.is_valid:
        record.trace_id = format(span_context.trace_id, "032x")
        record.span_id = format(span_context.span_id, "016x")
    else:
        record.trace_id = record.span_id = "-"
    if ctx is None and not bag and record.exc_info:
        remembered = getattr(record.exc_info[1], _CONTEXT_OF_EXCEPTION, None)
        if isinstance(remembered, Context):
            _annotate(record, remembered)
            return
    if log_fields:
        store = store_of(ctx) or {}
        for key in log_fields:
            setattr(record, key, store.get(key, "-"))


def _blank(record: logging.LogRecord) -> None:
    record.request_id = record.caller_id = record.trace_id = record.span_id = "-"
    for key in log_fields:
        setattr(record, key, "-")


def _install_record_factory() -> None:
    """Every log record made from now on has ``request_id``, ``trace_id``, ``span_id`` and
    ``caller_id``: the current request's once ``install()`` ran, ``-`` before, so that a format
    naming them never fails on a record made outside a request or before the set-up."""
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _correlate:
            _annotate(record)
        else:
            _blank(record)
        return record

    logging.setLogRecordFactory(factory)


class RequestContextFilter(logging.Filter):
    """Adds ``request_id``, ``trace_id``, ``span_id`` and ``caller_id`` to each record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", "-") == "-":  # made outside a request, or before install()
            _annotate(record)
        return True


class AccessScrubFilter(logging.Filter):
    """Redacts secrets in uvicorn's lines that name a request: its access lines (``?access_token=``)
    and its WebSocket lines (``"WebSocket /ws?token=..." [accepted]``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and any(isinstance(arg, str) and ("?" in arg or "@" in arg) for arg in args):
            from ._pipeline import current_pipeline

            scrub = current_pipeline().scrubber.scrub_text
            record.args = tuple(scrub(arg) if isinstance(arg, str) else arg for arg in args)
        return True


_scrubbing_server_lines = False


def scrub_server_lines() -> None:
    """Scrub uvicorn's access and error lines from now on (idempotent): both middlewares call it."""
    global _scrubbing_server_lines
    if _scrubbing_server_lines:
        return
    _scrubbing_server_lines = True
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(AccessScrubFilter())


def install() -> None:
    """Annotate every log record made from now on, and scrub uvicorn's access lines (idempotent)."""
    global _installed, _correlate
    _correlate = True
    if _installed:
        return
    _installed = True
    scrub_server_lines()


_install_record_factory()


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
        if getattr(record, "request_id", "-") == "-":  # made outside a request, or before install()
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
