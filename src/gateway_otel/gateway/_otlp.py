"""The gateway's OTLP/HTTP receiver: operation spans from any collector become records.

Spans carrying ``gateway.op_type`` become an ``in`` and an ``out`` record through the adapter's
own ``build_record`` (same fields, same uuids), so a record that also arrives through the
adapter's exporter is acknowledged once and never billed twice. Protobuf and JSON, gzip or not.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from .._attributes import OP_TYPE
from .._records import IN, OUT, build_record

__all__ = ["OtlpError", "records_from_otlp"]

#: OTLP's status code of a failed span.
STATUS_ERROR = 2


class OtlpError(ValueError):
    """The body is not an OTLP trace export request."""


def records_from_otlp(body: bytes, content_type: str, content_encoding: str | None) -> list[dict[str, Any]]:
    """The records of every operation span in an OTLP ``ExportTraceServiceRequest``."""
    if content_encoding and content_encoding.lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as exc:
            raise OtlpError(f"bad gzip body: {exc}") from None
    spans = _json_spans(body) if "json" in content_type.lower() else _protobuf_spans(body)
    records: list[dict[str, Any]] = []
    for span in spans:
        if OP_TYPE not in span["attributes"]:
            continue
        for kind in (IN, OUT):
            records.append(build_record(kind, **span))
    return records


def _protobuf_spans(body: bytes) -> Iterator[dict[str, Any]]:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise OtlpError(f"not an OTLP protobuf export request: {exc}") from None
    for resource_spans in request.resource_spans:
        service = _service({kv.key: _pb_value(kv.value) for kv in resource_spans.resource.attributes})
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "trace_id": int.from_bytes(span.trace_id, "big"),
                    "span_id": int.from_bytes(span.span_id, "big"),
                    "parent_span_id": int.from_bytes(span.parent_span_id, "big") or None,
                    "start_time_ns": span.start_time_unix_nano,
                    "end_time_ns": span.end_time_unix_nano or None,
                    "attributes": {kv.key: _pb_value(kv.value) for kv in span.attributes},
                    "failed": span.status.code == STATUS_ERROR,
                    "service": service,
                }


def _pb_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("string_value", "bool_value", "int_value", "double_value") else None


def _json_spans(body: bytes) -> Iterator[dict[str, Any]]:
    try:
        request = orjson.loads(body)
        for resource_spans in request.get("resourceSpans", []):
            service = _service(_json_attributes(resource_spans.get("resource", {}).get("attributes", [])))
            for scope_spans in resource_spans.get("scopeSpans", []):
                for span in scope_spans.get("spans", []):
                    parent = span.get("parentSpanId") or ""
                    yield {
                        "trace_id": int(span["traceId"], 16),
                        "span_id": int(span["spanId"], 16),
                        "parent_span_id": int(parent, 16) if parent else None,
                        "start_time_ns": int(span.get("startTimeUnixNano", 0)),
                        "end_time_ns": int(span.get("endTimeUnixNano", 0)) or None,
                        "attributes": _json_attributes(span.get("attributes", [])),
                        "failed": int((span.get("status") or {}).get("code", 0)) == STATUS_ERROR,
                        "service": service,
                    }
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise OtlpError(f"not an OTLP/JSON export request: {exc!r}") from None


def _json_attributes(items: list[Mapping[str, Any]]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for item in items:
        value = item.get("value") or {}
        for kind in ("stringValue", "boolValue", "doubleValue"):
            if kind in value:
                attributes[item["key"]] = value[kind]
                break
        else:
            if "intValue" in value:
                attributes[item["key"]] = int(value["intValue"])
    return attributes


def _service(resource: Mapping[str, Any]) -> str:
    return str(resource.get("service.name") or "unknown_service")
