"""Three services for the RabbitMQ propagation test: python amqp_apps.py ROLE PORT QUEUE B_URL.

edge       FastAPI (instrument_app, token auth) -> RPC over RabbitMQ to the worker
worker     aio-pika consumer -> HTTP call to service-b
service-b  FastAPI behind the worker (identity from propagated baggage)
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import aio_pika
import httpx
import uvicorn
from fastapi import FastAPI

from gateway_otel import instrument_app, operation_log
from gateway_otel.amqp import consume, message_headers

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
role, port, queue, b_url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


@operation_log(is_cost_log=True)
async def score(text: str) -> dict[str, Any]:
    return {"score": len(text)}


@operation_log
async def work(text: str) -> Any:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{b_url}/score", json={"text": text}, headers=message_headers())
        response.raise_for_status()
        return response.json()


@operation_log
async def dispatch(text: str) -> Any:
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        correlation = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            if message.correlation_id == correlation and not future.done():
                future.set_result(message.body)
            await message.ack()

        await replies.consume(on_reply)
        await channel.default_exchange.publish(
            aio_pika.Message(
                text.encode(), headers=message_headers(), reply_to=replies.name, correlation_id=correlation
            ),
            routing_key=queue,
        )
        return (await asyncio.wait_for(future, 20)).decode()


def edge() -> None:
    app = FastAPI()

    @app.post("/v1/rpc")
    async def rpc(body: dict[str, Any]) -> dict[str, Any]:
        return {"reply": await dispatch(body["text"])}

    uvicorn.run(instrument_app(app), host="127.0.0.1", port=port, log_level="warning")


def service_b() -> None:
    app = FastAPI()

    @app.post("/score")
    async def score_endpoint(body: dict[str, Any]) -> dict[str, Any]:
        return await score(body["text"])

    uvicorn.run(
        instrument_app(app, exclude_path=["*"], trust_upstream=True), host="127.0.0.1", port=port, log_level="warning"
    )


async def worker() -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        requests = await channel.declare_queue(queue, auto_delete=True)
        print("ready", flush=True)
        async with requests.iterator() as messages:
            async for message in messages:
                async with message.process():
                    with consume(message, trust_upstream=True):
                        result = await work(message.body.decode())
                    await channel.default_exchange.publish(
                        aio_pika.Message(str(result).encode(), correlation_id=message.correlation_id),
                        routing_key=message.reply_to or "",
                    )


if role == "edge":
    edge()
elif role == "service-b":
    service_b()
else:
    asyncio.run(worker())
