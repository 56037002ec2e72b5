"""Per-call cost of @operation_log beside a bare OTel SDK span with the same attributes, in one run.

    python benchmarks/bench_decorator.py [--calls N]

The anchor is what quality.md names: ``start_span`` + ``end`` with the same attributes and a
``BatchSpanProcessor`` (to a no-op exporter). The decorator runs with its gateway export on,
delivering to a spool with no gateway (the sink), so the network does not enter the figure.
Rounds alternate between the two and the best round of each is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import gateway_otel
from gateway_otel import caller_id_context, operation_log, request_url_context, trace_id_context
from gateway_otel._pipeline import current_pipeline
from gateway_otel._span import LeanTracer


class _NoopExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _best_of(
    measures: dict[str, Callable[[int], None]], calls: int, rounds: int, settle: Callable[[], None]
) -> dict[str, float]:
    """Microseconds per call of each measure: rounds alternate between them, the best round counts."""
    best = dict.fromkeys(measures, float("inf"))
    for _ in range(rounds):
        for name, fn in measures.items():
            settle()
            start = time.perf_counter()
            fn(calls)
            best[name] = min(best[name], (time.perf_counter() - start) / calls)
    return {name: seconds * 1e6 for name, seconds in best.items()}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    gateway_otel.configure(spool_dir=tempfile.mkdtemp(prefix="bench-spool-"), queue_size=10_000_000)
    anchor_provider = TracerProvider()
    anchor_provider.add_span_processor(BatchSpanProcessor(_NoopExporter(), max_queue_size=1_000_000))
    tracer = anchor_provider.get_tracer("anchor")
    attributes = {
        "gateway.op_type": "work",
        "gateway.is_cost_log": True,
        "gateway.caller_id": "alice",
        "gateway.request_id": "req-1",
        "gateway.request_url": "http://svc/v1/work",
        "gateway.request": '{"x":1,"y":"two"}',
    }

    @operation_log(is_cost_log=True)
    def work(x: int, y: str) -> int:
        return x

    @operation_log(is_cost_log=True)
    async def awork(x: int, y: str) -> int:
        return x

    @operation_log(is_cost_log=True)
    def stream(x: int) -> Iterator[int]:
        yield x

    def bare_span(n: int) -> None:
        for _ in range(n):
            tracer.start_span("work", attributes=attributes).end()

    lean = LeanTracer(tracer)

    def lean_span(n: int) -> None:
        # The adapter's own span path on the same provider and processor (attributes: a fresh dict,
        # as the decorator hands over).
        for _ in range(n):
            lean.start_span("work", Context(), dict(attributes)).end()

    def bare_function(n: int) -> None:
        def plain(x: int, y: str) -> int:
            return x

        for _ in range(n):
            plain(1, y="two")

    def decorated(n: int) -> None:
        for _ in range(n):
            work(1, y="two")

    def decorated_async(n: int) -> None:
        async def loop() -> None:
            for _ in range(n):
                await awork(1, y="two")

        asyncio.run(loop())

    def decorated_generator(n: int) -> None:
        for _ in range(n):
            for _ in stream(1):
                pass

    processor = current_pipeline().processor
    delivering = processor._submit
    # Like a sender that keeps up: the latest records are held, older ones are gone.
    held: deque[Any] = deque(maxlen=1024)

    def caller_side(fn: Callable[[int], None]) -> Callable[[int], None]:
        def run(n: int) -> None:
            processor._submit = lambda build, item: held.append((build, item))
            try:
                fn(n)
            finally:
                processor._submit = delivering
                held.clear()

        return run

    tokens = [
        trace_id_context.set("req-1"),
        caller_id_context.set("alice"),
        request_url_context.set("http://svc/v1/work"),
    ]

    def settle() -> None:
        # Nothing left over from the previous measure runs in the background during the next one.
        anchor_provider.force_flush()
        gateway_otel.force_flush(120)
        gc.collect()

    measures: dict[str, Callable[[int], None]] = {
        "bare function": bare_function,
        "bare OTel span (Batch)": bare_span,
        "lean span (Batch)": lean_span,
        "@operation_log sync": caller_side(decorated),
        "@operation_log async": caller_side(decorated_async),
        "@operation_log generator": caller_side(decorated_generator),
        "@operation_log sync, with delivery": decorated,
        "@operation_log async, with delivery": decorated_async,
    }
    results = _best_of(measures, args.calls, args.rounds, settle)
    del tokens
    anchor = results["bare OTel span (Batch)"]
    for name, micros in results.items():
        print(f"{name:36s} {micros:8.2f} us/call   {micros / anchor:5.2f}x bare span")
    gateway_otel.shutdown()
    anchor_provider.shutdown()
    return results


if __name__ == "__main__":
    print(json.dumps(main()))
