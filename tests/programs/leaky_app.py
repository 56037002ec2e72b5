"""A service handed secrets every way a client and its code can: python leaky_app.py PORT."""

from __future__ import annotations

import logging
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, Request

from gateway_otel import instrument_app, operation_log

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s [%(request_id)s] %(message)s")
logger = logging.getLogger("leaky")


@operation_log(is_cost_log=True)
def login(user: str, password: str, options: dict[str, Any]) -> dict[str, Any]:
    logger.info("login for %s", user)
    return {"user": user, "session_token": options["api_key"] + "-session", "note": f"Bearer {options['api_key']}"}


@operation_log
def fail_with(api_key: str) -> None:
    raise PermissionError(f"rejected api_key={api_key}")


app = FastAPI()


@app.post("/v1/login")
async def login_endpoint(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    result = login(body["user"], password=body["password"], options=body["options"])
    try:
        fail_with(body["options"]["api_key"])
    except PermissionError:
        logger.warning("login side check failed")
    return {"ok": True, "user": result["user"]}


uvicorn.run(instrument_app(app), host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
