"""The relay's wire format: newline-delimited JSON between an app and its relay process, versioned.

App to relay, one message per line:

- records: a list of rows. A span's row is ``[kind, trace id's high 64 bits, its low 64 bits,
  span id, parent span id, start ns, end ns, attributes, failed, service]`` (JSON integers hold 64
  bits) with ``kind`` ``IN`` or ``OUT`` (the record to build), or ``BOTH`` for an operation that
  ended before its ``in`` record was handed over (the relay builds both from the ended span, as
  the gateway's OTLP receiver does); ``[BUILT, body]`` is a record built in the app (``body``
  ``null`` when it could not be built).
- a flush request: ``[flush id, timeout seconds]``.

Relay to app: ``{"ready": VERSION}`` once, then ``[flush id, flushed]`` per flush request, and
``{"exported": {outcome: count}}`` whenever its counts changed. An app refuses a relay that speaks
another version (a relay started from another installation of the package): it then delivers in
its own process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import orjson

from ._records import SpanData

__all__ = [
    "BOTH",
    "BUILT",
    "IN",
    "OUT",
    "VERSION",
    "Counts",
    "Flush",
    "Flushed",
    "Ready",
    "built_row",
    "counts",
    "flush_answer",
    "flush_request",
    "kinds",
    "read_app_line",
    "read_relay_line",
    "ready",
    "row_data",
    "span_row",
]

#: The wire's version: raised with any change an older peer would misread.
VERSION = 1
IN, OUT, BUILT, BOTH = 0, 1, 2, 3
_LOW_64 = (1 << 64) - 1


class Ready(NamedTuple):
    """The relay is up and speaks ``version``."""

    version: int


class Flush(NamedTuple):
    """The app asks the relay to deliver what it has read, within ``timeout`` seconds."""

    flush_id: int
    timeout: float


class Flushed(NamedTuple):
    """The relay's answer to flush request ``flush_id``."""

    flush_id: int
    flushed: bool


class Counts(NamedTuple):
    """What became of the records the relay took, by outcome."""

    exported: dict[str, int]


# -- app to relay --------------------------------------------------------------------------


def span_row(kind: int, data: Sequence[Any]) -> tuple[Any, ...]:
    """The row of a span's record(s) of ``kind`` (``IN``, ``OUT``, ``BOTH``) from its span data."""
    trace_id = data[0]
    return (kind, trace_id >> 64, trace_id & _LOW_64, *data[1:])


def row_data(row: Sequence[Any]) -> SpanData:
    """The span data of a span's row (``span_row`` undone)."""
    return SpanData((row[1] << 64) | row[2], *row[3:])


def kinds(kind: int) -> tuple[int, ...]:
    """The records a span's row of ``kind`` stands for: ``(IN,)``, ``(OUT,)`` or both."""
    return (IN, OUT) if kind == BOTH else (kind,)


def built_row(body: bytes | None) -> orjson.Fragment:
    """The row of a record built in the app (its JSON ``body``; ``None``: it could not be built)."""
    return orjson.Fragment(b"[%d,%b]" % (BUILT, body) if body is not None else b"[%d,null]" % BUILT)


def flush_request(flush_id: int, timeout: float) -> bytes:
    return orjson.dumps((flush_id, timeout)) + b"\n"


def read_app_line(line: bytes) -> Flush | list[Any]:
    """A line the app wrote: a flush request, or the rows of records (``orjson.JSONDecodeError``
    when it is not JSON, as a line cut short by a write the app could not finish)."""
    message = orjson.loads(line)
    if message and not isinstance(message[0], list):
        return Flush(int(message[0]), float(message[1]))
    return list(message)


# -- relay to app --------------------------------------------------------------------------


def ready() -> bytes:
    return orjson.dumps({"ready": VERSION}) + b"\n"


def flush_answer(flush_id: int, flushed: bool) -> bytes:
    return orjson.dumps((flush_id, flushed)) + b"\n"


def counts(exported: dict[str, int]) -> bytes:
    return orjson.dumps({"exported": exported}) + b"\n"


def read_relay_line(line: bytes) -> Ready | Flushed | Counts:
    """A line the relay wrote (``ValueError`` when it is none of its messages)."""
    message = orjson.loads(line)
    if isinstance(message, dict):
        if "ready" in message:
            return Ready(int(message["ready"]))
        if "exported" in message:
            return Counts({str(k): int(v) for k, v in (message["exported"] or {}).items()})
    elif isinstance(message, list) and len(message) == 2:
        return Flushed(int(message[0]), bool(message[1]))
    raise ValueError(f"not a message of the relay: {line[:100]!r}")
