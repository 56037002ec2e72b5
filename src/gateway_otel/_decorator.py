"""``@operation_log``: each call of the decorated function is an OpenTelemetry span.

The signature is inspected once, at decoration time; each call binds its arguments by name,
serializes them once into the span's ``gateway.request`` attribute and starts the span with all
its attributes (so the sampler and the processor see them at start). Separate wrappers serve sync
functions, coroutine functions, generators and async generators. The adapter's own failures are
logged and never reach the caller; the function's own exceptions are re-raised unchanged.
"""

from __future__ import annotations

import functools
import inspect
import time
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from typing import Any, NamedTuple, TypeVar, cast, overload

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, Status, StatusCode

from . import _attributes as attrs
from ._context import attach, detach, get_current, name_request_by_trace, put_identity, with_span
from ._pipeline import Pipeline, current_pipeline
from ._selflog import log_once
from ._serialize import error_message, to_json

F = TypeVar("F", bound=Callable[..., Any])
Capture = bool | Callable[[Any], Any]

#: Items of a streamed response kept for its ``response`` (the JSON is capped as well).
MAX_STREAM_ITEMS = 1000
_EMPTY_REQUEST = "{}"
_time_ns = time.time_ns
_perf_ns = time.perf_counter_ns


class _Signature:
    """How to name a call's arguments, worked out once per decorated function."""

    __slots__ = ("positional", "skip_first", "var_positional")

    def __init__(self, fn: Callable[..., Any]) -> None:
        try:
            parameters = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            parameters = []
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        self.positional = tuple(p.name for p in parameters if p.kind in kinds)
        self.var_positional = next((p.name for p in parameters if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
        # A method's ``self`` / ``cls`` says nothing about the operation's input.
        self.skip_first = bool(self.positional) and self.positional[0] in ("self", "cls")

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        names = self.positional
        if self.skip_first:
            names, args = names[1:], args[1:]
        bound = dict(zip(names, args, strict=False))
        if len(args) > len(names):
            bound[self.var_positional or "*args"] = list(args[len(names) :])
        if kwargs:
            bound.update(kwargs)
        return bound


class _Started(NamedTuple):
    """What ``_Operation.start`` gives for a call: its end reads the same span and pipeline, without
    looking them up again."""

    span: Span
    context: otel_context.Context  # the caller's, with the span
    start_ns: int  # wall clock
    mono_ns: int  # monotonic clock, for the duration
    pipeline: Pipeline  # what it reports through (its end reads the same one)


class _Operation:
    """What one decorated function needs on each call."""

    __slots__ = ("capture_request", "capture_response", "extra_json", "name", "signature", "static")

    def __init__(
        self,
        fn: Callable[..., Any],
        op_type: str | None,
        is_cost_log: bool,
        capture_request: Capture,
        capture_response: Capture,
        extra: Mapping[str, Any] | None,
    ) -> None:
        self.name = op_type or getattr(fn, "__name__", None) or type(fn).__name__
        self.signature = _Signature(fn)
        self.capture_request = capture_request
        self.capture_response = capture_response
        self.static: dict[str, Any] = {attrs.OP_TYPE: self.name, attrs.IS_COST_LOG: bool(is_cost_log)}
        self.extra_json = to_json(dict(extra), 64 * 1024) if extra else None
        if self.extra_json:
            self.static[attrs.EXTRA] = self.extra_json

    def start(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> _Started | None:
        """Start the span of a call; ``None`` when the adapter failed (logged once): the call then
        runs without a span."""
        try:
            pipeline = current_pipeline()
            ctx = get_current()
            attributes = dict(self.static)
            put_identity(attributes, ctx)
            named = attrs.REQUEST_ID in attributes
            capture = self.capture_request
            if capture:
                if args or kwargs:
                    request = self.signature.bind(args, kwargs)
                    if capture is not True:
                        request = capture(request)
                    cap = pipeline.settings.max_payload_bytes
                    attributes[attrs.REQUEST] = to_json(request, cap, pipeline.scrubber)
                else:
                    attributes[attrs.REQUEST] = _EMPTY_REQUEST
            start_ns = _time_ns()
            mono_ns = _perf_ns()
            span = pipeline.lean_tracer.start_span(self.name, ctx, attributes, start_time=start_ns)
            if not named:
                name_request_by_trace(span)
            return _Started(span, with_span(ctx, span), start_ns, mono_ns, pipeline)
        except Exception as exc:
            log_once("decorator-start", "gateway-otel: could not start an operation span: %r", exc)
            return None

    def succeed(self, started: _Started, result: Any) -> None:
        """End the span of a call that returned ``result``."""
        span, _, start_ns, mono_ns, pipeline = started
        try:
            capture = self.capture_response
            if capture and result is not None:
                if capture is not True:
                    result = capture(result)
                span.set_attribute(
                    attrs.RESPONSE, to_json(result, pipeline.settings.max_payload_bytes, pipeline.scrubber)
                )
        except Exception as exc:
            log_once("decorator-response", "gateway-otel: could not record a response: %r", exc)
        finally:
            span.end(start_ns + _perf_ns() - mono_ns)

    def fail(self, started: _Started, exc: BaseException) -> None:
        """End the span of a call that raised ``exc``."""
        span, _, start_ns, mono_ns, pipeline = started
        try:
            scrubber = pipeline.scrubber
            message = error_message(exc, scrubber)
            span.set_attribute(attrs.ERROR, message)
            span.set_status(Status(StatusCode.ERROR, message))
            stacktrace = scrubber.scrub_text("".join(traceback.format_exception(exc)))
            span.record_exception(exc, attributes={"exception.message": message, "exception.stacktrace": stacktrace})
        except Exception as internal:
            log_once("decorator-error", "gateway-otel: could not record an exception: %r", internal)
        finally:
            span.end(start_ns + _perf_ns() - mono_ns)


def _wrap_sync(fn: Callable[..., Any], op: _Operation) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = op.start(args, kwargs)
        if started is None:
            return fn(*args, **kwargs)
        token = attach(started.context)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            detach(token)
            op.fail(started, exc)
            raise
        detach(token)
        op.succeed(started, result)
        return result

    return wrapper


def _wrap_async(fn: Callable[..., Awaitable[Any]], op: _Operation) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = op.start(args, kwargs)
        if started is None:
            return await fn(*args, **kwargs)
        token = attach(started.context)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            detach(token)
            op.fail(started, exc)
            raise
        detach(token)
        op.succeed(started, result)
        return result

    return wrapper


class _Stream:
    """The items a streamed response yielded, kept for its ``response`` up to ``MAX_STREAM_ITEMS``."""

    __slots__ = ("count", "items")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.count = 0

    def add(self, item: Any) -> None:
        self.count += 1
        if self.count <= MAX_STREAM_ITEMS:
            self.items.append(item)

    def response(self, closed_early: bool) -> Any:
        if self.count <= MAX_STREAM_ITEMS and not closed_early:
            return self.items
        return {
            "items": self.items,
            "count": self.count,
            "truncated": self.count > MAX_STREAM_ITEMS,
            "closedEarly": closed_early,
        }


def _wrap_generator(fn: Callable[..., Generator[Any, Any, Any]], op: _Operation) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        started = op.start(args, kwargs)
        if started is None:
            return (yield from fn(*args, **kwargs))
        ctx = started.context
        stream = _Stream()
        generator = fn(*args, **kwargs)
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            token = attach(ctx)
            try:
                item = generator.send(sent) if thrown is None else generator.throw(thrown)
            except StopIteration as stop:
                detach(token)
                op.succeed(started, stream.response(False))
                return stop.value
            except BaseException as exc:
                detach(token)
                op.fail(started, exc)
                raise
            detach(token)
            stream.add(item)
            thrown = None
            try:
                sent = yield item
            except GeneratorExit:
                token = attach(ctx)
                try:
                    generator.close()
                finally:
                    detach(token)
                    op.succeed(started, stream.response(True))
                raise
            except BaseException as exc:
                thrown, sent = exc, None

    return wrapper


def _wrap_async_generator(fn: Callable[..., AsyncGenerator[Any, Any]], op: _Operation) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
        started = op.start(args, kwargs)
        if started is None:
            async for item in fn(*args, **kwargs):
                yield item
            return
        ctx = started.context
        stream = _Stream()
        generator = fn(*args, **kwargs)
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            token = attach(ctx)
            try:
                item = await (generator.asend(sent) if thrown is None else generator.athrow(thrown))
            except StopAsyncIteration:
                detach(token)
                op.succeed(started, stream.response(False))
                return
            except BaseException as exc:
                detach(token)
                op.fail(started, exc)
                raise
            detach(token)
            stream.add(item)
            thrown = None
            try:
                sent = yield item
            except GeneratorExit:
                token = attach(ctx)
                try:
                    await generator.aclose()
                finally:
                    detach(token)
                    op.succeed(started, stream.response(True))
                raise
            except BaseException as exc:
                thrown, sent = exc, None

    return wrapper


def _decorate(
    fn: F,
    op_type: str | None,
    is_cost_log: bool,
    capture_request: Capture,
    capture_response: Capture,
    extra: Mapping[str, Any] | None,
) -> F:
    op = _Operation(fn, op_type, is_cost_log, capture_request, capture_response, extra)
    if inspect.isasyncgenfunction(fn):
        return cast(F, _wrap_async_generator(fn, op))
    if inspect.iscoroutinefunction(fn):
        return cast(F, _wrap_async(fn, op))
    if inspect.isgeneratorfunction(fn):
        return cast(F, _wrap_generator(fn, op))
    return cast(F, _wrap_sync(fn, op))


@overload
def operation_log(func: F, /) -> F: ...


@overload
def operation_log(
    op_type: str | None = None,
    is_cost_log: bool = False,
    *,
    capture_request: Capture = True,
    capture_response: Capture = True,
    extra: Mapping[str, Any] | None = None,
) -> Callable[[F], F]: ...


def operation_log(
    op_type: Any = None,
    is_cost_log: bool = False,
    *,
    capture_request: Capture = True,
    capture_response: Capture = True,
    extra: Mapping[str, Any] | None = None,
) -> Any:
    """Report each call of the decorated function as an operation: an OTel span, an ``in`` and an ``out`` record.

    Args:
        op_type: the operation's name (``opType``); the function's ``__name__`` by default.
        is_cost_log: the ``out`` record bills the caller.
        capture_request: record the arguments (``False``: not at all; a callable: what it returns
            from the arguments bound by name).
        capture_response: record the return value (``False`` or a callable, likewise).
        extra: constant entries for every record's ``extraInfo``.
    """
    if callable(op_type):  # used bare: @operation_log
        return _decorate(op_type, None, False, capture_request, capture_response, extra)

    def decorator(fn: F) -> F:
        return _decorate(fn, op_type, is_cost_log, capture_request, capture_response, extra)

    return decorator
