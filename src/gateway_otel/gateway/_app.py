"""The reference gateway: the whole protocol over FastAPI and SQLite.

It also accepts what ``ait_openapi`` sends (``request`` as ``[args, kwargs]``, ``durationMillis`` 0),
so services that have not migrated keep reporting to it.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._records import encode
from ._otlp import OtlpError, OtlpExport, OtlpTooLarge, records_from_otlp
from ._store import Caller, Store, StoreResult

MAX_BODY_BYTES = 16 * 1024 * 1024
_PAGE = (FilePath(__file__).parent / "static" / "request.html").read_bytes()
MAX_BATCH = 10_000


def _integral(value: Any) -> Any:
    """JSON's integers: ``12`` and ``12.0`` are, ``true`` is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Millis = Annotated[int, BeforeValidator(_integral)]


class Record(BaseModel):
    """One operation log record, as the protocol defines it."""

    # Strict: an integer is not a float or a boolean, a boolean not a number (the schema says so).
    model_config = ConfigDict(extra="allow", strict=True)

    uuid: str = Field(min_length=1, max_length=128)
    requestId: str = Field(min_length=1, max_length=256)
    callerId: str = Field(max_length=256)
    requestUrl: str = Field(max_length=8192)
    opLogType: Literal["in", "out"]
    opType: str = Field(min_length=1, max_length=256)
    isCostLog: bool
    operationStatus: Literal["success", "failed"]
    startTimeMillis: Millis = Field(ge=0, le=2**53)
    durationMillis: Millis = Field(ge=0, le=2**53)
    request: dict[str, Any] | list[Any]
    response: Any = None
    errMsg: str | None = None
    extraInfo: dict[str, Any] | None = None


Records = Annotated[list[Record], Field(max_length=MAX_BATCH)]
_RECORDS = TypeAdapter(Records)

Authorization = Annotated[str | None, Header(max_length=8192)]


class Envelope(BaseModel):
    code: int = 0
    msg: str = "ok"
    data: Any = None


class BatchResult(BaseModel):
    accepted: int
    duplicates: int


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Envelope, "description": "Malformed request"},
    401: {"model": Envelope, "description": "Missing or bad token"},
    413: {"model": Envelope, "description": "Body too large"},
}


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status, headers, media_type="application/json")


def _otlp_response(export: OtlpExport, *, json: bool) -> Response:
    """An ``ExportTraceServiceResponse``: empty, or a partial success naming the rejected spans."""
    if json:
        body: dict[str, Any] = {}
        if export.rejected:
            body["partialSuccess"] = {"rejectedSpans": str(export.rejected), "errorMessage": export.reason}
        return Response(orjson.dumps(body), media_type="application/json")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    message = ExportTraceServiceResponse()
    if export.rejected:
        message.partial_success.rejected_spans = export.rejected
        message.partial_success.error_message = export.reason
    return Response(message.SerializeToString(), media_type="application/x-protobuf")


def _ok(data: Any) -> Response:
    return _json({"code": 0, "msg": "ok", "data": data})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"code": status, "msg": message, "data": None}, status, headers)


class GroupCommit:
    """Stores the records of requests that arrive together in one transaction (a group commit).

    Why: one record per POST, beginning and committing a transaction (with its counters) for each
    record is a large share of the gateway's CPU. Requests whose handlers run in the same
    turn of the event loop wait for one transaction at the end of that turn; each is answered once
    its records are committed, as before, with its own counts. When that transaction fails, each
    request's records are stored in a transaction of their own, so that one failing fails alone.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        # By event loop: an app served from several threads (tests do) groups each loop's own.
        self._waiting: dict[asyncio.AbstractEventLoop, list[_Waiting]] = {}

    async def add(self, records: list[dict[str, Any]], via: str) -> StoreResult:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[StoreResult] = loop.create_future()
        waiting = self._waiting.get(loop)
        if waiting is None:
            waiting = self._waiting[loop] = []
            loop.call_soon(self._commit, loop)  # after the handlers already scheduled in this turn
        waiting.append((records, via, done))
        return await done

    def _commit(self, loop: asyncio.AbstractEventLoop) -> None:
        waiting = self._waiting.pop(loop)
        outcomes: list[StoreResult | Exception]
        try:
            outcomes = list(self.store.add_groups([(records, via) for records, via, _ in waiting]))
        except Exception as exc:
            # One request's records that cannot be stored must not fail the others: each alone.
            outcomes = [self._alone(records, via) for records, via, _ in waiting] if len(waiting) > 1 else [exc]
        for (_, _, done), outcome in zip(waiting, outcomes, strict=True):
            if done.cancelled():
                continue
            if isinstance(outcome, Exception):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

    def _alone(self, records: list[dict[str, Any]], via: str) -> StoreResult | Exception:
        try:
            return self.store.add_records(records, via=via)
        except Exception as exc:
            return exc


_Waiting = tuple[list[dict[str, Any]], str, "asyncio.Future[StoreResult]"]


async def _report(
    writer: GroupCommit, request: Request, validate: Callable[[bytes], list[Record]], *, via: str
) -> Response:
    """Validate the body's records in one pass over its JSON, store them, answer with the counts.

    Why the body is read here rather than taken as a parameter: the gateway's accept rate bounds
    every delivery figure, and FastAPI's parsing of a body parameter (JSON to objects, then objects
    to models) costs more than validating the JSON text at once."""
    body = await request.body()
    try:
        records = validate(body)
    except ValidationError as exc:
        errors = [f"{'.'.join(str(p) for p in ('body', *e['loc']))}: {e['msg']}" for e in exc.errors()[:5]]
        return _error(400, "invalid request: " + "; ".join(errors))
    result = await writer.add(_RECORDS.dump_python(records, exclude_unset=True), via)
    return _ok({"accepted": result.accepted, "duplicates": result.duplicates})


def _document_bodies(app: FastAPI) -> None:
    """Put the report endpoints' body models in the OpenAPI schema (their routes read the body
    themselves, so FastAPI does not see the models)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        models = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, adapter in (("Record", TypeAdapter(Record)), ("Records", _RECORDS)):
            generated = adapter.json_schema(ref_template="#/components/schemas/{model}")
            models.update(generated.pop("$defs", {}))
            models[name] = generated
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _body(model: str) -> dict[str, Any]:
    """The OpenAPI request body of a report endpoint (its route reads the body itself)."""
    schema = {"$ref": f"#/components/schemas/{model}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


class _BodyLimit:
    """Refuses bodies over ``MAX_BODY_BYTES`` with 413 before they are read whole."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY_BYTES):
                await _error(413, "request body too large")(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise HTTPException(413, "request body too large")
            return message

        await self.app(scope, limited, send)


def create_app(store: Store, *, report_token: str | None = None) -> FastAPI:
    """The reference gateway as an ASGI app over ``store``."""
    app = FastAPI(
        title="gateway-otel reference gateway",
        version="1.0",
        responses=_ERRORS,
    )
    app.state.store = store
    writer = GroupCommit(store)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5]]
        return _error(400, "invalid request: " + "; ".join(errors))

    def caller(authorization: str | None) -> Caller:
        token = (authorization or "").strip()
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        found = store.caller_for_token(token) if token else None
        if found is None:
            raise HTTPException(401, "missing or invalid token" if token else "missing token")
        return found

    @app.get("/v1/openapi/validate/tokens", response_model=Envelope, tags=["auth"])
    async def validate_tokens(authorization: Authorization = None) -> Any:
        return _ok(caller(authorization).caller_id)

    @app.get("/v1/openapi/support/model", response_model=Envelope, tags=["auth"])
    async def support_model(model: Annotated[str, Query(max_length=256)], authorization: Authorization = None) -> Any:
        return _ok(caller(authorization).supports(model))

    @app.get("/v1/openapi/check/account/balance", response_model=Envelope, tags=["auth"])
    async def account_balance(cost: Annotated[float, Query(ge=0, le=1e12)], authorization: Authorization = None) -> Any:
        return _ok(caller(authorization).balance >= cost)

    @app.post("/v1/openapi/report/log", response_model=Envelope, tags=["records"], openapi_extra=_body("Record"))
    async def report_log(request: Request) -> Response:
        return await _report(writer, request, _one_record, via="report/log")

    @app.post("/v1/openapi/report/logs", response_model=Envelope, tags=["records"], openapi_extra=_body("Records"))
    async def report_logs(request: Request) -> Response:
        return await _report(writer, request, _RECORDS.validate_json, via="report/logs")

    @app.get("/v1/openapi/log/{requestId}", response_model=Envelope, tags=["records"])
    async def log_of(requestId: Annotated[str, Path(max_length=256)]) -> Any:
        return _ok(store.records_of(requestId))

    @app.get("/v1/openapi/requests", response_model=Envelope, tags=["admin"])
    async def requests(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Any:
        return _ok(store.request_ids(limit))

    @app.get("/v1/openapi/stats", response_model=Envelope, tags=["admin"])
    async def stats() -> Any:
        return _ok(store.stats())

    @app.post(
        "/v1/traces",
        tags=["otlp"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            }
        },
        responses={
            200: {
                "description": "ExportTraceServiceResponse (empty)",
                "content": {"application/x-protobuf": {}, "application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def otlp_traces(request: Request) -> Response:
        """OTLP/HTTP trace export: operation spans become records (same uuids as the adapter's exporter)."""
        content_type = request.headers.get("content-type", "application/x-protobuf")
        body = await request.body()
        if not body:
            return _error(400, "empty export request")
        try:
            export = records_from_otlp(body, content_type, request.headers.get("content-encoding"))
        except OtlpTooLarge as exc:
            return _error(413, str(exc))
        except OtlpError as exc:
            return _error(400, str(exc))
        if export.records:
            try:
                store.add_records([orjson.loads(encode(record)) for record in export.records], via="otlp")
            except (UnicodeEncodeError, orjson.JSONEncodeError) as exc:
                return _error(400, f"text that is not valid Unicode: {exc}")
        return _otlp_response(export, json="json" in content_type)

    @app.get("/requests/{requestId}", include_in_schema=False)
    async def request_page(requestId: str) -> Response:
        """A read-only page: the request's records as a timeline of operations, then as a table."""
        return Response(_PAGE, media_type="text/html; charset=utf-8")

    app.add_middleware(_BodyLimit)
    _document_bodies(app)
    if report_token:
        app.add_middleware(_ReportToken, token=report_token)
    return app


#: The routes that write records, which ``--report-token`` guards.
_WRITES = frozenset({"/v1/openapi/report/log", "/v1/openapi/report/logs", "/v1/traces"})


class _ReportToken:
    """Writes of records need ``Authorization: Bearer <token>`` (the adapter's ``report_token``, a
    collector's ``OTEL_EXPORTER_OTLP_HEADERS``); reads and the token checks need none of it."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in _WRITES:
            given = next((value for name, value in scope.get("headers", ()) if name == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                await _error(401, "writing records needs the report token")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _one_record(body: bytes) -> list[Record]:
    return [Record.model_validate_json(body)]
