"""The callers' side of delivery: what makes each record waits in memory for the delivery thread.

A caller appends a builder and its item (a span's data, a ready payload) to a deque: no lock, no
I/O, no JSON. The delivery thread is woken only when it sleeps. Flush requests travel in the same
deque, behind the records they wait for. Records are built (payload, then JSON) as they leave.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ._records import encode
from ._selflog import log_once

__all__ = ["Builder", "Entry", "FlushRequest", "Listener", "Record", "RecordQueue"]

#: Builds a record payload from what the caller handed over (a span, or a ready payload).
Builder = Callable[[Any], dict[str, Any]]
#: Receives each record's body as it is built (the testing capture).
Listener = Callable[[bytes], None]
#: A queued record: its builder, what it is built from, and when it was queued.
Entry = tuple[Builder, Any, float]
#: A built record: its uuid and its JSON body.
Record = tuple[str, bytes]


class FlushRequest:
    """A flush travelling through the queue behind the records it waits for."""

    __slots__ = ("done", "flushed", "target", "timeout")

    def __init__(self, timeout: float) -> None:
        self.done = threading.Event()
        self.flushed = True
        self.target = -1  # the sender's count of records taken when it took this request
        self.timeout = timeout

    def answer(self, flushed: bool) -> None:
        """``flushed``: whether every record before it was delivered or spooled."""
        self.flushed = flushed
        self.done.set()


def _nobody() -> None:
    pass


class RecordQueue:
    """Records waiting in this process for the delivery thread, in the order they were made."""

    def __init__(self, limit: int, exported: dict[str, int], clock: Callable[[], float] = time.monotonic) -> None:
        """``limit``: entries held at most (``put`` refuses more); ``exported``: the counts of what
        became of the records (one that cannot be built is ``dropped``)."""
        self.entries: deque[Entry | FlushRequest] = deque()
        self.limit = limit
        self.exported = exported
        self._clock = clock
        self.listeners: list[Listener] = []
        #: Set while the delivery thread sleeps until woken: the next ``put`` calls ``wake``.
        self.idle = False
        self.wake: Callable[[], None] = _nobody
        #: A backend that takes the queue over from the caller's own event loop: called by each
        #: ``put``, ``True`` when it takes this entry with it (the delivery thread is left asleep).
        self.taken_soon: Callable[[], bool] | None = None
        # Flush requests in the queue, counted: other threads append while the delivery thread reads.
        self._flush_lock = threading.Lock()
        self.flushes_queued = 0

    def put(self, build: Builder, item: Any) -> bool:
        """Queue a record; ``False`` when the queue is full (the caller spools it instead)."""
        entries = self.entries
        if len(entries) >= self.limit:
            return False
        entries.append((build, item, self._clock()))
        taken_soon = self.taken_soon
        if taken_soon is not None and taken_soon():
            return True
        if self.idle:
            self.wake()
        return True

    def request_flush(self, timeout: float) -> FlushRequest:
        """Queue a flush request behind every record so far, and wake the delivery thread."""
        request = FlushRequest(timeout)
        with self._flush_lock:
            self.flushes_queued += 1
            self.entries.append(request)
        self.wake()
        return request

    def flush_taken(self) -> None:
        """A flush request left the queue."""
        with self._flush_lock:
            self.flushes_queued -= 1

    def head_is_flush(self) -> bool:
        entries = self.entries
        return bool(entries) and isinstance(entries[0], FlushRequest)

    def pop_records(self, limit: int) -> tuple[list[Record], int]:
        """Up to ``limit`` records from the head, built, stopping at a flush request: (the records,
        how many entries were taken, those that could not be built included)."""
        entries = self.entries
        records: list[Record] = []
        taken = 0
        while entries and len(records) < limit and not isinstance(entries[0], FlushRequest):
            build, item, _ = entries.popleft()  # type: ignore[misc]
            taken += 1
            record = self.build(build, item)
            if record is not None:
                records.append(record)
        return records, taken

    def pop_waited(self, longer_than: float) -> tuple[list[Record], int]:
        """The records at the head queued more than ``longer_than`` seconds ago, built, as ``pop_records``."""
        entries, now = self.entries, self._clock()
        records: list[Record] = []
        taken = 0
        while entries and not isinstance(entries[0], FlushRequest) and now - entries[0][2] > longer_than:
            built, count = self.pop_records(1)
            records += built
            taken += count
        return records, taken

    def take_rest(self) -> list[Record]:
        """Everything left, built (at exit, or when delivery stopped); flush requests are answered."""
        records: list[Record] = []
        entries = self.entries
        while entries:
            head = entries.popleft()
            if isinstance(head, FlushRequest):
                self.flush_taken()
                head.done.set()
                continue
            record = self.build(head[0], head[1])
            if record is not None:
                records.append(record)
        return records

    def build(self, builder: Builder, item: Any) -> Record | None:
        """The record ``builder`` makes of ``item`` (``None``, logged and counted, when it cannot)."""
        try:
            payload = builder(item)
            body = encode(payload)
        except Exception as exc:
            log_once("build", "could not build a record: %r", exc, level=logging.ERROR)
            self.exported["dropped"] += 1
            return None
        for listener in self.listeners:
            try:
                listener(body)
            except Exception as exc:
                log_once("listener", "a record listener failed: %r", exc)
        return str(payload["uuid"]), body
