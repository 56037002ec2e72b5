"""A uvicorn service billing one operation per request: python billing_service.py RID PORT [instrumented]."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from gateway_otel import instrument_app, operation_log, trace_id_context

rid, port = sys.argv[1], int(sys.argv[2])
app = FastAPI()


@operation_log(is_cost_log=True)
async def bill(i: int) -> int:
    return i


@app.get("/bill/{i}")
async def endpoint(i: int) -> dict[str, int]:
    token = trace_id_context.set(rid)
    try:
        return {"i": await bill(i)}
    finally:
        trace_id_context.reset(token)


served = instrument_app(app, exclude_path=["*"]) if "instrumented" in sys.argv[3:] else app
uvicorn.run(served, host="127.0.0.1", port=port, log_level="warning")
