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
import json
import tempfile
import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import gateway_otel
from gateway_otel import caller_id_context, operation_log, request_url_context, trace_id_context


class _NoopExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _best(fn: Callable[[int], None], calls: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn(calls)
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


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

    def bare_span(n: int) -> None:
        for _ in range(n):
            tracer.start_span("work", attributes=attributes).end()

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

    tokens = [
        trace_id_context.set("req-1"),
        caller_id_context.set("alice"),
        request_url_context.set("http://svc/v1/work"),
    ]
    results: dict[str, float] = {}
    for name, fn in (
        ("bare function", bare_function),
        ("bare OTel span (Batch)", bare_span),
        ("@operation_log sync", decorated),
        ("@operation_log async", decorated_async),
    ):
        results[name] = _best(fn, args.calls, args.rounds)
        gateway_otel.force_flush(60)
    del tokens
    anchor = results["bare OTel span (Batch)"]
    for name, micros in results.items():
        print(f"{name:28s} {micros:8.2f} us/call   {micros / anchor:5.2f}x bare span")
    gateway_otel.shutdown()
    anchor_provider.shutdown()
    return results


if __name__ == "__main__":
    print(json.dumps(main()))
