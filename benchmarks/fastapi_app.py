"""The FastAPI app that wrk loads, in four variants: python fastapi_app.py VARIANT PORT.

bare      the app alone
stock     the app with opentelemetry-instrumentation-fastapi (BatchSpanProcessor, no-op exporter)
gateway   gateway_otel.instrument_app: auth (warm cache), server span, one operation_log, gateway export
ait       ait_openapi's HttpContextMiddleware and @operation_log (run with its own interpreter)

``make_app`` builds them for ``inprocess.py`` too, which calls them in one process.
"""

from __future__ import annotations

import sys
from typing import Any

from fastapi import FastAPI, Request


def make_app(variant: str, *, operation: bool = True, fastapi_tracing: bool = True) -> FastAPI:
    """The app of ``variant``; ``operation``: its handler is an ``operation_log`` (gateway, ait);
    ``fastapi_tracing``: FastAPI 0.16x's own request tracing may run (it does once a TracerProvider
    is set, as in a process that also holds an instrumented app)."""
    # FastAPI 0.16x traces requests itself once a TracerProvider is set: off for the stock anchor, so
    # that it measures FastAPIInstrumentor alone (instrument_app turns it off for its own server span).
    tracing = fastapi_tracing and variant != "stock"
    app = FastAPI() if tracing else FastAPI(telemetry={"tracing": False})

    async def answer(payload: dict[str, Any]) -> dict[str, Any]:
        return {"echo": payload.get("prompt", ""), "tokens": len(str(payload))}

    if operation and variant in ("gateway", "gateway-plugins", "ait"):
        if variant != "ait":
            from gateway_otel import operation_log
        else:
            from ait_openapi import operation_log  # type: ignore[import-not-found,no-redef]

        answer = operation_log(is_cost_log=True)(answer)  # type: ignore[call-arg]

    @app.post("/v1/chat")
    async def chat(request: Request) -> dict[str, Any]:
        return await answer(await request.json())

    if variant == "stock":
        from opentelemetry import trace
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Noop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Noop()))
        trace.set_tracer_provider(provider)
        FastAPIInstrumentor.instrument_app(app)
    elif variant == "gateway":
        from gateway_otel import instrument_app

        instrument_app(app)
    elif variant == "gateway-plugins":  # the four plugins of gateway_otel.plugins
        from gateway_otel import instrument_app
        from gateway_otel.plugins import CorrelationIdPlugin, ForwardedForPlugin, RequestTimePlugin, UserAgentPlugin

        plugins = [CorrelationIdPlugin(), UserAgentPlugin(), ForwardedForPlugin(), RequestTimePlugin()]
        instrument_app(app, context_plugins=plugins)
    elif variant == "ait":
        from ait_openapi.middleware import HttpContextMiddleware  # type: ignore[import-not-found]

        app.add_middleware(HttpContextMiddleware)
    return app


if __name__ == "__main__":
    import uvicorn

    # Plain uvicorn (h11, asyncio) whatever else is installed: with httptools and uvloop the bare app
    # serves about twice the requests a second, and the stock anchor falls from its 0.40-0.50x to 0.29x.
    # The ratios of the spec are taken on this configuration.
    uvicorn.run(
        make_app(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        log_level="warning",
        access_log=False,
        http="h11",
        loop="asyncio",
    )
