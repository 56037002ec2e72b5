"""A FastAPI app that knows nothing of gateway-otel, for ``opentelemetry-instrument uvicorn plain_app:app``."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/v1/items/{item}")
async def item(item: int) -> dict[str, int]:
    if item < 0:
        raise ValueError("no negative items")
    return {"item": item}
