"""A plain ``asyncio.run`` worker, as the README's RabbitMQ recipe runs one: it bills, then waits for
work until the process manager stops it with SIGTERM.

Usage: python sigterm_worker.py REQUEST_ID CALLS. Prints ``done`` once the calls are made.
"""

from __future__ import annotations

import asyncio
import sys

from gateway_otel import caller_id_context, operation_log, trace_id_context


@operation_log(is_cost_log=True)
async def bill(i: int) -> int:
    await asyncio.sleep(0)
    return i


async def main() -> None:
    trace_id_context.set(sys.argv[1])
    caller_id_context.set("alice")
    await asyncio.gather(*(bill(i) for i in range(int(sys.argv[2]))))
    print("done", flush=True)
    await asyncio.Event().wait()  # waiting for the next message


asyncio.run(main())
