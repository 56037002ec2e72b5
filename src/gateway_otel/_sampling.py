"""Sampling that never costs revenue: operation spans are always recorded."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

from . import _attributes as attrs
from ._otel_internals import parent_based_delegates


class BillingSafeSampler(Sampler):
    """Wraps a sampler: where it drops an operation span, the span is still recorded (not sampled).

    A recorded span reaches ``OperationSpanProcessor`` (so its records are reported to the gateway)
    but not the exporters behind ``BatchSpanProcessor`` (so OTLP keeps the sampled share only).
    """

    def __init__(self, delegate: Sampler) -> None:
        self.delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self.delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is Decision.DROP and attributes and attrs.OP_TYPE in attributes:
            return SamplingResult(Decision.RECORD_ONLY, attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        return f"BillingSafeSampler{{{self.delegate.get_description()}}}"


#: What ``ParentBased`` keeps of its arguments (attributes that are not public).
_PARENT_BASED_FIELDS = (
    "root",
    "remote_parent_sampled",
    "remote_parent_not_sampled",
    "local_parent_sampled",
    "local_parent_not_sampled",
)


def is_default_sampler(sampler: Sampler) -> bool:
    """Whether ``sampler`` is the SDK's default, ``ParentBased(ALWAYS_ON)``, alone or behind
    ``BillingSafeSampler``.

    Such a sampler samples a span without a parent or with a sampled one and drops the others
    (operation spans are recorded instead when billing safe); the trace state is the parent's. The
    lean tracer decides that itself: asking the samplers is a large part of a server span's start
    and end.
    """
    if isinstance(sampler, BillingSafeSampler):
        sampler = sampler.delegate
    if type(sampler) is not ParentBased:
        return False
    # Any doubt (another SDK version's fields) means "not the default": the sampler is asked.
    delegates = parent_based_delegates(sampler, _PARENT_BASED_FIELDS)
    return delegates == [ALWAYS_ON, ALWAYS_ON, ALWAYS_OFF, ALWAYS_ON, ALWAYS_OFF]
