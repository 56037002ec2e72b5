"""N billed operations gathered in one asyncio.run(), which returns at once: python asyncio_burst.py RID N."""

from __future__ import annotations

import asyncio
import sys

from gateway_otel import operation_log, trace_id_context

rid, n = sys.argv[1], int(sys.argv[2])


@operation_log(is_cost_log=True)
async def bill(i: int) -> int:
    await asyncio.sleep(0)
    return i


async def main() -> None:
    trace_id_context.set(rid)
    await asyncio.gather(*(bill(i) for i in range(n)))


asyncio.run(main())
