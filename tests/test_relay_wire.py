"""The relay's wire format: every message round-trips, and a relay of another version is refused."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from gateway_otel import _relay_wire as wire
from gateway_otel._exporter import in_record, out_record
from gateway_otel._records import SpanData
from gateway_otel._relay import Relay

#: Span data as the exporter hands it over: a trace id past 64 bits, a parent, attributes, failed.
SPAN = SpanData(
    0xFEDCBA9876543210_0123456789ABCDEF,
    0x1122334455667788,
    0x99AABBCCDDEEFF00,
    1_765_000_000_000_000_000,
    1_765_000_000_250_000_000,
    {"gateway.op_type": "summarize", "gateway.is_cost_log": True, "gateway.request_id": "r-1"},
    True,
    "svc",
)


@pytest.mark.parametrize("kind", [wire.IN, wire.OUT, wire.BOTH])
def test_a_spans_row_round_trips_through_a_json_line(kind: int) -> None:
    line = orjson.dumps([wire.span_row(kind, SPAN)]) + b"\n"
    (row,) = wire.read_app_line(line)  # type: ignore[misc]
    assert row[0] == kind
    assert wire.row_data(row) == SPAN
    assert wire.kinds(kind) == ((wire.IN, wire.OUT) if kind == wire.BOTH else (kind,))


def test_the_relay_builds_the_records_the_app_would_have_built() -> None:
    (row,) = wire.read_app_line(orjson.dumps([wire.span_row(wire.BOTH, SPAN)]))  # type: ignore[misc]
    builders = (in_record, out_record)
    assert [builders[kind](wire.row_data(row)) for kind in wire.kinds(row[0])] == [in_record(SPAN), out_record(SPAN)]


def test_a_record_built_in_the_app_round_trips_and_one_that_failed_is_null() -> None:
    body = orjson.dumps({"uuid": "u-1", "opType": "x"})
    line = orjson.dumps([wire.built_row(body), wire.built_row(None)])
    assert wire.read_app_line(line) == [[wire.BUILT, {"uuid": "u-1", "opType": "x"}], [wire.BUILT, None]]


def test_a_flush_request_is_told_from_records() -> None:
    assert wire.read_app_line(wire.flush_request(7, 2.5)) == wire.Flush(7, 2.5)
    assert wire.read_app_line(b"[]\n") == []  # an empty hand-over is no flush request


def test_the_relays_messages_round_trip() -> None:
    assert wire.read_relay_line(wire.ready()) == wire.Ready(wire.VERSION)
    assert wire.read_relay_line(wire.flush_answer(7, True)) == wire.Flushed(7, True)
    assert wire.read_relay_line(wire.flush_answer(8, False)) == wire.Flushed(8, False)
    exported = {"delivered": 3, "spooled": 1, "dead_letter": 0, "dropped": 0}
    assert wire.read_relay_line(wire.counts(exported)) == wire.Counts(exported)


@pytest.mark.parametrize("line", [b'"ready"\n', b"[1, 2, 3]\n", b'{"what": 1}\n', b"42\n"])
def test_a_line_that_is_no_message_of_the_relay_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError, match="not a message of the relay"):
        wire.read_relay_line(line)


def test_an_incomplete_line_is_not_json() -> None:
    line = orjson.dumps([wire.span_row(wire.OUT, SPAN)])
    with pytest.raises(orjson.JSONDecodeError):
        wire.read_app_line(line[: len(line) // 2])


def test_a_relay_of_another_wire_version_is_refused() -> None:
    """A relay that says it speaks another version never becomes the app's relay."""
    other = orjson.dumps({"ready": wire.VERSION + 1}).decode()
    code = f"import sys, time; sys.stdout.write({other!r} + '\\n'); sys.stdout.flush(); sys.stdin.read()"
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    relay = Relay(process)
    try:
        assert relay._ready.wait(10)
        assert not relay.alive()
    finally:
        relay.abandon()
        process.kill()
        process.wait(10)
