"""Operations in a process that Logfire set up: python logfire_app.py RID (BEFORE|AFTER).

``AFTER``: ``logfire.configure()`` first, then gateway-otel's ``configure()``; ``BEFORE``: the other
way round. Two operations each open a ``logfire.span`` inside. Prints what Logfire's own processor
saw: each span as ``name parent-name``.
"""

from __future__ import annotations

import sys

import logfire
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import gateway_otel
from gateway_otel import operation_log, trace_id_context

rid, order = sys.argv[1], sys.argv[2]
exporter = InMemorySpanExporter()


def set_up_logfire() -> None:
    logfire.configure(
        send_to_logfire=False,
        console=False,
        service_name="lf-service",
        additional_span_processors=[SimpleSpanProcessor(exporter)],
    )


if order == "AFTER":
    set_up_logfire()
    gateway_otel.configure()
else:
    gateway_otel.configure()
    set_up_logfire()


@operation_log(is_cost_log=True)
def work(i: int) -> int:
    with logfire.span("inner {i}", i=i):
        return i


trace_id_context.set(rid)
work(1)
work(2)
assert gateway_otel.force_flush(20)
spans = exporter.get_finished_spans()
names = {span.context.span_id: span.name for span in spans}
for span in spans:
    parent = names.get(span.parent.span_id, "-") if span.parent is not None else "-"
    print(span.name.replace(" ", "_"), parent.replace(" ", "_"), flush=True)
