"""The SDK's own span metrics with the adapter's spans among them: python sdk_span_metrics.py.

Run with ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true``; prints ``otel.sdk.span.started`` and
``otel.sdk.span.live`` as sums over their points after three operations and two SDK spans.
"""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway_otel import configure, operation_log

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))  # the user's own spans are seen
trace.set_tracer_provider(provider)
configure()


@operation_log
def work(i: int) -> int:
    return i


for i in range(3):
    work(i)
tracer = trace.get_tracer("app")
for _ in range(2):
    with tracer.start_as_current_span("own"):
        pass

sums: dict[str, int] = {}
data = reader.get_metrics_data()
for resource_metrics in data.resource_metrics if data else ():
    for scope_metrics in resource_metrics.scope_metrics:
        for metric in scope_metrics.metrics:
            if metric.name.startswith("otel.sdk.span."):
                total = sum(int(getattr(point, "value", 0)) for point in metric.data.data_points)
                sums[metric.name] = sums.get(metric.name, 0) + total
print(sums.get("otel.sdk.span.started", 0), sums.get("otel.sdk.span.live", 0), flush=True)
