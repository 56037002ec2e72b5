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

from ._exporter import GatewaySpanExporter
from ._pipeline import Pipeline, current_pipeline
from ._queue import Builder
from ._records import encode
from ._servers import GatewayProcess, eventually, free_port, serve_in_thread, stop_process, wait_for_port

__all__ = [
    "CapturedRecords",
    "GatewayProcess",
    "captured_records",
    "captured_spans",
    "eventually",
    "free_port",
    "serve_in_thread",
    "stop_process",
    "wait_for_port",
]

_span_exporters: dict[int, InMemorySpanExporter] = {}


def _span_exporter(pipeline: Pipeline) -> InMemorySpanExporter:
    """The in-memory exporter of the pipeline's provider (one per provider), emptied."""
    key = id(pipeline.provider)
    if key not in _span_exporters:
        _span_exporters[key] = InMemorySpanExporter()
        pipeline.provider.add_span_processor(SimpleSpanProcessor(_span_exporters[key]))
    exporter = _span_exporters[key]
    exporter.clear()
    return exporter


class CapturedRecords:
    """Records built while capturing, in the order they were made. Nothing is delivered or spooled:
    while it captures, the pipeline's records are built on the caller's thread and kept here."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self._lock = threading.Lock()
        self._bodies: list[bytes] = []
        self._replaced: GatewaySpanExporter | None = None
        self._spans = _span_exporter(pipeline)

    # The record sink the pipeline's processor reports to while capturing (``RecordSink``).
    def submit(self, build: Builder, item: Any) -> None:
        body = encode(build(item))
        with self._lock:
            self._bodies.append(body)

    def force_flush(self, timeout: float | None = None) -> bool:
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        return None

    def start(self) -> None:
        processor = self._pipeline.processor
        self._replaced = processor.exporter
        processor.use(GatewaySpanExporter(self, in_records=False))

    def stop(self) -> None:
        if self._replaced is not None:
            self._pipeline.processor.use(self._replaced)
            self._replaced = None

    @property
    def records(self) -> list[dict[str, Any]]:
        """Every record so far."""
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
    """The records (``.records``, ``.billed()``) and spans (``.spans``) produced during the test,
    kept instead of delivered."""
    capture = CapturedRecords(current_pipeline())
    capture.start()
    try:
        yield capture
    finally:
        capture.stop()


@pytest.fixture
def captured_spans() -> InMemorySpanExporter:
    """The spans finished during the test (``.get_finished_spans()``); records are delivered as usual."""
    return _span_exporter(current_pipeline())
