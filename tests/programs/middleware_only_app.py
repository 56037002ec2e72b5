"""A service that adds the context middlewares by hand, as ait_openapi's users do (no instrument_app).

Served by ``uvicorn middleware_only_app:app``: its access and WebSocket lines are what the tests read.
"""

from __future__ import annotations

from fastapi import FastAPI, WebSocket

from gateway_otel.middleware import HttpContextMiddleware, WebSocketHttpContextMiddleware

app = FastAPI()


@app.get("/v1/items")
async def items() -> dict[str, bool]:
    return {"ok": True}


@app.websocket("/ws")
async def ws(socket: WebSocket) -> None:
    await socket.accept()
    await socket.send_text("hello")
    await socket.close()


app.add_middleware(HttpContextMiddleware)
app.add_middleware(WebSocketHttpContextMiddleware)
