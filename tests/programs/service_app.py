"""A service for process-manager tests: ``gunicorn service_app:app`` (imports at preload time)."""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI

from gateway_otel import instrument_app, operation_log


@operation_log(is_cost_log=True)
async def bill(i: int) -> dict[str, int]:
    return {"i": i, "pid": os.getpid()}


app = FastAPI()


@app.get("/bill/{i}")
async def endpoint(i: int) -> dict[str, Any]:
    return await bill(i)


instrument_app(app)

# A call before the fork: the master's delivery thread and locks exist when gunicorn forks.
import asyncio  # noqa: E402

asyncio.run(bill(-1))
