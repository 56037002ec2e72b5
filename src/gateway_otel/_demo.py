"""``gateway-otel demo``: the whole path on one machine, with no set-up.

A reference gateway (temporary SQLite, demo callers), an edge FastAPI service instrumented with
``instrument_app``, and a worker service in a process of its own (``demo-worker``) that the edge
calls over httpx (trace context and identity travel as W3C headers); sample calls with a good
token, a bad token, a failing operation, billed ones, a streamed response and a call through the
worker; then every request's records as a tree, billing per caller as the gateway's database
holds it, and where to look further.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from opentelemetry import metrics
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from rich.console import Console
from rich.table import Table

from . import configure, force_flush, instrument_app, operation_log
from ._servers import free_port, serve_in_thread, stop_process, wait_for_port
from .cli import billing_table, fetch_records, record_tree

WORKER_URL_ENV = "GATEWAY_OTEL_DEMO_WORKER"
#: Seconds the worker has to deliver its records and exit once asked to.
WORKER_EXIT_TIMEOUT = 20.0


@operation_log
def tokenize(text: str) -> list[str]:
    return text.split()


@operation_log(is_cost_log=True)
def summarize(text: str, *, max_words: int = 3, api_key: str = "") -> str:
    return " ".join(tokenize(text)[:max_words])


@operation_log(is_cost_log=True)
def translate(text: str, target: str) -> str:
    raise ValueError(f"no model for language {target!r}")


@operation_log(is_cost_log=True)
async def stream_answer(prompt: str) -> AsyncIterator[str]:
    for word in ("streamed", "answer", "to", prompt):
        await asyncio.sleep(0.01)
        yield word + " "


@operation_log(op_type="embed", is_cost_log=True)
async def embed(text: str) -> list[float]:
    await asyncio.sleep(0.005)
    return [round(len(word) / 10, 2) for word in text.split()]


@operation_log
async def call_worker(text: str) -> Any:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{os.environ[WORKER_URL_ENV]}/embed", json={"text": text})
        response.raise_for_status()
        return response.json()


def edge_app() -> FastAPI:
    app = FastAPI(title="demo edge service")

    @app.post("/v1/summarize")
    async def summarize_endpoint(body: dict[str, Any]) -> dict[str, Any]:
        return {"summary": summarize(body["text"], api_key=body.get("api_key", ""))}

    @app.post("/v1/translate")
    async def translate_endpoint(body: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"translation": translate(body["text"], body["target"])}
        except ValueError as exc:  # the operation failed (its record says so): the caller asked for too much
            raise HTTPException(status_code=422, detail=str(exc)) from exc

    @app.get("/v1/stream")
    async def stream_endpoint(prompt: str) -> StreamingResponse:
        return StreamingResponse(stream_answer(prompt), media_type="text/plain")

    @app.post("/v1/pipeline")
    async def pipeline_endpoint(body: dict[str, Any]) -> dict[str, Any]:
        return {"embedding": await call_worker(body["text"])}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return instrument_app(app, exclude_path=["/health"])


def worker_app() -> FastAPI:
    app = FastAPI(title="demo worker service")

    @app.post("/embed")
    async def embed_endpoint(body: dict[str, Any]) -> list[float]:
        return await embed(body["text"])

    # An internal service behind the edge: identity comes from the propagated baggage.
    return instrument_app(app, trust_upstream=True)


SAMPLES: list[tuple[str, str, str, dict[str, Any] | None, str | None]] = [
    # (what, method, path, json body, token)
    (
        "billed summary (alice)",
        "POST",
        "/v1/summarize?api_key=sk-demo",
        {"text": "the quick brown fox jumps"},
        "demo-alice",
    ),
    ("failing translation (bob)", "POST", "/v1/translate", {"text": "hello", "target": "tlh"}, "demo-bob"),
    ("streamed answer (alice)", "GET", "/v1/stream?prompt=you", None, "demo-alice"),
    ("through the worker service (bob)", "POST", "/v1/pipeline", {"text": "tokens for an embedding"}, "demo-bob"),
    ("second billed summary (bob)", "POST", "/v1/summarize", {"text": "one two three four"}, "Bearer demo-bob"),
    ("bad token", "POST", "/v1/summarize", {"text": "x"}, "not-a-token"),
]


def metrics_table(reader: InMemoryMetricReader) -> Table:
    """The adapter's own metrics of this process (the edge service), as a MeterProvider has them."""
    table = Table(title="the edge service's gateway-otel metrics")
    table.add_column("metric")
    table.add_column("attributes")
    table.add_column("value", justify="right")
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name.startswith("gateway_otel."):
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)  # counters and gauges: one number
                        attributes = ", ".join(f"{k}={v!s}" for k, v in (point.attributes or {}).items())
                        table.add_row(metric.name, attributes, f"{value:g}" if value is not None else "")
    return table


@contextmanager
def worker_process(gateway_url: str, workdir: Path) -> Iterator[str]:
    """The worker service in a process of its own, reporting to the gateway as ``demo-worker``;
    yields its URL. On the way out it is stopped with SIGTERM, which delivers its records."""
    port = free_port()
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "demo-worker",
        "OPENAPI_HOST": gateway_url,
        "GATEWAY_OTEL_SPOOL_DIR": str(workdir / "worker-spool"),
    }
    process = subprocess.Popen([sys.executable, "-m", __name__, str(port)], env=env)  # noqa: S603 - our own module
    try:
        wait_for_port(port, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, WORKER_EXIT_TIMEOUT)


def run(console: Console, workdir: Path) -> int:
    """Run the demo in ``workdir``; returns the number of request trees shown."""
    from .gateway._server import build

    store, gateway_app = build(workdir / "gateway.sqlite3", demo=True)
    os.environ.setdefault("OTEL_SERVICE_NAME", "demo-edge")
    # The adapter's own metrics go to the MeterProvider a service sets; the demo's keeps them in memory.
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    with serve_in_thread(gateway_app, free_port()) as gateway_url:
        console.print(
            f"[bold]reference gateway[/] {gateway_url}  (tokens demo-alice -> alice, demo-bob -> bob)", soft_wrap=True
        )
        configure(openapi_host=gateway_url, spool_dir=str(workdir / "spool"))
        HTTPXClientInstrumentor().instrument()
        with worker_process(gateway_url, workdir) as worker_url, serve_in_thread(edge_app(), free_port()) as edge:
            os.environ[WORKER_URL_ENV] = worker_url
            console.print(
                f"[bold]edge service[/] {edge}   [bold]worker service[/] {worker_url} (its own process)", soft_wrap=True
            )
            request_ids: list[tuple[str, str]] = []
            with console.status("sample calls") as status, httpx.Client(base_url=edge, timeout=20) as client:
                for what, method, path, body, token in SAMPLES:
                    status.update(f"sample call: {what}")
                    response = client.request(method, path, json=body, headers={"Authorization": token or ""})
                    console.print(
                        f"  {what:34s} -> HTTP {response.status_code}  X-Request-ID {response.headers['x-request-id']}",
                        soft_wrap=True,
                    )
                    if response.status_code != 401:  # a rejected token makes no records
                        request_ids.append((what, response.headers["x-request-id"]))
                status.update("waiting for delivery")
                force_flush(20)
            # Leaving the block stops the worker, which delivers its records as it exits.
        HTTPXClientInstrumentor().uninstrument()
        console.print()
        for what, request_id in request_ids:
            console.print(f"[dim]{what}[/]")
            console.print(record_tree(request_id, fetch_records(gateway_url, request_id)))
        stats = httpx.get(f"{gateway_url}/v1/openapi/stats", timeout=10).json()["data"]
        console.print(billing_table(stats))
        console.print(f"records stored: {stats['stored']}, duplicates refused: {stats['duplicates']}")
        console.print(metrics_table(reader))
        console.print(
            "\n[bold]where to look[/]\n"
            "  gateway pages:             gateway-otel demo --keep DIR, then gateway-otel gateway --db "
            "DIR/gateway.sqlite3 and http://127.0.0.1:8600/requests/<X-Request-ID>\n"
            "  records of a request:      gateway-otel logs <X-Request-ID> --host <gateway URL>\n"
            "  traces in Jaeger:          docker compose up (compose.yaml), then OTEL_EXPORTER_OTLP_ENDPOINT="
            "http://localhost:4318 for your services, and http://localhost:16686"
        )
    store.close()
    return len(request_ids)


if __name__ == "__main__":  # the worker process of ``worker_process``
    import uvicorn

    uvicorn.run(worker_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
