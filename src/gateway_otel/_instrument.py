"""``instrument_app``: one call makes a FastAPI/Starlette app fully instrumented."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._client import GatewayClient
from ._pipeline import current
from .logging import install as install_log_correlation
from .middleware import HttpContextMiddleware


def instrument_app(
    app: Any,
    *,
    exclude_path: Sequence[str] = (),
    client: GatewayClient | None = None,
    trust_upstream: bool | None = None,
    server_spans: bool = True,
    log_correlation: bool = True,
) -> Any:
    """Server spans (OTel HTTP semantic conventions), the context middleware with auth, the request id
    header and log correlation, on a FastAPI or Starlette app. Returns the app.

    Args:
        exclude_path: paths that need no token (exact, ``<pattern>`` segments or ``*`` globs).
        client: the gateway client (the process's by default).
        trust_upstream: take identity from incoming W3C baggage (an internal service behind the gateway).
        server_spans: add OpenTelemetry's ASGI server spans (without per-chunk send/receive spans).
        log_correlation: add request id, trace id, span id and caller id to every log record.
    """
    pipeline = current()
    app.add_middleware(
        HttpContextMiddleware, exclude_path=list(exclude_path), client=client, trust_upstream=trust_upstream
    )
    if server_spans:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=pipeline.provider, exclude_spans=["receive", "send"])
    if log_correlation:
        install_log_correlation()
    return app
