"""Test helpers for users: capture the records (and spans) that a test produced.

Use the fixture by adding ``pytest_plugins = ["gateway_otel.testing"]`` to your ``conftest.py``::

    def test_billing(captured_records):
        charge(user="alice")
        assert captured_records.billed()[0]["opType"] == "charge"
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ._pipeline import Pipeline, current
from ._servers import GatewayProcess, eventually, free_port, serve_in_thread, stop_process, wait_for_port

__all__ = [
    "CapturedRecords",
    "GatewayProcess",
    "captured_records",
    "eventually",
    "free_port",
    "serve_in_thread",
    "stop_process",
    "wait_for_port",
]

_span_exporters: dict[int, InMemorySpanExporter] = {}


class CapturedRecords:
    """Records built while capturing, in the order they were built (delivery happens as usual)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._lock = threading.Lock()
        self._bodies: list[bytes] = []
        key = id(pipeline.provider)
        if key not in _span_exporters:
            _span_exporters[key] = InMemorySpanExporter()
            pipeline.provider.add_span_processor(SimpleSpanProcessor(_span_exporters[key]))
        self._spans = _span_exporters[key]
        self._spans.clear()

    def _listen(self, body: bytes) -> None:
        with self._lock:
            self._bodies.append(body)

    def start(self) -> None:
        self._pipeline.delivery.listeners.append(self._listen)

    def stop(self) -> None:
        self._pipeline.delivery.force_flush(10)
        self._pipeline.delivery.listeners.remove(self._listen)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every record so far (waits for the delivery thread to build what is queued)."""
        self._pipeline.delivery.force_flush(10)
        with self._lock:
            return [orjson.loads(body) for body in self._bodies]

    def of(self, request_id: str) -> list[dict[str, Any]]:
        return [record for record in self.records if record["requestId"] == request_id]

    def billed(self) -> list[dict[str, Any]]:
        """The billing records: ``out`` records with ``isCostLog``."""
        return [r for r in self.records if r["opLogType"] == "out" and r["isCostLog"]]

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return self._spans.get_finished_spans()


@pytest.fixture
def captured_records() -> Iterator[CapturedRecords]:
    """The records (``.records``, ``.billed()``) and spans (``.spans``) produced during the test."""
    capture = CapturedRecords(current())
    capture.start()
    try:
        yield capture
    finally:
        capture.stop()
