"""Operations on the public path (``GATEWAY_OTEL_LEAN_SPANS=0``): python public_path.py RID.

Prints whether the lean tracer is on and the kind of an operation's span (lean, sdk, other).
"""

from __future__ import annotations

import sys

from opentelemetry import trace
from opentelemetry.sdk import trace as sdk_trace

import gateway_otel
from gateway_otel import operation_log, trace_id_context
from gateway_otel._pipeline import current_pipeline
from gateway_otel._span import LeanSpan

kinds: list[str] = []


@operation_log
def tokenize(text: str) -> list[str]:
    span = trace.get_current_span()
    kinds.append("lean" if isinstance(span, LeanSpan) else "sdk" if isinstance(span, sdk_trace.Span) else "other")
    return text.split()


@operation_log(is_cost_log=True)
def bill(text: str) -> int:
    return len(tokenize(text))


trace_id_context.set(sys.argv[1])
assert bill("a b c") == 3
assert gateway_otel.force_flush(20)
print(current_pipeline().lean_tracer.lean, kinds[0], flush=True)
