"""The OpenTelemetry internals the adapter's fast paths lean on, in one place, each checked at import.

Each fast path here does what a public OpenTelemetry call does, without the work that call repeats
for input the adapter knows to be valid already. Each is tried once at import against the public
behaviour it replaces; where the installed OpenTelemetry has changed underneath, the public call is
used instead and one INFO line says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from opentelemetry.trace.span import TraceState

__all__ = ["trace_state"]

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
