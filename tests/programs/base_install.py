"""Run in a virtualenv holding gateway-otel and no extra: what scripts and workers use works there.

Usage: python base_install.py REQUEST_ID (with OPENAPI_HOST set); prints ``delivered`` at the end.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
from collections.abc import MutableMapping
from typing import Any

from gateway_otel import caller_id_context, force_flush, instrument_app, operation_log, trace_id_context
from gateway_otel.middleware import HttpContextMiddleware

# The virtualenv really has no web framework, CLI library, gunicorn or instrumentation package.
for framework in (
    "starlette",
    "fastapi",
    "uvicorn",
    "typer",
    "rich",
    "uvicorn_worker",
    "opentelemetry.instrumentation",
):
    assert importlib.util.find_spec(framework) is None, f"{framework} is installed"

# Each part that needs an extra names it.
for module, extra in (
    ("gateway_otel.gunicorn", "gunicorn"),
    ("gateway_otel.gateway", "gateway"),
    ("gateway_otel.instrumentation", "instrument"),
):
    try:
        importlib.import_module(module)
    except ImportError as exc:
        assert f"pip install 'gateway-otel[{extra}]'" in str(exc), exc
    else:
        raise AssertionError(f"{module} imported without its extra")
assert callable(instrument_app)


# The context middleware is pure ASGI: it serves a bare ASGI app with no framework installed.
async def bare_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def one_request() -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    scope = {"type": "http", "method": "GET", "path": "/health", "headers": [], "query_string": b""}
    await HttpContextMiddleware(bare_app, exclude_path=["/health"])(scope, receive, send)
    return sent


start, body = asyncio.run(one_request())
assert start["status"] == 200 and any(name == b"x-request-id" for name, _ in start["headers"]), start


@operation_log(is_cost_log=True)
def bill(i: int) -> int:
    return i


trace_id_context.set(sys.argv[1])
caller_id_context.set("alice")
for i in range(5):
    bill(i)
assert force_flush(20)
print("delivered")
