"""The context middleware added by itself to a FastAPI app: python drop_in_middleware.py [exported].

Prints whether FastAPI's own tracing stayed on, and how many spans an exporter of the user's saw.
"""

from __future__ import annotations

import sys

from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway_otel import configure
from gateway_otel.middleware import HttpContextMiddleware, fastapi_telemetry

exporter = InMemorySpanExporter()
if "exported" in sys.argv[1:]:  # the app's own provider, set after configure(): joined
    configure()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

app = FastAPI()


@app.get("/ping")
def ping() -> dict[str, bool]:
    return {"ok": True}


app.add_middleware(HttpContextMiddleware)
with TestClient(app) as client:
    for _ in range(3):
        assert client.get("/ping").status_code == 200
telemetry = fastapi_telemetry(app)
print(telemetry is not None and bool(telemetry.get("tracing")), len(exporter.get_finished_spans()))
