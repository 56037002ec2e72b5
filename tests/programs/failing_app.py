"""A FastAPI service whose operations fail, served by ``uvicorn failing_app:app`` or gunicorn.

Logs go to stderr in the documented format, so that tests read the lines a user would.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse

from gateway_otel import instrument_app, operation_log
from gateway_otel.middleware import WebSocketHttpContextMiddleware

FORMAT = "%(levelname)s [%(request_id)s] [%(caller_id)s] [%(trace_id)s] %(name)s: %(message)s"

handler = logging.StreamHandler(sys.stderr)
handler.setFormatter(logging.Formatter(FORMAT))
for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error"):
    log = logging.getLogger(name)
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)


class Refused(Exception):
    """Answered by the app's own handler (418)."""


@operation_log(is_cost_log=True)
def explode(text: str) -> str:
    raise RuntimeError(f"model failed on {text!r}")


@operation_log(is_cost_log=True)
async def words(text: str) -> AsyncIterator[str]:
    yield "first "
    raise RuntimeError("stream broke")


app = FastAPI()


@app.exception_handler(Refused)
async def refused(request: Request, exc: Refused) -> JSONResponse:
    return JSONResponse({"refused": True}, status_code=418)


@app.post("/explode")
async def explode_endpoint(body: dict[str, str]) -> dict[str, str]:
    return {"result": explode(body["text"])}


@app.post("/refuse")
async def refuse_endpoint() -> dict[str, str]:
    raise Refused


@app.get("/stream")
async def stream_endpoint() -> StreamingResponse:
    return StreamingResponse(words("x"), media_type="text/plain")


@app.websocket("/ws")
async def ws_endpoint(socket: WebSocket) -> None:
    await socket.accept()
    raise RuntimeError("socket handler broke")


app.add_middleware(WebSocketHttpContextMiddleware)
instrument_app(app)
