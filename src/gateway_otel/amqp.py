"""Trace context and request identity across RabbitMQ (aio-pika) messages.

``message_headers()`` gives the W3C ``traceparent`` and baggage (request id, caller id, request
URL) to put on an outgoing message; ``consume(message)`` runs the handling of an incoming one as a
CONSUMER span in the sender's trace, with the sender's identity when the service trusts its
upstream (``trust_upstream=True`` or ``GATEWAY_OTEL_TRUST_UPSTREAM=1``: a worker behind the gateway).
``RPC`` is ``aio_pika.patterns.RPC`` doing both for its calls and handlers.

Hand-written rather than ``opentelemetry-instrumentation-aio-pika``: its releases pin an older
``opentelemetry-instrumentation`` than the HTTP instrumentations in use, so both cannot be
installed together; these two functions are all that propagation over AMQP needs.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import _attributes as attrs
from ._context import PROPAGATOR, name_request_by_trace, put_identity, without_identity
from ._errors import missing_extra
from ._pipeline import current_pipeline
from ._serialize import error_message

__all__ = ["consume", "message_headers"]


def message_headers(headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``headers`` plus ``traceparent`` and ``baggage`` of the current context, for ``aio_pika.Message``."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return {**(headers or {}), **carrier}


@contextlib.contextmanager
def consume(message: Any, *, trust_upstream: bool | None = None, name: str | None = None) -> Iterator[trace.Span]:
    """Handle ``message`` (an ``aio_pika.IncomingMessage``) as a CONSUMER span of the sender's trace,
    reported as a ``consume <queue>`` record pair (``request_records``)."""
    pipeline = current_pipeline()
    headers = {str(k): v.decode() if isinstance(v, bytes) else str(v) for k, v in (message.headers or {}).items()}
    ctx = PROPAGATOR.extract(headers, otel_context.Context())
    trusted = pipeline.settings.trust_upstream if trust_upstream is None else trust_upstream
    if not trusted:
        ctx = without_identity(ctx)
    routing_key = getattr(message, "routing_key", None) or "message"
    attributes: dict[str, Any] = {"messaging.system": "rabbitmq", "messaging.operation.type": "process"}
    if getattr(message, "routing_key", None):
        attributes["messaging.destination.name"] = message.routing_key
    if pipeline.settings.request_records:
        attributes[attrs.OP_TYPE] = f"consume {routing_key}"
        attributes[attrs.IS_COST_LOG] = False
        put_identity(attributes, ctx)
    named = attrs.REQUEST_ID in attributes
    span = pipeline.lean_tracer.start_span(name or f"process {routing_key}", ctx, attributes, kind=SpanKind.CONSUMER)
    if attrs.OP_TYPE in attributes and not named:
        name_request_by_trace(span)
    token = otel_context.attach(trace.set_span_in_context(span, ctx))
    try:
        yield span
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
        span.record_exception(exc)
        if attrs.OP_TYPE in attributes:
            span.set_attribute(attrs.ERROR, error_message(exc, pipeline.scrubber))
        raise
    finally:
        otel_context.detach(token)
        span.end()


def __getattr__(name: str) -> Any:
    """``RPC``: made on first use, so that ``gateway_otel.amqp`` imports without aio-pika."""
    if name == "RPC":
        return _make_rpc()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _make_rpc() -> type:
    try:
        from aio_pika.patterns import RPC as PlainRPC
        from aio_pika.patterns.rpc import RPCMessageType
    except ImportError as exc:
        raise missing_extra("amqp", "gateway_otel.amqp.RPC", exc) from exc

    class RPC(PlainRPC):
        """``aio_pika.patterns.RPC`` that carries the trace and the request's identity: a drop-in for
        the pattern as seed 002's gateway uses it (``await RPC.create(channel)``, ``register``,
        ``proxy.method(...)`` / ``call``).

        A call's message carries ``traceparent`` and the identity baggage of the caller's context
        (``message_headers()``); the registered handler runs as a CONSUMER span of the caller's trace
        (``consume()``), with the caller's request id and caller id when this side trusts its upstream
        (``trust_upstream=True`` here, or ``GATEWAY_OTEL_TRUST_UPSTREAM=1``: a worker behind the gateway).
        """

        trust_upstream: bool | None = None

        async def serialize_message(
            self, payload: Any, message_type: Any, correlation_id: Any, delivery_mode: Any, **kwargs: Any
        ) -> Any:
            if message_type == RPCMessageType.CALL:
                kwargs["headers"] = message_headers(kwargs.get("headers"))
            return await super().serialize_message(payload, message_type, correlation_id, delivery_mode, **kwargs)

        async def on_call_message(self, method_name: str, message: Any) -> None:
            with consume(message, trust_upstream=self.trust_upstream, name=f"rpc {method_name}"):
                await super().on_call_message(method_name, message)

    return RPC
