"""The gateway's OTLP/HTTP receiver: operation spans from any collector become records.

Spans carrying ``gateway.op_type`` become an ``in`` and an ``out`` record through the adapter's
own ``build_record`` (same fields, same uuids), so a record that also arrives through the
adapter's exporter is acknowledged once and never billed twice. Protobuf and JSON, gzip or not.

The receiver takes no one's word: a compressed body inflates to ``MAX_INFLATED_BYTES`` at most
(``OtlpTooLarge``: 413), and each span is checked on its own: a span whose ``gateway.*`` attributes
are malformed (request or response text that is not JSON, a missing id) is rejected alone and
counted (OTLP partial success), the others become records.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from .._attributes import OP_TYPE, REQUEST, RESPONSE
from .._records import IN, OUT, build_record

__all__ = ["OtlpError", "OtlpExport", "OtlpTooLarge", "records_from_otlp"]

#: OTLP's status code of a failed span.
STATUS_ERROR = 2
#: Largest export request once decompressed (a small gzip body can inflate a thousandfold).
MAX_INFLATED_BYTES = 64 * 1024 * 1024


class OtlpError(ValueError):
    """The body is not an OTLP trace export request."""


class OtlpTooLarge(OtlpError):
    """The body inflates past ``MAX_INFLATED_BYTES``."""


@dataclasses.dataclass
class OtlpExport:
    """The records of an export request's operation spans, and the spans rejected (with why)."""

    records: list[dict[str, Any]]
    rejected: int = 0
    reason: str = ""


def _inflate(body: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
    try:
        data = inflater.decompress(body, MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise OtlpError(f"bad gzip body: {exc}") from None
    if inflater.unconsumed_tail:
        raise OtlpTooLarge(f"the body inflates past {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof:
        raise OtlpError("bad gzip body: truncated")
    return data


def _check(span: dict[str, Any]) -> None:
    """Raise ``ValueError`` when the span's attributes cannot make a record as they are."""
    if not span["trace_id"] or not span["span_id"]:
        raise ValueError("a span without a trace id or span id")
    attributes = span["attributes"]
    for name in (REQUEST, RESPONSE):
        text = attributes.get(name)
        if text is None:
            continue
        try:
            orjson.loads(text)  # JSON text alone, never spliced into a record as something else
        except (orjson.JSONDecodeError, TypeError):
            raise ValueError(f"{name} is not JSON text") from None


def records_from_otlp(body: bytes, content_type: str, content_encoding: str | None) -> OtlpExport:
    """The records of every well-formed operation span in an OTLP ``ExportTraceServiceRequest``."""
    if content_encoding and content_encoding.lower() == "gzip":
        body = _inflate(body)
    spans = _json_spans(body) if "json" in content_type.lower() else _protobuf_spans(body)
    export = OtlpExport(records=[])
    for span in spans:
        if isinstance(span, Exception):
            export.rejected += 1
            export.reason = export.reason or str(span)
            continue
        if OP_TYPE not in span["attributes"]:
            continue
        try:
            _check(span)
        except (ValueError, TypeError) as exc:
            export.rejected += 1
            export.reason = export.reason or f"span {span['span_id']:016x}: {exc}"
            continue
        for kind in (IN, OUT):
            export.records.append(build_record(kind, **span))
    return export


def _protobuf_spans(body: bytes) -> Iterator[dict[str, Any] | Exception]:
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


def _json_spans(body: bytes) -> Iterator[dict[str, Any] | Exception]:
    """Each span of an OTLP/JSON request, or the error that makes it unreadable (for that span alone)."""
    try:
        request = orjson.loads(body)
        resource_spans_list = list(request.get("resourceSpans", []))
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError) as exc:
        raise OtlpError(f"not an OTLP/JSON export request: {exc!r}") from None
    for resource_spans in resource_spans_list:
        try:
            service = _service(_json_attributes(resource_spans.get("resource", {}).get("attributes", [])))
            scope_spans_list = list(resource_spans.get("scopeSpans", []))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            yield ValueError(f"a malformed resource: {exc!r}")
            continue
        for scope_spans in scope_spans_list:
            for span in scope_spans.get("spans", []) if isinstance(scope_spans, dict) else [{}]:
                try:
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
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    yield ValueError(f"a malformed span: {exc!r}")


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
