"""``instrument_app``: one call makes a FastAPI/Starlette app fully instrumented."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from ._client import GatewayClient
from ._pipeline import configure_to_serve
from .logging import install as install_log_correlation
from .middleware import HttpContextMiddleware, fastapi_telemetry
from .plugins import Plugin

if TYPE_CHECKING:
    from starlette.applications import Starlette

AppT = TypeVar("AppT", bound="Starlette")  # a FastAPI or Starlette app
_INSTRUMENTED = "_is_instrumented_by_gateway_otel"


def instrument_app(
    app: AppT,
    *,
    exclude_path: Sequence[str] = (),
    client: GatewayClient | None = None,
    trust_upstream: bool | None = None,
    server_spans: bool = True,
    log_correlation: bool = True,
    freeze_gc: bool = True,
    error_body: bool = True,
    context_plugins: Sequence[Plugin] = (),
    propagate: Sequence[str] = (),
) -> AppT:
    """Server spans (OTel HTTP semantic conventions), the context middleware with auth, the request id
    header and log correlation, on a FastAPI or Starlette app. Returns the app. An app instrumented
    already (by an earlier call, or the ``gateway_otel`` instrumentor) is left as it is.

    Args:
        exclude_path: paths that need no token (exact, ``<pattern>`` segments or ``*`` globs).
        client: the gateway client (the process's by default).
        trust_upstream: take identity from incoming W3C baggage (an internal service behind the gateway).
        server_spans: one SERVER span per request, following the OTel HTTP semantic conventions (a lean
            path of the context middleware; stock ``FastAPIInstrumentor`` costs more than the app).
            FastAPI 0.16x's own tracing is turned off for it. With ``False`` that is left on (it
            costs about as much as the app) when, at the first request, a processor such as OTLP's
            would see its spans; else it is turned off too.
        log_correlation: add request id, trace id, span id and caller id to every log record.
        freeze_gc: at the first request, ``gc.collect()`` then ``gc.freeze()`` (once per process), so
            that the garbage collector's full collections scan only what requests allocate, not the
            whole app (a shorter p99 under load).
        error_body: an exception no handler of the app's answers is a 500 whose JSON body holds the
            request id (``{"code": 500, "msg": ..., "data": null, "requestId": ...}``); ``False``:
            Starlette's plain-text 500. Either carries ``X-Request-ID``.
        context_plugins: fill ``request_context`` from each request (``gateway_otel.plugins``:
            correlation id, user agent, forwarded-for, request time); their keys are log fields too.
        propagate: ``request_context`` keys whose values at the request's start travel to downstream
            services as W3C baggage (a service with ``trust_upstream`` restores them); none by default.
    """
    if getattr(app, _INSTRUMENTED, False):
        return app  # once: the ``gateway_otel`` instrumentor and the app's own code may both call it
    setattr(app, _INSTRUMENTED, True)
    configure_to_serve()  # configured before the first request, for a process that serves requests
    telemetry = fastapi_telemetry(app)
    if server_spans and telemetry is not None:
        # FastAPI 0.16x traces requests itself once a TracerProvider is set: a second server span
        # per request (and spans around dependencies and serialization) on top of ours would
        # double the tracing cost.
        telemetry["tracing"] = False
    app.add_middleware(
        HttpContextMiddleware,
        exclude_path=list(exclude_path),
        client=client,
        trust_upstream=trust_upstream,
        server_spans=server_spans,
        freeze_gc=freeze_gc,
        error_body=error_body,
        plugins=context_plugins,
        propagate=propagate,
    )
    if log_correlation:
        install_log_correlation()
    return app
