"""Every OpenTelemetry internal the adapter leans on, in one place, each with its fallback.

The lean spans (``_span``) do what the SDK's ``Tracer.start_span`` does at less than half its cost,
which needs what the SDK keeps to itself: the tracer's scope, limits, metrics and configurator, the
provider's processors and their ``_on_ending`` hook, ``ParentBased``'s delegates, the runtime
context's ContextVar, the suppress-instrumentation key, and (in ``_span`` itself) the fields that
``ReadableSpan``'s properties read and the order of ``SpanContext``'s tuple. They are read here,
each defaulting to what the public API gives where it is missing; the spans as a whole are checked
against the SDK once per process (``_span.lean_spans_work``), and where they differ the SDK's
``Tracer.start_span`` starts every span (said once at INFO). The trace state fast path below is
tried at import against the public one.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from opentelemetry import context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.span import TraceState

__all__ = [
    "SUPPRESS_INSTRUMENTATION_KEY",
    "TracerParts",
    "ending_hook",
    "ending_hooks",
    "parent_based_delegates",
    "runtime_context_variable",
    "span_processors",
    "suppressed",
    "trace_state",
    "tracer_enabled",
    "tracer_parts",
]

logger = logging.getLogger("gateway_otel")

#: W3C trace context: at most this many trace state entries.
MAX_TRACE_STATE_ENTRIES = 32


def _trace_state_public(entries: Mapping[str, str]) -> TraceState:
    return TraceState(list(entries.items()))


def _trace_state_fast(entries: Mapping[str, str]) -> TraceState:
    # TraceState's constructor checks each entry against the W3C grammar: the adapter's entry is
    # valid by construction, the others come from a TraceState that checked them.
    state = TraceState.__new__(TraceState)
    state._dict = dict(entries)
    return state


def _works(make: Callable[[Mapping[str, str]], TraceState]) -> bool:
    try:
        made = make({"gateway": "00f067aa0ba902b7", "vendor": "v1"})
        return (
            made.to_header() == "gateway=00f067aa0ba902b7,vendor=v1"
            and made.get("vendor") == "v1"
            and list(made.keys()) == ["gateway", "vendor"]
            and made.update("vendor", "v2").get("vendor") == "v2"
        )
    except Exception:
        return False


#: ``trace_state(entries)``: a ``TraceState`` of ``entries`` in their order, which must be valid W3C
#: entries, at most ``MAX_TRACE_STATE_ENTRIES``.
trace_state: Callable[[Mapping[str, str]], TraceState] = _trace_state_fast
if not _works(_trace_state_fast):
    logger.info("gateway-otel: with this OpenTelemetry version, trace states take the public path")
    trace_state = _trace_state_public


# -- the SDK tracer's parts, read once per tracer ----------------------------------------------


class TracerParts(NamedTuple):
    """What the SDK's ``Tracer`` keeps that its spans need and that it does not make public."""

    scope: InstrumentationScope | None
    limits: SpanLimits
    #: Its span metrics (``otel.sdk.span.started``, ``.live``; SDK 1.39+) when they are on.
    metrics: Any
    #: SDK 1.35+: a tracer configurator may disable the tracer (``_tracer_config.is_enabled``).
    configurable: bool


def tracer_parts(tracer: sdk_trace.Tracer) -> TracerParts:
    limits = getattr(tracer, "_span_limits", None)  # the provider's
    metrics = getattr(tracer, "_tracer_metrics", None)
    return TracerParts(
        scope=getattr(tracer, "_instrumentation_scope", None),
        limits=limits if isinstance(limits, SpanLimits) else SpanLimits(),
        metrics=None if metrics is None or type(metrics).__name__ == "NoOpTracerMetrics" else metrics,
        configurable=hasattr(tracer, "_is_enabled") and hasattr(tracer, "_tracer_config"),
    )


def tracer_enabled(tracer: sdk_trace.Tracer) -> bool:
    """``Tracer._is_enabled()`` without its call (only where ``TracerParts.configurable``)."""
    return bool(tracer._tracer_config.is_enabled)  # type: ignore[attr-defined,unused-ignore]


def span_processors(multi: sdk_trace.SynchronousMultiSpanProcessor) -> tuple[SpanProcessor, ...]:
    """The processors of the SDK's synchronous multi-processor, in their order: a new tuple each
    time one is added, so that a caller can tell a change by identity."""
    return multi._span_processors


_BASE_ENDING_HOOK = getattr(SpanProcessor, "_on_ending", None)


def ending_hooks(processors: tuple[SpanProcessor, ...]) -> tuple[Callable[[Any], None], ...]:
    """The ``_on_ending`` hooks (SDK 1.35+: called before ``on_end``) of the processors that have
    one of their own, bound; the base class's does nothing."""
    if _BASE_ENDING_HOOK is None:
        return ()
    return tuple(
        processor._on_ending
        for processor in processors
        if getattr(type(processor), "_on_ending", _BASE_ENDING_HOOK) is not _BASE_ENDING_HOOK
    )


def ending_hook(processor: SpanProcessor) -> Callable[[Any], None] | None:
    """The ``_on_ending`` hook of a processor (the tracer's own), or ``None`` on older SDKs."""
    return getattr(processor, "_on_ending", None)


def parent_based_delegates(sampler: Any, names: tuple[str, ...]) -> list[Any]:
    """What ``ParentBased`` keeps of its arguments, by name (``None`` for one it does not keep)."""
    return [getattr(sampler, f"_{name}", None) for name in names]


# -- contexts ----------------------------------------------------------------------------------


def runtime_context_variable() -> contextvars.ContextVar[context.Context] | None:
    """The ContextVar behind OTel's runtime context when it is the API's default one, else ``None``."""
    runtime = getattr(context, "_RUNTIME_CONTEXT", None)
    if type(runtime) is ContextVarsRuntimeContext:
        variable = getattr(runtime, "_current_context", None)
        if isinstance(variable, contextvars.ContextVar):
            return variable
    return None


#: The context key that instrumentations honour to make no spans (the SDK exports spans with it
#: set, the contrib instrumentations skip their work): the adapter's own calls to the gateway.
SUPPRESS_INSTRUMENTATION_KEY = getattr(context, "_SUPPRESS_INSTRUMENTATION_KEY", "suppress_instrumentation")


def suppressed(ctx: context.Context | None = None) -> context.Context:
    """``ctx`` (the current context) with instrumentation suppressed."""
    return context.set_value(SUPPRESS_INSTRUMENTATION_KEY, True, ctx)
