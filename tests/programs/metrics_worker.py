"""A worker with a MeterProvider of its own (an in-memory reader), billing through staged outages.

Usage: python metrics_worker.py REQUEST_ID. On each line from stdin: ``bill N`` makes N billed
calls; ``flush`` waits for delivery; ``metrics`` prints the adapter's metrics as one JSON line
(``{name: {attributes as "k=v" or "": value}}``); ``exit`` exits.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

from gateway_otel import caller_id_context, force_flush, operation_log, trace_id_context  # noqa: E402


@operation_log(is_cost_log=True)
def bill(i: int) -> int:
    return i


def snapshot() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name.startswith("gateway_otel."):
                    points = found.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        key = ",".join(f"{k}={v!s}" for k, v in sorted((point.attributes or {}).items()))
                        points[key] = getattr(point, "value", None)  # the gauges' and counters' points
    return found


trace_id_context.set(sys.argv[1])
caller_id_context.set("alice")
print("ready", flush=True)
for line in sys.stdin:
    command, *args = line.split()
    if command == "bill":
        for i in range(int(args[0])):
            bill(i)
        print("billed", flush=True)
    elif command == "flush":
        print("flushed" if force_flush(30) else "not flushed", flush=True)
    elif command == "metrics":
        print(orjson.dumps(snapshot()).decode(), flush=True)
    elif command == "exit":
        break
