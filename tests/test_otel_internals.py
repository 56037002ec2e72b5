"""The fenced fast paths give what the public OpenTelemetry calls give."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
from opentelemetry.trace.span import TraceState

from gateway_otel import _otel_internals as internals
from gateway_otel import _span
from gateway_otel._record_tree import TRACESTATE_KEY, named_record, record_state

from conftest import Gateway, assert_one_tree, run_program


def test_the_fast_trace_state_is_the_public_one() -> None:
    entries = {"gateway": "00f067aa0ba902b7", "vendor": "v1", "other": "x-y"}
    fast, public = internals._trace_state_fast(entries), internals._trace_state_public(entries)
    assert fast.to_header() == public.to_header() == "gateway=00f067aa0ba902b7,vendor=v1,other=x-y"
    assert dict(fast.items()) == dict(public.items())
    assert internals.trace_state is internals._trace_state_fast  # the installed SDK passes the check


def test_a_record_span_names_itself_first_and_keeps_at_most_32_entries() -> None:
    parent = TraceState([(f"k{i}", "v") for i in range(32)])
    state = record_state(parent, 0xABC)
    assert next(iter(state.keys())) == TRACESTATE_KEY and len(state) == 32
    assert named_record(state) == 0xABC
    again = record_state(state, 0xDEF)  # a record under a record: its own id replaces the parent's
    assert named_record(again) == 0xDEF and len(again) == 32


def test_a_record_named_by_a_caller_is_read_only_when_it_is_a_span_id() -> None:
    for bad in ("", "xyz", "0" * 16, "1" * 17, "g" * 16):
        assert named_record(TraceState([(TRACESTATE_KEY, bad)]) if bad else TraceState()) is None
    assert named_record(TraceState([(TRACESTATE_KEY, "00f067aa0ba902b7")])) == 0x00F067AA0BA902B7


def test_lean_spans_pass_their_check_on_the_installed_sdk() -> None:
    assert _span._check_lean_spans()


def test_when_the_sdk_differs_spans_take_the_public_path_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def changed(self: object, attributes: object) -> None:
        raise AttributeError("'SynchronousMultiSpanProcessor' object has no attribute '_span_processors'")

    monkeypatch.setattr(_span._TracerSetup, "processors", changed)
    monkeypatch.setattr(_span, "_checked", None)
    with caplog.at_level(logging.INFO, logger="gateway_otel"):
        assert not _span.lean_spans_work()
        assert not _span.lean_spans_work()
    assert [r.getMessage() for r in caplog.records].count(
        "gateway-otel: this OpenTelemetry SDK differs from what lean spans expect; spans start "
        "through the SDK's Tracer.start_span"
    ) == 1


def test_on_the_public_path_operations_are_the_sdks_spans_and_report_as_before(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"public-{uuid.uuid4().hex}"
    env = {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path), "GATEWAY_OTEL_LEAN_SPANS": "0"}
    result = run_program("public_path", rid, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "sdk"]  # not lean: the SDK's own spans
    records = healthy_gateway.wait_records(rid, 4)
    assert sorted((r["opType"], r["opLogType"]) for r in records) == [
        ("bill", "in"),
        ("bill", "out"),
        ("tokenize", "in"),
        ("tokenize", "out"),
    ]
    assert_one_tree(records, root="bill")
