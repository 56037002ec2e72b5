"""Secrets in every shape a service hands over: headers objects, pairs, JSON text, URLs, DSNs.

Each value goes through the decorator (argument, return value, exception) and the context, and
is looked for in the record, the span attributes and events, as the gateway, OTLP and the spool
would get them.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest
from starlette.datastructures import Headers, QueryParams

from gateway_otel import operation_log, request_url_context
from gateway_otel._scrub import default_scrubber

SECRET = f"s3cr3t{uuid.uuid4().hex[:12]}"


def raw_headers() -> list[tuple[bytes, bytes]]:
    return [(b"authorization", SECRET.encode()), (b"cookie", f"sid={SECRET}".encode()), (b"accept", b"*/*")]


SHAPES: dict[str, Any] = {
    "starlette Headers": Headers(raw=raw_headers()),
    "raw header pairs": raw_headers(),
    "httpx Headers": httpx.Headers({"Authorization": SECRET, "X-Api-Key": SECRET}),
    "QueryParams": QueryParams(f"access_token={SECRET}&page=1"),
    "list of str pairs": [("password", SECRET), ("user", "bob")],
    "JSON text": f'{{"password": "{SECRET}", "n": 1}}',
    "JSON bytes": f'{{"api_key": "{SECRET}"}}'.encode(),
    "python dict text": str({"password": SECRET}),
    "form text": f"user=bob&access%5Ftoken={SECRET}",
    "plain key": f"?key={SECRET}&lang=en",
    "DSN in a repr": f"Engine(postgres://bob:{SECRET}@db:5432/app)",
    "URL userinfo": f"https://bob:{SECRET}@svc/x",
    "Basic credential": f"Basic {SECRET}",
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_an_argument_of_any_shape_loses_its_secrets(shape: str, captured_records: Any) -> None:
    @operation_log
    def handle(value: Any) -> str:
        return "ok"

    handle(SHAPES[shape])
    record_in = captured_records.records[0]
    assert SECRET not in orjson.dumps(record_in).decode(), record_in["request"]
    assert "[REDACTED]" in orjson.dumps(record_in).decode()
    (span,) = [s for s in captured_records.spans if s.name == "handle"]
    assert SECRET not in str(dict(span.attributes or {}))


@pytest.mark.parametrize("shape", ["JSON text", "python dict text", "DSN in a repr", "form text"])
def test_a_returned_value_and_an_exception_message_lose_their_secrets(shape: str, captured_records: Any) -> None:
    @operation_log
    def answer() -> Any:
        return SHAPES[shape]

    @operation_log
    def fail() -> None:
        raise ValueError(f"upstream said {SHAPES[shape]}")

    answer()
    with pytest.raises(ValueError):
        fail()
    text = orjson.dumps(captured_records.records).decode()
    assert SECRET not in text
    spans = [s for s in captured_records.spans if s.name in ("answer", "fail")]
    for span in spans:
        assert SECRET not in str(dict(span.attributes or {}))
        for event in span.events:
            assert SECRET not in str(dict(event.attributes or {}))


@pytest.mark.parametrize(
    "url",
    [
        f"https://user:{SECRET}@svc/x?access_token=T",
        f"https://svc/x?api_key={SECRET}",
        f"https://svc/x?access%5Ftoken={SECRET}",
        f"https://svc/x?key={SECRET}",
    ],
)
def test_a_request_url_set_by_hand_loses_its_secrets(url: str, captured_records: Any) -> None:
    @operation_log
    def handle() -> None:
        return None

    token = request_url_context.set(url)
    try:
        handle()
        assert SECRET not in request_url_context.get()
    finally:
        request_url_context.reset(token)
    for record in captured_records.records:
        assert SECRET not in record["requestUrl"] and record["requestUrl"].startswith("https://")


def test_counts_of_tokens_stay() -> None:
    data = orjson.dumps({"usage": {"total_tokens": 47, "prompt_tokens": 12}, "text": '{"max_tokens": 5}'})
    assert orjson.loads(default_scrubber.scrub_json(data)) == orjson.loads(data)


def test_urls_keep_their_shape() -> None:
    assert (
        default_scrubber.scrub_text(f"connect postgres://bob:{SECRET}@db:5432/app now")
        == "connect postgres://[REDACTED]@db:5432/app now"
    )
    assert default_scrubber.scrub_url(f"https://svc/x?access%5Ftoken={SECRET}&a=1") == (
        "https://svc/x?access_token=[REDACTED]&a=1"
    )
