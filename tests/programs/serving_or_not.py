"""A process that serves requests, or a script, or one with an ASGI server loaded: python serving_or_not.py RID HOW.

HOW: ``serve`` (``instrument_app`` makes the configuration, a request is served), ``call`` (a
script's call), ``server loaded`` (uvicorn imported, as a module that runs ``uvicorn.run`` does).
Prints whether the records went through a relay.
"""

from __future__ import annotations

import asyncio
import sys

import httpx
from fastapi import FastAPI

import gateway_otel
from gateway_otel import instrument_app, operation_log, trace_id_context
from gateway_otel._pipeline import current_pipeline

rid, how = sys.argv[1], sys.argv[2]


@operation_log(is_cost_log=True)
def bill(i: int) -> int:
    return i


trace_id_context.set(rid)
if how == "serve":
    app = instrument_app(FastAPI(), exclude_path=["*"])

    @app.get("/bill")
    async def endpoint() -> dict[str, int]:
        return {"i": bill(1)}

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            answer = await client.get("/bill", headers={"x-request-id": rid})
            assert answer.status_code == 200

    asyncio.run(main())
else:
    if how == "server loaded":
        import uvicorn  # noqa: F401 - loaded, as by a module that runs its app with uvicorn.run()
    bill(1)
assert gateway_otel.force_flush(20)
print(current_pipeline().delivery.relay is not None, flush=True)
