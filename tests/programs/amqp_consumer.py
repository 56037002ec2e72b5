"""An aio-pika consumer as seed 002's workers run one: python amqp_consumer.py QUEUE.

Each message is handled in ``consume()`` (a CONSUMER span, the sender's identity) by a billed
operation; it prints ``ready`` once consuming, then ``handled`` per message, until SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys

import aio_pika

from gateway_otel import operation_log
from gateway_otel.amqp import consume

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@operation_log(is_cost_log=True)
async def embed(text: str) -> int:
    return len(text)


async def main() -> None:
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(sys.argv[1], auto_delete=True)
        print("ready", flush=True)
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    with consume(message, trust_upstream=True):
                        await embed(message.body.decode())
                print("handled", flush=True)


asyncio.run(main())
