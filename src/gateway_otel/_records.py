"""The operation log record: its type, its uuid rule, and the one function that builds it from span data.

Both the adapter's exporter and the reference gateway's OTLP receiver build records through
``build_record``, so the two paths give the same record with the same uuid.
"""

from __future__ import annotations

import dataclasses
import uuid as uuid_module
from collections.abc import Mapping
from hashlib import sha1 as _sha1
from typing import Any, Literal, NamedTuple

import orjson

from . import _attributes as attrs

IN: Literal["in"] = "in"
OUT: Literal["out"] = "out"
SUCCESS: Literal["success"] = "success"
FAILED: Literal["failed"] = "failed"
ANONYMOUS = "anonymous"

#: Namespace of record uuids (uuid5 of trace id, span id and in/out).
RECORD_NAMESPACE = uuid_module.UUID("6f0d7a4e-3c1b-5e9a-9b43-4c2e8d1f7a10")
_NAMESPACE_BYTES = RECORD_NAMESPACE.bytes

_FIELDS = {
    "uuid": "uuid",
    "requestId": "request_id",
    "callerId": "caller_id",
    "requestUrl": "request_url",
    "opLogType": "op_log_type",
    "opType": "op_type",
    "isCostLog": "is_cost_log",
    "operationStatus": "operation_status",
    "startTimeMillis": "start_time_millis",
    "durationMillis": "duration_millis",
    "request": "request",
    "response": "response",
    "errMsg": "err_msg",
    "extraInfo": "extra_info",
}


class SpanData(NamedTuple):
    """What a span's records are built from, taken when the span is handed over: plain values
    only (ints, strings, an untracked dict), so that records waiting for delivery keep no span
    objects alive. Queued spans would survive into the garbage collector's old generations, and
    its full collections of a loaded app would set the service's p99."""

    trace_id: int
    span_id: int
    #: The span of the record its records hang under (``_record_tree``), most often its parent.
    parent_span_id: int | None
    start_ns: int
    end_ns: int | None
    attributes: dict[str, Any]
    failed: bool
    service: str


def record_uuid(trace_id: int, span_id: int, op_log_type: str) -> str:
    """The uuid of a span's ``in`` or ``out`` record: the same whenever and wherever it is rebuilt.

    It is ``uuid5(RECORD_NAMESPACE, trace id hex + span id hex + in/out)``, computed here without
    ``uuid.UUID`` objects (a fifth of a record's build time on the delivery thread).
    """
    name = f"{trace_id:032x}{span_id:016x}{op_log_type}".encode()
    digest = bytearray(_sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])  # uuid5's hash
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclasses.dataclass
class OperationLog:
    """One record of the gateway's operation log (``to_payload()`` gives the protocol's camelCase dict)."""

    request_id: str
    caller_id: str
    request_url: str
    op_type: str
    op_log_type: Literal["in", "out"] = OUT
    is_cost_log: bool = False
    operation_status: Literal["success", "failed"] = SUCCESS
    start_time_millis: int = 0
    duration_millis: int = 0
    request: Any = dataclasses.field(default_factory=dict)
    response: Any = None
    err_msg: str | None = None
    extra_info: dict[str, Any] | None = None
    uuid: str = dataclasses.field(default_factory=lambda: str(uuid_module.uuid4()))

    def to_payload(self) -> dict[str, Any]:
        """The record as the gateway takes it: camelCase keys, optional fields left out when empty."""
        payload = {camel: getattr(self, snake) for camel, snake in _FIELDS.items()}
        for optional in ("response", "errMsg", "extraInfo"):
            if payload[optional] is None:
                del payload[optional]
        return payload

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> OperationLog:
        """A record from the protocol's camelCase dict (unknown keys are ignored)."""
        known = {snake: payload[camel] for camel, snake in _FIELDS.items() if camel in payload}
        return cls(**known)


def build_record(
    op_log_type: str,
    *,
    trace_id: int,
    span_id: int,
    parent_span_id: int | None,
    start_time_ns: int,
    end_time_ns: int | None,
    attributes: Mapping[str, Any],
    failed: bool,
    service: str,
) -> dict[str, Any]:
    """The ``in`` or ``out`` record of an operation span, as a payload dict.

    ``request`` and ``response`` arrive as JSON text in the span's attributes and stay JSON text
    (an ``orjson.Fragment``), so they are never parsed and serialized again.
    """
    is_out = op_log_type == OUT
    extra: dict[str, Any] = {}
    extra_json = attributes.get(attrs.EXTRA)
    if extra_json:
        try:
            loaded = orjson.loads(extra_json)
        except orjson.JSONDecodeError:
            loaded = {"extra": extra_json}
        if isinstance(loaded, dict):
            extra.update(loaded)
    trace_hex = f"{trace_id:032x}"
    extra["traceId"] = trace_hex
    extra["spanId"] = f"{span_id:016x}"
    parent_record = attributes.get(attrs.PARENT_RECORD)  # a span that makes no record in between
    if parent_record:
        extra["parentSpanId"] = str(parent_record)
    elif parent_span_id:
        extra["parentSpanId"] = f"{parent_span_id:016x}"
    extra["service"] = service
    status = FAILED if is_out and failed else SUCCESS
    payload: dict[str, Any] = {
        "uuid": record_uuid(trace_id, span_id, op_log_type),
        "requestId": str(attributes.get(attrs.REQUEST_ID) or trace_hex),
        "callerId": str(attributes.get(attrs.CALLER_ID) or ANONYMOUS),
        "requestUrl": str(attributes.get(attrs.REQUEST_URL) or ""),
        "opLogType": op_log_type,
        "opType": str(attributes.get(attrs.OP_TYPE)),
        "isCostLog": bool(attributes.get(attrs.IS_COST_LOG, False)),
        "operationStatus": status,
        "startTimeMillis": start_time_ns // 1_000_000,
        "durationMillis": max(0, (end_time_ns - start_time_ns) // 1_000_000) if is_out and end_time_ns else 0,
        "request": _fragment(attributes.get(attrs.REQUEST), {}),
        "extraInfo": extra,
    }
    if is_out:
        response = attributes.get(attrs.RESPONSE)
        if response:
            payload["response"] = _fragment(response, None)
        if status == FAILED:
            payload["errMsg"] = str(attributes.get(attrs.ERROR) or "failed")
    return payload


def _fragment(json_text: object, empty: Any) -> Any:
    if isinstance(json_text, str) and json_text:
        return orjson.Fragment(json_text)
    return empty


def encode(payload: Mapping[str, Any]) -> bytes:
    """The JSON body of a record."""
    return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
