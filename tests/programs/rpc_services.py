"""Three services of seed 002's shape: python rpc_services.py ROLE PORT METHOD B_URL.

edge       FastAPI (instrument_app, token auth) -> ``gateway_otel.amqp.RPC`` call over RabbitMQ
worker     ``gateway_otel.amqp.RPC`` handler -> httpx (instrumented: a CLIENT span) -> service-b
service-b  FastAPI behind the worker (``trust_upstream``: identity from the propagated baggage)
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import httpx
import uvicorn
from fastapi import FastAPI
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

from gateway_otel import instrument_app, operation_log
from gateway_otel.amqp import RPC

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
role, port, method, b_url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
calls: Any = None  # the edge's RPC, connected at its start


@operation_log(is_cost_log=True)
async def score(text: str) -> dict[str, Any]:
    return {"score": len(text)}


@operation_log
async def work(text: str) -> Any:
    async with httpx.AsyncClient(timeout=10) as client:  # the instrumentation sends the trace context
        response = await client.post(f"{b_url}/score", json={"text": text})
        response.raise_for_status()
        return response.json()


@operation_log
async def dispatch(text: str) -> Any:
    return await calls.call(method, kwargs={"text": text})


def edge() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        global calls
        connection = await aio_pika.connect_robust(AMQP_URL)
        async with connection:
            calls = await RPC.create(await connection.channel())
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/rpc")
    async def rpc(body: dict[str, Any]) -> dict[str, Any]:
        return {"reply": await dispatch(body["text"])}

    uvicorn.run(instrument_app(app), host="127.0.0.1", port=port, log_level="warning")


def service_b() -> None:
    app = FastAPI()

    @app.post("/score")
    async def score_endpoint(body: dict[str, Any]) -> dict[str, Any]:
        return await score(body["text"])

    uvicorn.run(instrument_app(app, trust_upstream=True), host="127.0.0.1", port=port, log_level="warning")


async def worker() -> None:
    HTTPXClientInstrumentor().instrument()
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        rpc = await RPC.create(await connection.channel())
        rpc.trust_upstream = True  # behind the gateway: the caller's identity comes with the call
        await rpc.register(method, work, auto_delete=True)
        print("ready", flush=True)
        await asyncio.Future()  # until SIGTERM


if role == "edge":
    edge()
elif role == "service-b":
    service_b()
else:
    asyncio.run(worker())
