"""Lean spans: the OTel SDK's span semantics, at less than half its cost, for the spans gateway-otel starts.

Why: with the SDK's ``Tracer.start_span``, the two spans of a request (the SERVER span and the
operation's) take more time than a FastAPI app's own work for it. Most of it is generic care that
these spans do not need: each attribute value cleaned under a lock (ours are strings, ints and
booleans made here), bounded lists made for events and links that stay empty, a lock per span,
and a frozen copy of the span made for the processors at its end.

``LeanTracer.start_span`` follows ``opentelemetry.sdk.trace.Tracer.start_span`` step by step (the
parent from the context, the tracer's id generator and sampler, the sampling decision and trace
flags, the provider's span processors at start and end) and makes a ``LeanSpan``: a
``ReadableSpan`` that processors and exporters read like any other, and a full ``Span`` for the
code that holds it. What callers set on it (``set_attribute``, events, links, status, exceptions)
is cleaned and bounded by the provider's ``SpanLimits``, as the SDK's spans are; only the
attributes handed to ``start_span`` must be clean already. A tracer that is not the SDK's own is
used as it is.

A span that none of the provider's processors would be handed (the adapter's own processor takes
operation spans only) is a ``NonRecordingSpan`` with the context the recording span would have had:
what it recorded would reach no one. The processors are looked at for each span, so one added to
the provider later sees the spans started from then on.
"""

from __future__ import annotations

import logging
import os
import random as _random
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any, Final, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import DEFAULT_TRACE_STATE, TraceState
from opentelemetry.util import types

from . import _attributes as attrs
from . import _otel_internals as internals
from . import _record_tree as record_tree
from ._context import _SPAN_KEY
from ._record_tree import REQUEST_KINDS
from ._records import SpanData
from ._sampling import BillingSafeSampler, is_default_sampler

__all__ = ["LeanSpan", "LeanTracer"]

logger = logging.getLogger(__name__)

_UNSET = Status(StatusCode.UNSET)
_NonRecordingSpan = trace_api.NonRecordingSpan
#: W3C trace context level 2's "random trace id" flag (SDK 1.40+); 0 where the API lacks it.
_RANDOM: int = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
#: A span's trace flags by (sampled, random trace id), made once rather than for each span.
_FLAGS = {
    (sampled, random_id): TraceFlags(
        (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT) | (_RANDOM if random_id else 0)
    )
    for sampled in (False, True)
    for random_id in (False, True)
}
_RECORD_AND_SAMPLE, _RECORD_ONLY, _DROP = Decision.RECORD_AND_SAMPLE, Decision.RECORD_ONLY, Decision.DROP
#: Where a SpanContext tuple holds its fields (the API's properties read them by these indices).
_TRACE_ID: Final = 0
_SPAN_ID: Final = 1
_FLAGS_AT: Final = 3
_STATE_AT: Final = 4
_VALID: Final = 5
_SAMPLED = int(TraceFlags.SAMPLED)
_MAX_TRACE_ID, _MAX_SPAN_ID = (1 << 128) - 1, (1 << 64) - 1
_NO_DROPS = (0, 0, 0)
_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})
_time_ns = time.time_ns
#: Held while a span checks that it has not ended and marks it ended. Other changes need no lock:
#: each is one dict or list operation (atomic in CPython), and one racing with ``end()`` is the
#: same as one made just before it.
_ENDING = threading.Lock()


def _new_lock_after_fork() -> None:
    global _ENDING  # a fork while another thread held it must not leave the child a held lock
    _ENDING = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


class LeanSpan(trace_api.Span, ReadableSpan):
    """A recording span started by ``LeanTracer``; see the module's docstring."""

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        start_time: int,
        setup: _TracerSetup,
        processors: _Processors | None,
    ) -> None:
        # The fields ReadableSpan's properties read, set directly (its __init__ makes a Resource
        # when none is given: ours always has one).
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes: dict[str, Any] = attributes
        # Most spans get no events, links or drops: they share empty ones until their first
        # (three lists a span would be a large share of a request's allocations).
        self._events: Sequence[Event] = ()
        self._links: Sequence[Link] = ()
        self._status = _UNSET
        self._start_time: int | None = start_time
        self._end_time: int | None = None
        self._resource = setup.resource
        self._instrumentation_scope = setup.scope
        self._instrumentation_info = setup.info
        self._setup = setup
        #: The processors it went to at its start, and goes to at its end (``None``: the tracer's).
        self._processors = processors
        self._dropped: tuple[int, int, int] = _NO_DROPS  # attributes, events, links
        #: The SDK's span metrics' end of this span (``otel.sdk.span.live``), when they are on.
        self._end_metrics: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._context})'

    # -- ReadableSpan ----------------------------------------------------------------------

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]

    # -- for the gateway's records ------------------------------------------------------------

    def record_data(self) -> SpanData:
        """What the exporter's ``span_data`` takes of a span, read from the fields (the
        ``ReadableSpan`` properties would cost a call each). A span that has ended takes no
        more changes: its attributes are handed over as they are, a running one's are copied."""
        context: SpanContext = self._context  # type: ignore[assignment]
        parent = self._parent
        ended = self._end_time
        # SpanData.__new__ as the NamedTuple writes it, without its call (one or two a span).
        return tuple.__new__(
            SpanData,
            (
                context[_TRACE_ID],
                context[_SPAN_ID],
                parent[_SPAN_ID] if parent is not None else None,
                self._start_time or 0,
                ended,
                self._attributes if ended is not None else self._attributes.copy(),
                ended is not None and self._status is not _UNSET and self._status.status_code is StatusCode.ERROR,
                self._setup.service,
            ),
        )

    # -- Span --------------------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context  # type: ignore[return-value]

    def is_recording(self) -> bool:
        return self._end_time is None

    def _ended(self, what: str) -> bool:
        """Whether the span has ended; ``what`` is then refused (logged)."""
        if self._end_time is None:
            return False
        _refused(what)
        return True

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        kind = type(value)
        clean = kind is str or kind is bool or kind is int or kind is float
        if clean and self._end_time is None and type(key) is str and key:
            # A clean value on a running span: what the adapter sets (three a request), with no call.
            limits = self._setup.limits
            if kind is str and limits.max_span_attribute_length is not None:
                value = value[: limits.max_span_attribute_length]  # type: ignore[index]
            attributes, limit = self._attributes, limits.max_span_attributes
            if key not in attributes and (limit is None or len(attributes) < limit):
                attributes[key] = value
            else:
                self._put(key, value, limit)
            return
        self.set_attributes({key: value})  # ended (logged), sequences, bad keys and values: the SDK's cleaning

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._ended("Setting attribute"):
            return
        limits = self._setup.limits
        # BoundedAttributes cleans as the SDK's spans do: invalid values dropped with a warning,
        # sequences made tuples, strings cut to the provider's length limit.
        clean = BoundedAttributes(None, attributes, immutable=False, max_value_len=limits.max_span_attribute_length)
        if clean.dropped:
            self._count_dropped(0, clean.dropped)
        for key, value in clean.items():
            self._put(key, value, limits.max_span_attributes)

    def _put(self, key: str, value: Any, limit: int | None) -> None:
        """Set one clean value as BoundedAttributes does: a key set again moves to the end, and past
        the limit the oldest attribute goes."""
        attributes = self._attributes
        if key in attributes:
            del attributes[key]
        elif limit is not None and len(attributes) >= limit:
            self._count_dropped(0)
            if limit == 0:
                return
            logger.warning("Attributes dict is full. Dropping the oldest key-value pair to make space for a new one.")
            del attributes[next(iter(attributes))]
        attributes[key] = value

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._ended("Adding an event"):
            return
        limits = self._setup.limits
        bounded = BoundedAttributes(
            limits.max_event_attributes, attributes, immutable=True, max_value_len=limits.max_attribute_length
        )
        events = self._events
        if not isinstance(events, list):
            events = self._events = []
        self._append(events, Event(name, bounded, timestamp), limits.max_events, 1)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if not (context and (context.is_valid or attributes or context.trace_state)):
            return
        if self._ended("Adding a link"):
            return
        limits = self._setup.limits
        bounded = BoundedAttributes(
            limits.max_link_attributes, attributes, immutable=True, max_value_len=limits.max_attribute_length
        )
        links = self._links
        if not isinstance(links, list):
            links = self._links = []
        self._append(links, Link(context, bounded), limits.max_links, 2)

    def _append(self, items: list[Any], item: Any, limit: int | None, dropped: int) -> None:
        if limit is not None and len(items) >= limit:
            self._count_dropped(dropped)
            if limit == 0:
                return
            del items[0]
        items.append(item)

    def _count_dropped(self, index: int, count: int = 1) -> None:
        dropped = list(self._dropped)
        dropped[index] += count
        self._dropped = (dropped[0], dropped[1], dropped[2])

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name
        else:
            _refused("Updating the name")

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended("Setting status"):
            return
        # As the SDK: OK is final, UNSET is ignored, a description only goes with a bare code.
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                logger.warning("Description %s ignored: give a Status, or a StatusCode and a description", description)
            self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        event: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            event.update(attributes)
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        with _ENDING:  # two threads ending one span: the processors see it end once
            if self._end_time is not None:
                _refused("Calling end()")
                return
            self._end_time = end_time if end_time is not None else _time_ns()
        if self._end_metrics is not None:
            self._end_metrics()
        # The span itself is the processors' ReadableSpan: it takes no more changes once ended.
        processors = self._processors
        if processors is None:
            multi = self._setup.tracer.span_processor
            on_ending = internals.ending_hook(multi)  # newer SDKs: the hook before on_end
            if on_ending is not None:
                on_ending(self)
            multi.on_end(self)
            return
        for on_ending in processors.ending:
            on_ending(self)
        for processor in processors.all:
            processor.on_end(self)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        if exc_val is not None and self.is_recording():
            self.record_exception(exc_val, escaped=True)
            self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        super().__exit__(exc_type, exc_val, exc_tb)


_checked: bool | None = None


def lean_spans_work() -> bool:
    """Whether lean spans behave as the SDK's on the installed SDK: one is started and ended once
    per process on a provider of its own, under a remote parent, and read back as processors and
    exporters read it. The lean tracer leans on SDK internals (``_otel_internals`` and the fields
    ``LeanSpan`` sets); where they changed, the SDK's own ``Tracer.start_span`` starts the spans
    instead, said once at INFO."""
    global _checked
    if _checked is None:
        _checked = _check_lean_spans()
        if not _checked:
            logger.info(
                "gateway-otel: this OpenTelemetry SDK differs from what lean spans expect; spans start "
                "through the SDK's Tracer.start_span"
            )
    return _checked


class _Seen(SpanProcessor):
    def __init__(self) -> None:
        self.started: list[object] = []
        self.ended: list[object] = []

    def on_start(self, span: sdk_trace.Span, parent_context: otel_context.Context | None = None) -> None:
        self.started.append(span)

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)


def _check_lean_spans() -> bool:
    try:
        try:  # its span must not count in the SDK's own span metrics (SDK 1.39+ takes a meter provider)
            provider = sdk_trace.TracerProvider(shutdown_on_exit=False, meter_provider=NoOpMeterProvider())  # type: ignore[call-arg,unused-ignore]
        except TypeError:
            provider = sdk_trace.TracerProvider(shutdown_on_exit=False)
        seen = _Seen()
        provider.add_span_processor(seen)
        tracer = provider.get_tracer("gateway_otel.check", "1")
        remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        parent = trace_api.set_span_in_context(trace_api.NonRecordingSpan(remote))
        span = LeanTracer(tracer, seen).start_span("check", parent, {attrs.OP_TYPE: "check"}, kind=SpanKind.SERVER)
        span.set_attribute("checked", 1)
        span.end()
        if seen.started != [span] or seen.ended != [span] or not isinstance(span, ReadableSpan):
            return False
        ended = span
        context, scope = ended.context, ended.instrumentation_scope
        return (
            context is not None
            and context.trace_id == 0xABC
            and context.trace_flags.sampled
            and ended.parent is not None
            and ended.parent.span_id == 0xDEF
            and ended.kind is SpanKind.SERVER
            and dict(ended.attributes or {}) == {attrs.OP_TYPE: "check", "checked": 1}
            and ended.resource is provider.resource
            and scope is not None
            and scope.name == "gateway_otel.check"
            and ended.end_time is not None
            and ended.start_time is not None
            and ended.end_time >= ended.start_time
            and ended.status.status_code is StatusCode.UNSET
        )
    except Exception:
        return False


def _refused(what: str) -> None:
    """Log a change refused because the span has ended, as the SDK's spans log it."""
    logger.warning("%s on ended span.", what)


class _TracerSetup:
    """What the spans of one tracer share: where they come from, the limits they keep and the
    processors they go to."""

    __slots__ = (
        "_all",
        "_others",
        "_seen",
        "billing_safe",
        "configurable",
        "default_sampler",
        "info",
        "limits",
        "metrics",
        "operations",
        "resource",
        "scope",
        "service",
        "tracer",
    )

    def __init__(self, tracer: sdk_trace.Tracer, operations: SpanProcessor | None = None) -> None:
        self.tracer = tracer
        self.operations = operations
        self._seen: tuple[SpanProcessor, ...] | None = None
        self._all = self._others = _NO_PROCESSORS
        parts = internals.tracer_parts(tracer)
        #: SDK 1.35+: the tracer's configurator may disable it (read for each span).
        self.configurable = parts.configurable
        #: The sampler when it is the SDK's default, whose decision ``start_span`` makes itself.
        self.default_sampler = tracer.sampler if is_default_sampler(tracer.sampler) else None
        self.billing_safe = isinstance(tracer.sampler, BillingSafeSampler)
        self.resource = tracer.resource
        self.service = attrs.service_name(self.resource.attributes)
        self.scope = parts.scope
        self.info = getattr(tracer, "instrumentation_info", None)  # deprecated in the SDK
        #: The SDK's own span metrics (``otel.sdk.span.started``, ``.live``; SDK 1.39+), when on
        #: (``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``): the lean spans count in them as the SDK's do.
        self.metrics = parts.metrics
        self.limits: SpanLimits = parts.limits

    def processors(self, attributes: Mapping[str, Any]) -> _Processors | None:
        """The provider's processors that a span with ``attributes`` goes to, in their order, called
        one by one, and those of them with an ``_on_ending`` hook of their own (SDK 1.35+; the
        others' does nothing); ``None``: the tracer's processor is not the SDK's synchronous one,
        call it.

        ``operations`` (the adapter's own processor) takes operation spans only and ignores every
        other: the others skip it, as looking at a SERVER span only to pass it by is a large part of
        the span's cost. The processors are read again whenever the provider's set changes.
        """
        multi = self.tracer.span_processor
        if type(multi) is not SynchronousMultiSpanProcessor:
            return None
        found = internals.span_processors(multi)
        if found is not self._seen:
            others = tuple(processor for processor in found if processor is not self.operations)
            self._all = _Processors(found, internals.ending_hooks(found))
            self._others = _Processors(others, internals.ending_hooks(others))
            self._seen = found
        return self._all if attrs.OP_TYPE in attributes else self._others


class _Processors(NamedTuple):
    """The processors a span goes to, in their order."""

    all: tuple[SpanProcessor, ...]
    #: The hooks to call first at the span's end (``internals.ending_hooks``).
    ending: tuple[Callable[[Any], None], ...]


_NO_PROCESSORS = _Processors((), ())


class LeanTracer:
    """Starts ``LeanSpan``s for an SDK tracer (another tracer starts its own spans)."""

    __slots__ = ("_setup", "tracer")

    def __init__(self, tracer: trace_api.Tracer, operations: SpanProcessor | None = None, *, lean: bool = True) -> None:
        """``operations``: a processor of the provider's that takes operation spans only (one with
        ``gateway.op_type``) and ignores every other; it is not called for them. ``lean=False``:
        the tracer's own ``start_span`` starts every span (the public path)."""
        self.tracer = tracer
        # Exactly the SDK's class: a subclass may start spans its own way.
        self._setup = _TracerSetup(tracer, operations) if lean and type(tracer) is sdk_trace.Tracer else None

    @property
    def lean(self) -> bool:
        """Whether it starts lean spans (else the tracer's own ``start_span`` does)."""
        return self._setup is not None

    def records_non_operation_spans(self) -> bool:
        """Whether a span that is not an operation's may be recorded. ``False`` when the default
        sampler decides and no processor of the provider but the adapter's would see such a span:
        ``start_span`` then makes it a ``NonRecordingSpan`` whatever its attributes, so that they
        need not be built (the SERVER span's, once a request)."""
        setup = self._setup
        if setup is None or setup.tracer.sampler is not setup.default_sampler:
            return True
        processors = setup.processors(_NO_ATTRIBUTES)
        return processors is None or bool(processors.all)

    def start_span(
        self,
        name: str,
        context: otel_context.Context,
        attributes: dict[str, Any],
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        start_time: int | None = None,
    ) -> trace_api.Span:
        """Start a span under ``context``. ``attributes`` must hold clean values only, and becomes
        the span's own (its callers build it for the span): it must not be changed afterwards."""
        setup = self._setup
        if setup is None:
            return self.tracer.start_span(name, context, kind=kind, attributes=attributes, start_time=start_time)
        tracer = setup.tracer
        found = context.get(_SPAN_KEY)  # trace.get_current_span(context), with one look-up
        current: SpanContext
        if type(found) is LeanSpan:  # the parent is most often one of ours: no ABC check
            current = found._context  # type: ignore[assignment]
        elif type(found) is _NonRecordingSpan:  # or one we did not record
            current = found.get_span_context()
        elif found is None:
            current = trace_api.INVALID_SPAN_CONTEXT
        else:
            current = (found if isinstance(found, trace_api.Span) else trace_api.INVALID_SPAN).get_span_context()
        if setup.configurable and not internals.tracer_enabled(tracer):
            return trace_api.NonRecordingSpan(current)
        ids = tracer.id_generator
        own_ids = type(ids) is RandomIdGenerator  # the SDK's default, drawn here as it draws them
        parent: SpanContext | None = None
        # A SpanContext is a tuple (trace id, span id, is remote, trace flags, trace state, is
        # valid), which the API's own properties read by index: read here the same way.
        if current[_VALID]:
            parent = current
            trace_id = current[_TRACE_ID]
            random_id = current[_FLAGS_AT] & _RANDOM
        else:
            trace_id = (own_ids and _random.getrandbits(128)) or ids.generate_trace_id()
            random_id = _RANDOM if _RANDOM and (own_ids or ids.is_trace_id_random()) else 0
        sampler = tracer.sampler
        trace_state: TraceState | None
        if sampler is setup.default_sampler:  # ParentBased(ALWAYS_ON), decided here
            if parent is None or parent[_FLAGS_AT] & _SAMPLED:
                decision = _RECORD_AND_SAMPLE
            elif setup.billing_safe and attrs.OP_TYPE in attributes:
                decision = _RECORD_ONLY
            else:
                decision = _DROP
            trace_state = parent[_STATE_AT] if parent is not None else DEFAULT_TRACE_STATE
            own = attributes
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes, ())
            decision, trace_state, sampled = result.decision, result.trace_state, result.attributes
            # The sampler's attributes become the span's (the SDK's samplers return the ones given,
            # behind a read-only proxy whose copy() is the dict's own, in C).
            own = sampled.copy() if isinstance(sampled, (dict, MappingProxyType)) else dict(sampled)
        flags = _FLAGS[decision is _RECORD_AND_SAMPLE, bool(random_id)]
        span_id = (own_ids and _random.getrandbits(64)) or ids.generate_span_id()
        if attrs.OP_TYPE in own:  # a record span: the records started under it hang under its own
            if parent is not None and not (
                type(found) is LeanSpan and (found._kind in REQUEST_KINDS or attrs.OP_TYPE in found._attributes)
            ):  # a parent that makes no record (the most common parent, one of ours that does, read directly)
                parent_record = record_tree.parent_record(parent, found)
                if parent_record != parent[_SPAN_ID]:
                    own[attrs.PARENT_RECORD] = f"{parent_record:016x}"
            trace_state = record_tree.record_state(trace_state, span_id)
        # SpanContext.__new__ as the API writes it, without its call (two spans a request).
        span_context: SpanContext = tuple.__new__(
            SpanContext,
            (
                trace_id,
                span_id,
                False,
                flags,
                DEFAULT_TRACE_STATE if trace_state is None else trace_state,
                0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID,
            ),
        )
        end_metrics = None if setup.metrics is None else setup.metrics.start_span(parent, decision)
        if decision is _DROP:
            return trace_api.NonRecordingSpan(span_context)
        processors = setup.processors(own)
        if processors is not None and not processors.all:
            if end_metrics is not None:
                end_metrics()  # counted as started; it records nothing, so it is live no longer
            # No processor would see it start or end (a SERVER span with neither OTLP nor a
            # processor of the user's): what it would record goes nowhere, so it records nothing.
            # Its context is as real as a recording span's, for its children, the request id and
            # log lines, and recording it would be a good share of the adapter's work per request.
            return trace_api.NonRecordingSpan(span_context)
        span = LeanSpan(
            name,
            span_context,
            parent,
            kind,
            own,
            start_time if start_time is not None else _time_ns(),
            setup,
            processors,
        )
        span._end_metrics = end_metrics
        # The processors take it for the SDK's Span: it has the same API and ReadableSpan fields.
        if processors is None:
            tracer.span_processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        else:
            for processor in processors.all:
                processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span
