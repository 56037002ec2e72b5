"""The reference gateway with misbehaviour on demand, for tests and benchmarks only.

``python -m gateway_otel._faulty_gateway`` takes the reference gateway's arguments and serves it
behind ``FaultInjection``: ``PUT /v1/openapi/faults`` sets what goes wrong (``Faults``: slow or
refused reports, dropped connections, records answered 400, slow token checks), ``GET`` of the
same path reads how many calls came. The reference gateway itself knows nothing of it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

__all__ = ["FAULTS_PATH", "FaultInjection", "Faults", "main"]

FAULTS_PATH = "/v1/openapi/faults"
_TOKENS_PATH = "/v1/openapi/validate/tokens"
_REPORTS = "/v1/openapi/report/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclasses.dataclass
class Faults:
    """What goes wrong (everything off by default)."""

    #: Answer ``/report/log(s)`` with this status instead of storing.
    report_status: int | None = None
    #: ``Retry-After`` header sent with ``report_status``.
    retry_after: str | None = None
    #: Close the connection without an answer.
    drop: bool = False
    #: Seconds to wait before answering ``/report/log(s)``.
    report_delay: float = 0.0
    #: Seconds to wait before answering ``/validate/tokens``.
    token_delay: float = 0.0
    #: uuids answered with 400 (a malformed record).
    reject_uuids: set[str] = dataclasses.field(default_factory=set)

    def set(self, settings: dict[str, Any]) -> None:
        """Everything off, then what ``settings`` (a ``PUT`` body) turns on."""
        fresh = Faults()
        for field in dataclasses.fields(Faults):
            value = settings.get(field.name, getattr(fresh, field.name))
            setattr(self, field.name, set(value) if field.name == "reject_uuids" else value)


class FaultInjection:
    """An ASGI middleware in front of the gateway that misbehaves as its ``Faults`` say."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.faults = Faults()
        self.token_checks = 0  # calls of /validate/tokens so far
        self.report_calls = 0  # calls of /report/log(s) so far, answered or not

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == FAULTS_PATH:
            await self._faults_endpoint(scope, receive, send)
        elif path == _TOKENS_PATH:
            self.token_checks += 1
            if self.faults.token_delay:
                await asyncio.sleep(self.faults.token_delay)
            await self.app(scope, receive, send)
        elif path.startswith(_REPORTS):
            await self._report(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _faults_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "PUT":
            self.faults.set(orjson.loads(await _body(receive) or b"{}"))
            data: Any = True
        else:
            data = {"tokenChecks": self.token_checks, "reportCalls": self.report_calls}
        await _answer(send, 200, {"code": 0, "msg": "ok", "data": data})

    async def _report(self, scope: Scope, receive: Receive, send: Send) -> None:
        faults = self.faults
        self.report_calls += 1
        if faults.report_delay:
            await asyncio.sleep(faults.report_delay)
        if faults.drop:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
            raise ConnectionAbortedError("fault injection: connection dropped mid-response")
        if faults.report_status is not None:
            headers = {"retry-after": faults.retry_after} if faults.retry_after else None
            await _answer(send, faults.report_status, {"code": faults.report_status, "msg": "fault injection"}, headers)
            return
        if faults.reject_uuids:
            body = await _body(receive)
            refused = faults.reject_uuids.intersection(_uuids(body))
            if refused:
                await _answer(send, 400, {"code": 400, "msg": f"malformed record {sorted(refused)[0]}", "data": None})
                return
            receive = _replay(body)
        await self.app(scope, receive, send)


def _uuids(body: bytes) -> list[str]:
    try:
        found = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    records = found if isinstance(found, list) else [found]
    return [str(record.get("uuid")) for record in records if isinstance(record, dict)]


async def _body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _answer(send: Send, status: int, content: Any, headers: dict[str, str] | None = None) -> None:
    from starlette.responses import Response  # the gateway extra

    response = Response(orjson.dumps(content), status, headers, media_type="application/json")
    await response({"type": "http"}, _replay(b""), send)


def main() -> None:
    import uvicorn

    from .gateway._server import build

    parser = argparse.ArgumentParser(prog="python -m gateway_otel._faulty_gateway", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--config", default=None)
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--report-token", default=None)
    args = parser.parse_args()
    _, app = build(args.db, config=args.config, demo=args.demo, report_token=args.report_token)
    uvicorn.run(FaultInjection(app), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
