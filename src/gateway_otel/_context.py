"""Request identity in OpenTelemetry Context.

The request id, caller id and request URL live in W3C baggage entries of the OTel Context, so
that they follow the context into threads and tasks and across services (the baggage propagator
carries them on outgoing httpx calls and AMQP messages).
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future
from functools import partial
from types import MappingProxyType
from typing import Any, Generic, ParamSpec, TypeVar
from urllib.parse import quote

from opentelemetry import baggage, context, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import _attributes as attrs
from ._otel_internals import runtime_context_variable
from ._request_context import STORE_KEY

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: Carries trace context and baggage whatever the global propagator is set to.
PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
#: Baggage alone (a request without a server span of the adapter's: the identity it carries).
BAGGAGE = W3CBaggagePropagator()

logger = logging.getLogger(__name__)


_CURRENT = runtime_context_variable()
get_current: Callable[[], context.Context]
attach: Callable[[context.Context], contextvars.Token[context.Context]]
detach: Callable[[contextvars.Token[context.Context]], None]
if _CURRENT is not None:
    # ``context.get_current`` and ``context.attach`` reach this ContextVar's ``get`` and ``set``
    # through two Python calls each; the middleware and the decorator call them on every request
    # and operation, so they call the ContextVar's directly. Another runtime context (one
    # named by ``OTEL_PYTHON_CONTEXT``) is used through the API.
    get_current = _CURRENT.get
    attach = _CURRENT.set
    _reset = _CURRENT.reset

    def _detach(token: contextvars.Token[context.Context]) -> None:
        """``context.detach``: a token that cannot be reset is logged, as the API does."""
        try:
            _reset(token)
        except Exception:
            logger.exception("Failed to detach context")

    detach = _detach
else:  # pragma: no cover - only with a runtime context other than the default
    get_current = context.get_current
    attach = context.attach
    detach = context.detach


@dataclasses.dataclass(frozen=True)
class ContextToken:
    """What ``set`` returns, to give back to ``reset``."""

    key: str
    previous: str | None
    attached: context.Context
    token: object


class ContextField:
    """A ContextVar-like view of one baggage entry: ``set`` returns a token for ``reset``.

    ``reset`` restores only this entry, so tokens of several fields may be reset in any order
    (the ``ait_openapi`` examples reset them in the order they were set).
    """

    __slots__ = ("key", "name")

    def __init__(self, name: str, key: str) -> None:
        self.name = name
        self.key = key

    def __repr__(self) -> str:
        return f"<ContextField {self.name} ({self.key})>"

    def get(self, default: str | None = None) -> str | None:
        value = baggage.get_baggage(self.key)
        return default if value is None else str(value)

    def set(self, value: object) -> ContextToken:
        previous = self.get()
        if self.key == attrs.REQUEST_URL and value is not None:
            from ._pipeline import current_pipeline  # the pipeline imports this module: import at use

            value = fit_in_baggage(current_pipeline().scrubber.scrub_url(str(value)))  # no secret, and it propagates
        new = _with_entry(get_current(), self.key, value)
        return ContextToken(self.key, previous, new, attach(new))

    def reset(self, token: ContextToken) -> None:
        if token.key != self.key:
            raise ValueError(f"{token!r} was created by another field than {self!r}")
        if get_current() is token.attached:
            detach(token.token)  # type: ignore[arg-type]
        else:
            # Other entries were set after this one: restore this entry alone.
            attach(_with_entry(get_current(), self.key, token.previous))


def _with_entry(ctx: context.Context, key: str, value: object) -> context.Context:
    if value is None:
        return baggage.remove_baggage(key, ctx)
    return baggage.set_baggage(key, str(value), ctx)


trace_id_context = ContextField("trace_id", attrs.REQUEST_ID)
"""The request id (the name is ``ait_openapi``'s)."""
caller_id_context = ContextField("caller_id", attrs.CALLER_ID)
request_url_context = ContextField("request_url", attrs.REQUEST_URL)


def current_request_id() -> str | None:
    """The request id of the current context, or ``None``."""
    return trace_id_context.get()


def current_caller_id() -> str | None:
    """The caller id of the current context, or ``None``."""
    return caller_id_context.get()


#: The Context keys the baggage API keeps its entries under and the trace API its span, found
#: through the public API: the one key of a Context that holds nothing but baggage, or a span.
_BAGGAGE_KEY = next(iter(baggage.set_baggage("gateway.probe", "", context.Context())))
_SPAN_KEY = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, context.Context())))


def baggage_of(ctx: context.Context | None = None) -> Mapping[str, object]:
    """All baggage entries of ``ctx`` (the current context by default), as ``baggage.get_all``
    gives them, read with one look-up (the decorator and the middleware do this for every call and
    request). The mapping is the Context's own: read it, never change it."""
    entries = (get_current() if ctx is None else ctx).get(_BAGGAGE_KEY)
    return entries if isinstance(entries, dict) else _NO_ENTRIES


_NO_ENTRIES: Mapping[str, object] = MappingProxyType({})


def put_identity(attributes: dict[str, Any], ctx: context.Context) -> None:
    """Put the request's identity that ``ctx``'s baggage holds (request id, caller id, request URL)
    into a starting span's ``attributes``, where its records read it."""
    bag = baggage_of(ctx)
    if bag:
        for key in attrs.BAGGAGE_KEYS:
            value = bag.get(key)
            if value is not None:
                attributes[key] = value


def name_request_by_trace(span: trace.Span) -> None:
    """Give a span whose request has no id of its own the trace id as its request id, as the
    middleware gives a request without ``X-Request-ID``."""
    span.set_attribute(attrs.REQUEST_ID, format(span.get_span_context().trace_id, "032x"))


_REQUEST_ID, _CALLER_ID, _REQUEST_URL = attrs.REQUEST_ID, attrs.CALLER_ID, attrs.REQUEST_URL


def with_identity(
    ctx: context.Context,
    *,
    request_id: str | None,
    caller_id: str | None,
    request_url: str | None,
    span: trace.Span | None = None,
    store: dict[str, object] | None = None,
    baggage_entries: Mapping[str, str] | None = None,
) -> context.Context:
    """``ctx`` with the three identity entries replaced (``None`` removes an entry), ``span`` as its
    current span and ``store`` as its request context when given, and ``baggage_entries`` added.

    What three ``set_baggage`` calls (and ``set_span_in_context``) give, with one copy of the
    baggage and of the Context rather than four: the middleware does this for every request.
    """
    found = ctx.get(_BAGGAGE_KEY)
    entries: dict[str, object] = dict(found) if isinstance(found, dict) else {}
    if request_url is not None and len(request_url) > _URL_LENGTH_TO_CHECK:
        request_url = fit_in_baggage(request_url)
    for key, value in ((_REQUEST_ID, request_id), (_CALLER_ID, caller_id), (_REQUEST_URL, request_url)):
        if value is not None:
            entries[key] = value if type(value) is str else str(value)
        elif found:  # most requests come without baggage: nothing to remove
            entries.pop(key, None)
    if baggage_entries:
        entries.update(baggage_entries)
    values = dict(ctx)
    values[_BAGGAGE_KEY] = entries
    if span is not None:
        values[_SPAN_KEY] = span
    if store is not None:
        values[STORE_KEY] = store
    return context.Context(values)


#: W3C baggage as OpenTelemetry propagates it: a ``key=value`` pair of at most 4096 bytes (a longer
#: one is dropped whole), 8192 bytes in all. A request URL is cut to fit its pair, with a marker.
_MAX_PAIR_BYTES = 4096
_URL_LENGTH_TO_CHECK = 1024  # shorter URLs fit even if every character were percent-encoded
CUT_MARKER = "...[cut]"


def fit_in_baggage(url: str) -> str:
    """``url``, or its head and ``CUT_MARKER`` when its baggage pair would exceed what W3C baggage
    propagates (OpenTelemetry drops such a pair silently: a downstream service would get none)."""
    room = _MAX_PAIR_BYTES - len(_REQUEST_URL) - 1
    if len(quote(url, safe="")) <= room:
        return url
    low, high = 0, len(url)  # the longest head that fits with the marker (encoding widens characters)
    while low < high:
        middle = (low + high + 1) // 2
        if len(quote(url[:middle] + CUT_MARKER, safe="")) <= room:
            low = middle
        else:
            high = middle - 1
    return url[:low] + CUT_MARKER


_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def sane_request_id(value: str | None) -> str | None:
    """``value`` when it is a usable request id (1-128 of ``[A-Za-z0-9._:-]``), else ``None``."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


def with_span(ctx: context.Context, span: trace.Span) -> context.Context:
    """``trace.set_span_in_context(span, ctx)`` with one copy of the Context."""
    values = dict(ctx)
    values[_SPAN_KEY] = span
    return context.Context(values)


def without_identity(ctx: context.Context) -> context.Context:
    """``ctx`` with every ``gateway.*`` baggage entry removed (identity from outside is not trusted)."""
    for key in baggage.get_all(ctx):
        if key.startswith("gateway."):
            ctx = baggage.remove_baggage(key, ctx)
    return ctx


class ThreadCopyContext(threading.Thread):
    """A ``threading.Thread`` whose target runs in a copy of the creating thread's context."""

    def __init__(
        self,
        group: None = None,
        target: Callable[..., object] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        ctx = contextvars.copy_context()
        run: Callable[[], object] = partial(target, *args, **(kwargs or {})) if target is not None else _noop
        super().__init__(group, ctx.run, name, (run,), None, daemon=daemon)


def _noop() -> None:
    return None


class _InContext(Generic[P, R]):
    """A callable bound to a captured OTel context; pickles as a W3C carrier for process pools."""

    __slots__ = ("_carrier", "_ctx", "_fn")

    def __init__(self, fn: Callable[P, R], ctx: context.Context | None = None) -> None:
        self._fn = fn
        self._ctx: context.Context | None = get_current() if ctx is None else ctx
        self._carrier: dict[str, str] | None = None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        ctx = self._ctx
        if ctx is None:
            ctx = PROPAGATOR.extract(self._carrier or {})
        token = attach(ctx)
        try:
            return self._fn(*args, **kwargs)
        finally:
            detach(token)

    def __getstate__(self) -> tuple[Callable[P, R], dict[str, str]]:
        carrier: dict[str, str] = dict(self._carrier or {})
        if self._ctx is not None:
            PROPAGATOR.inject(carrier, self._ctx)
        return self._fn, carrier

    def __setstate__(self, state: tuple[Callable[P, R], dict[str, str]]) -> None:
        self._fn, self._carrier = state
        self._ctx = None


def run_in_context(fn: Callable[P, R]) -> Callable[P, R]:
    """Bind ``fn`` to the current OTel context, for a thread pool, a process pool or a callback.

    ``executor.submit(run_in_context(work), item)`` runs ``work`` under the caller's trace, request
    id and caller id. Across processes the context travels as W3C ``traceparent`` and baggage.
    """
    return _InContext(fn)


class _ContextExecutor(Executor):
    def __init__(self, executor: Executor) -> None:
        self._executor = executor

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self._executor.submit(_InContext(fn), *args, **kwargs)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        **kwargs: Any,
    ) -> Iterator[T]:
        return self._executor.map(_InContext(fn), *iterables, timeout=timeout, chunksize=chunksize, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._executor, name)


def context_executor(executor: Executor) -> Executor:
    """Wrap a ``ThreadPoolExecutor`` or ``ProcessPoolExecutor`` so tasks run in the submitter's context."""
    return _ContextExecutor(executor)
