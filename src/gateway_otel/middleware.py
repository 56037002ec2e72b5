"""Pure ASGI middleware: authenticate against the gateway and set the request's identity in OTel Context.

For each request not excluded: the token is validated (cached, async, never blocking the event
loop), a bad one is answered with 401 and a JSON body; the request id (a sane ``X-Request-ID``
or the trace id), the caller id (from the token alone) and the request URL (secrets scrubbed)
are set in the OTel Context; ``X-Request-ID`` is returned on the response; the context is reset
in all cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace

from . import _attributes as attrs
from ._client import GatewayClient, default_client
from ._context import (
    BAGGAGE,
    attach,
    baggage_of,
    detach,
    get_current,
    sane_request_id,
    with_identity,
    without_identity,
)
from ._errors import AuthorizationException, GatewayUnavailableError
from ._pipeline import Pipeline, current_pipeline, force_flush
from ._request_context import PROPAGATED_PREFIX, log_fields
from ._selflog import log_once
from ._server_span import describe_failure, describe_request, end_server_span, server_span_in, start_server_span
from ._span import _TRACE_ID, _VALID
from .logging import remember_context, request_started, scrub_server_lines
from .plugins import Plugin

if TYPE_CHECKING:  # pure ASGI: starlette's names for its types, no import at run time
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HttpContextMiddleware", "WebSocketHttpContextMiddleware", "sane_request_id"]

logger = logging.getLogger("gateway_otel")

REQUEST_ID_HEADER = b"x-request-id"
#: WebSocket close code for a policy violation (a bad token).
POLICY_VIOLATION = 1008
#: WebSocket close code for a server that failed while handling the connection.
INTERNAL_ERROR = 1011


def fastapi_telemetry(app: object) -> dict[str, Any] | None:
    """The telemetry configuration of a FastAPI 0.16x app, or ``None`` for another app. Such an app
    traces each request itself once a TracerProvider is set (``"tracing"``), reading this on every
    request."""
    config = getattr(getattr(app, "_native_telemetry", None), "config", None)
    return config if isinstance(config, dict) else None


def _quiet_fastapi_tracing(app: object, pipeline: Pipeline) -> None:
    """Turn off a FastAPI app's own request tracing, at its first request, when nothing would see
    its spans: no processor on the provider in force but the adapter's (which ignores them).

    Why: the provider that ``configure()`` sets for operation spans makes FastAPI 0.16x trace every
    request, which costs a middleware-only app (as ait_openapi's users add it) much of its
    throughput, and with no exporter configured each of those spans goes nowhere.
    """
    config = fastapi_telemetry(app)
    if config is None or not config.get("tracing") or config.get("tracer_provider") is not None:
        return  # not FastAPI's, not tracing, or tracing to a provider of the app's own
    provider = pipeline.provider  # joined first: the join may set the provider in force
    if trace.get_tracer_provider() is not provider or pipeline.lean_tracer.records_non_operation_spans():
        return  # a provider that is not the SDK's, or a processor (OTLP's, the user's) that sees them
    config["tracing"] = False
    logger.info(
        "gateway-otel: FastAPI's own request tracing is off, as no processor would see its spans; "
        "instrument_app(app) gives each request a server span"
    )


#: FastAPI's documentation routes: a browser opening them sends no token.
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")


def _compile_excludes(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = []
    for pattern in patterns:
        regex = ""
        for piece in re.split(r"(<[^>/]*>|\*)", pattern):
            if piece == "*":
                regex += ".*"
            elif piece.startswith("<") and piece.endswith(">"):
                regex += "[^/]+"
            else:
                regex += re.escape(piece)
        parts.append(regex)
    return re.compile("|".join(f"(?:{part})" for part in parts)) if parts else None


#: The request headers the middleware and the server span read (W3C trace context and baggage
#: included), by their lower-case ASGI names.
_READ_HEADERS = {
    name.encode(): name
    for name in ("authorization", "x-request-id", "host", "user-agent", "traceparent", "tracestate", "baggage")
}


def _headers(scope: Scope, wanted: dict[bytes, str] = _READ_HEADERS) -> dict[str, str]:
    """The request headers the middleware reads (``wanted``: its own and its plugins'), by lower-case
    name (the last of repeated ones), decoded once; the others are not decoded at all."""
    headers: dict[str, str] = {}
    read = wanted.get
    for key, value in scope.get("headers", ()):
        name = read(key)
        if name is not None:
            headers[name] = value.decode("latin-1")
    return headers


def _url(scope: Scope, headers: dict[str, str]) -> str:
    scheme = scope.get("scheme", "http")
    host = headers.get("host")
    if host is None:
        server = scope.get("server")
        host = f"{server[0]}:{server[1]}" if server else "localhost"
    query = scope.get("query_string", b"").decode("latin-1")
    path = scope.get("root_path", "") + scope.get("path", "")
    return f"{scheme}://{host}{path}" + (f"?{query}" if query else "")


class _Identity(NamedTuple):
    """A request's context and what it holds of the request's identity."""

    context: otel_context.Context
    request_id: str
    caller_id: str | None
    url: str
    store: dict[str, Any]


class _ContextMiddlewareBase:
    scope_type = "http"

    def __init__(
        self,
        app: ASGIApp,
        exclude_path: Sequence[str] | None = None,
        *,
        exclude_url: Sequence[str] | None = None,
        client: GatewayClient | None = None,
        trust_upstream: bool | None = None,
        server_spans: bool = False,
        freeze_gc: bool = False,
        error_body: bool = True,
        plugins: Sequence[Plugin] = (),
        propagate: Sequence[str] = (),
    ) -> None:
        self.app = app
        self._error_body = error_body
        self._plugins = tuple(plugins)
        self._propagate = tuple(propagate)
        self._wanted = {**_READ_HEADERS, **{p.header.encode(): p.header for p in self._plugins if p.header}}
        log_fields.update(plugin.key for plugin in self._plugins)
        log_fields.update(self._propagate)
        scrub_server_lines()  # the request line holds the query string, secrets and all
        self._server_spans = server_spans
        self._freeze_gc = freeze_gc
        self._first = True
        self._exclude = _compile_excludes([*(exclude_path or ()), *(exclude_url or ())])
        self._client = client
        self._trust_upstream = trust_upstream

    @property
    def client(self) -> GatewayClient:
        if self._client is None:
            self._client = default_client()
        return self._client

    def excluded(self, path: str) -> bool:
        """Whether ``path`` needs no token: the docs routes and ``exclude_path``."""
        return path in DOCS_PATHS or (self._exclude is not None and self._exclude.fullmatch(path) is not None)

    def _trusted(self) -> bool:
        if self._trust_upstream is None:
            self._trust_upstream = current_pipeline().settings.trust_upstream
        return self._trust_upstream

    def _upstream_caller(self, base: otel_context.Context) -> str | None:
        """The caller id that a trusted upstream (the edge that checked the token) sent in the
        request's baggage: such a request needs no token of its own. ``None`` otherwise."""
        if not self._trusted():
            return None
        return _str(baggage_of(base).get(attrs.CALLER_ID))

    def _identity(
        self,
        pipeline: Pipeline,
        scope: Scope,
        headers: dict[str, str],
        caller_id: str | None,
        base: otel_context.Context,
        span: trace.Span | None = None,
    ) -> _Identity:
        """The request's context (``base`` with the identity in its baggage, ``span`` as its current
        span when given, a fresh request context) and what it holds."""
        upstream = baggage_of(base)
        request_id: str | None = None
        url: str | None = None
        store: dict[str, Any] = {}
        if upstream:  # baggage from upstream (most requests have none): trusted, or its identity removed
            if self._trusted():
                request_id = sane_request_id(str(upstream.get(attrs.REQUEST_ID) or "")) or None
                caller_id = caller_id or _str(upstream.get(attrs.CALLER_ID))
                url = _str(upstream.get(attrs.REQUEST_URL))
                for key, value in upstream.items():  # request context keys the upstream propagated
                    if key.startswith(PROPAGATED_PREFIX):
                        store[key[len(PROPAGATED_PREFIX) :]] = pipeline.scrubber.scrub_text(str(value))
            else:
                base = without_identity(base)
        baggage_entries = None
        if self._plugins:
            self._run_plugins(pipeline, scope, headers, store)
            if self._propagate:
                baggage_entries = {PROPAGATED_PREFIX + k: str(store[k]) for k in self._propagate if k in store}
        if not request_id:
            given = headers.get("x-request-id")  # most requests have none: no call to check it
            request_id = (given and sane_request_id(given)) or _trace_id_or_new(
                trace.get_current_span(base) if span is None else span
            )
        url = pipeline.scrubber.scrub_url(url or _url(scope, headers))
        ctx = with_identity(
            base,
            request_id=request_id,
            caller_id=caller_id,
            request_url=url,
            span=span,
            store=store,
            baggage_entries=baggage_entries,
        )
        return _Identity(ctx, request_id, caller_id, url, store)

    def _run_plugins(self, pipeline: Pipeline, scope: Scope, headers: dict[str, str], store: dict[str, Any]) -> None:
        """Fill the request context from the plugins (a key an upstream propagated is kept)."""
        for plugin in self._plugins:
            if plugin.key in store:
                continue
            try:
                value = plugin.process_request(headers, scope)
            except Exception as exc:
                log_once(f"plugin-{plugin.key}", "gateway-otel: the %s plugin failed: %r", plugin.key, exc)
                continue
            if isinstance(value, str) and pipeline.scrubber.suspects(value):
                value = pipeline.scrubber.scrub_text(value)
            if value is not None:
                store[plugin.key] = value

    def _response_headers(self, store: dict[str, Any]) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        for plugin in self._plugins:
            if plugin.key in store:
                headers.extend(plugin.enrich_response(store[plugin.key]))
        return headers


_frozen = False


def _freeze_startup_objects() -> None:
    """Move what exists at the first request (modules, the app, its routes and models) out of the
    cyclic garbage collector's way: its full collections then scan only what requests allocate.

    Why: each request's spans, contexts and attributes are GC-tracked objects; under load they
    trigger full collections of the whole heap, which set the p99. This is ``gc.freeze()`` as
    CPython's documentation describes it, after one collection so that no garbage of the start-up is
    kept. Once per process: apps made later (a test suite makes many) must stay collectable.
    """
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _trace_id_or_new(span: trace.Span) -> str:
    span_context = span.get_span_context()
    if span_context[_VALID]:  # read by index, as the API's own properties read a SpanContext
        # Its 32 hex digits, as format(trace_id, "032x") writes them, without the format machinery.
        return span_context[_TRACE_ID].to_bytes(16, "big").hex()
    # 32 random hex digits from the OS, as ``uuid.uuid4().hex`` (less its six fixed bits) without
    # its ``UUID`` object: each request without a server span (the middleware added by itself, as
    # ait_openapi's users add it) makes one.
    return os.urandom(16).hex()


async def _json_error(send: Send, status: int, message: str, request_id: str) -> None:
    body = orjson.dumps({"code": status, "msg": message, "data": None, "requestId": request_id})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (REQUEST_ID_HEADER, request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HttpContextMiddleware(_ContextMiddlewareBase):
    """Authenticates each HTTP request and puts its identity in the OTel Context (pure ASGI)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One coroutine for the whole request: every frame and call on this path is paid once per
        # request, and under load each costs more than it does in a loop.
        if scope["type"] != "http":
            await self.app(scope, receive, _flush_at_shutdown(send) if scope["type"] == "lifespan" else send)
            return
        if self._first:  # one flag read a request for the first request's work
            self._first = False
            if self._freeze_gc:
                _freeze_startup_objects()
            _quiet_fastapi_tracing(scope.get("app"), current_pipeline())
        started = request_started.set(time.perf_counter())
        span = adopted = None
        records = False  # the request's span makes records (``request_records``)
        describe_adopted: Callable[[int | None, BaseException | None], None] | None = None
        status: int | None = None
        error: BaseException | None = None
        try:
            headers = _headers(scope, self._wanted)
            base = get_current()
            pipeline = current_pipeline()
            if self._server_spans:
                records = pipeline.settings.request_records
                adopted = server_span_in(base)  # another instrumentation's (the contrib ASGI one, Logfire)
                if adopted is None:
                    span, base = start_server_span(pipeline.lean_tracer, scope, headers, base, records=records)
            caller_id: str | None = None
            failure: tuple[int, str] | None = None
            if "baggage" in headers and span is None and adopted is None and self._trusted():
                base = BAGGAGE.extract(headers, base)  # no server span extracted it
            exclude = self._exclude  # self.excluded() and self.client, without their calls
            path = scope["path"]
            if (
                path not in DOCS_PATHS
                and (exclude is None or exclude.fullmatch(path) is None)
                and not ("baggage" in headers and (caller_id := self._upstream_caller(base)))
            ):
                client = self._client or self.client
                authorization = headers.get("authorization")
                try:
                    caller_id = client._cached_caller(authorization) or await client.avalidate_token(authorization)
                except AuthorizationException as exc:
                    failure = (401, str(exc))
                except GatewayUnavailableError:
                    failure = (503, "the gateway cannot check the token now")
            ctx, request_id, caller_id, url, store = self._identity(pipeline, scope, headers, caller_id, base, span)
            identified = adopted if adopted is not None else span if records else None
            if identified is not None:  # what its records (and the trace) say of the request
                identified.set_attribute(attrs.REQUEST_ID, request_id)
                if caller_id is not None:
                    identified.set_attribute(attrs.CALLER_ID, caller_id)
                if records:
                    identified.set_attribute(attrs.REQUEST_URL, url)
                    if adopted is not None:
                        describe_adopted = _describer(adopted, scope, pipeline)
            if failure is not None:
                status = failure[0]
                if describe_adopted is not None:
                    describe_adopted(status, None)
                await _json_error(send, failure[0], failure[1], request_id)
                return
            header = (REQUEST_ID_HEADER, request_id.encode())
            added = (header, *self._response_headers(store)) if self._plugins else (header,)

            def send_with_request_id(message: Message) -> Awaitable[None]:
                # A plain function handing back ``send``'s own awaitable: no coroutine of its own
                # to make and run for each message (two a request).
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [*message.get("headers", ()), *added]
                    if describe_adopted is not None:  # its instrumentation may end it with the response
                        describe_adopted(status, None)
                return send(message)

            token = attach(ctx)
            try:
                await self.app(scope, receive, send_with_request_id)
            except Exception as exc:
                remember_context(exc, ctx)  # for the server's log line of it, made outside the request
                if describe_adopted is not None:
                    describe_adopted(500 if status is None else status, exc)
                if status is None:  # nothing answered yet: the 500 is answered here, in the request's context
                    status = 500
                    await _error_response(scope, receive, send, send_with_request_id, exc, request_id, self._error_body)
                raise
            finally:
                detach(token)
        except BaseException as exc:
            error = exc
            raise
        finally:
            if span is not None:
                end_server_span(span, scope, status, error, pipeline.scrubber if records else None)
            elif describe_adopted is not None:
                describe_adopted(status, error)
            request_started.reset(started)


def _describer(
    span: trace.Span, scope: Scope, pipeline: Pipeline
) -> Callable[[int | None, BaseException | None], None]:
    """Describe another instrumentation's server span for its records (``describe_request``) while
    it still records: at the response's start, at an exception, or at the request's end, whichever
    comes first (the contrib ASGI instrumentation ends its span with the response's last body). An
    exception after the response started (a stream broken half-way) adds its error message then.
    Each is set once: the middleware reports an exception both where it catches it and at its end."""
    described = failed = False

    def describe(status: int | None, error: BaseException | None) -> None:
        nonlocal described, failed
        if not span.is_recording():
            return
        if not described:
            described, failed = True, error is not None
            span.set_attribute(attrs.IS_COST_LOG, False)
            describe_request(span, scope, status, error, pipeline.scrubber)
        elif error is not None and not failed:
            failed = True
            describe_failure(span, error, pipeline.scrubber)

    return describe


async def _error_response(
    scope: Scope,
    receive: Receive,
    send: Send,
    send_with_request_id: Send,
    exc: Exception,
    request_id: str,
    json_body: bool,
) -> None:
    """Answer an exception that the app left unanswered, as Starlette's outermost middleware would
    (the app's own handler for 500 or ``Exception``, its debug page), but from inside the request's
    context, so that the response carries ``X-Request-ID`` and the server's access line the request's
    ids. With no handler of the app's: a small JSON body holding the request id (``error_body``)."""
    app = scope.get("app")
    handlers = getattr(app, "exception_handlers", None) or {}
    handler = handlers.get(500) or handlers.get(Exception)
    debug = bool(getattr(app, "debug", False))
    if handler is None and not debug and json_body:
        await _json_error(send, 500, "Internal Server Error", request_id)
        return
    try:
        from starlette.middleware.errors import ServerErrorMiddleware
    except ImportError:  # a bare ASGI app with no framework installed
        await _json_error(send, 500, "Internal Server Error", request_id)
        return

    async def reraise(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    try:
        await ServerErrorMiddleware(reraise, handler=handler, debug=debug)(scope, receive, send_with_request_id)
    except Exception as again:  # it answers, then raises the exception again, as it always does
        if again is not exc:
            raise


def _flush_at_shutdown(send: Send) -> Send:
    """``send`` for the lifespan scope: before the app says its shutdown is complete, every record
    so far is delivered or spooled (within ``shutdown_timeout``).

    uvicorn ends a SIGTERM'd server by raising the signal again once the lifespan shutdown is
    complete, which ends the process at once, without ``atexit``: without this, the records of the
    last half second before the signal (the relay's first ones, while it comes up) were lost
    (``test_a_service_stopped_with_sigterm_right_after_its_requests_loses_nothing``).
    """

    async def flushing_send(message: Message) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            await asyncio.get_running_loop().run_in_executor(None, force_flush)
        await send(message)

    return flushing_send


class WebSocketHttpContextMiddleware(_ContextMiddlewareBase):
    """The WebSocket variant: the token comes from ``Authorization`` or a ``token`` query parameter.

    A bad token closes the connection with code 1008. Plain HTTP requests pass through unchanged.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope, self._wanted)
        caller_id: str | None = None
        base = get_current()
        if "baggage" in headers and self._trusted():
            base = BAGGAGE.extract(headers, base)
        if not self.excluded(scope["path"]) and not (
            "baggage" in headers and (caller_id := self._upstream_caller(base))
        ):
            token = headers.get("authorization") or _query_token(scope)
            try:
                caller_id = await self.client.avalidate_token(token)
            except (AuthorizationException, GatewayUnavailableError):
                await receive()  # websocket.connect
                await send({"type": "websocket.close", "code": POLICY_VIOLATION, "reason": "invalid token"})
                return
        ctx = self._identity(current_pipeline(), scope, headers, caller_id, base).context
        state = {"websocket.accept": False, "websocket.close": False}

        async def tracking_send(message: Message) -> None:
            if message["type"] in state:
                state[message["type"]] = True
            await send(message)

        token_ctx = attach(ctx)
        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            remember_context(exc, ctx)  # the server logs it outside the request's context
            if state["websocket.accept"] and not state["websocket.close"]:
                # The peer learns that the server failed (1011), not that the connection broke (1006).
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": INTERNAL_ERROR, "reason": "internal error"})
            raise
        finally:
            detach(token_ctx)


def _query_token(scope: Scope) -> str | None:
    query: bytes = scope.get("query_string", b"")
    for key, value in parse_qsl(query.decode("latin-1")):
        if key == "token":
            return value
    return None
