"""The sender: delivers the queue's records and the spool's to the gateway, from the delivery thread.

It runs on the delivery thread's asyncio loop and keeps several requests in flight over a
keep-alive connection pool. What cannot be delivered now goes to the SQLite spool: records the
gateway did not accept yet, records waiting longer than ``SPILL_AFTER`` seconds, everything while
the gateway is down or not configured. The spool is drained, oldest first, once the gateway
answers. ``Outage`` decides when to ask the gateway again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable

from ._queue import FlushRequest, Record, RecordQueue
from ._selflog import log_once
from ._settings import Settings
from ._spool import Spool
from ._transport import HttpPool, Transport, TransportError, within

__all__ = ["Exit", "Outage", "Sender", "backoff", "http_pool", "retry_after"]

REPORT_PATH = "/v1/openapi/report/log"
BATCH_PATH = "/v1/openapi/report/logs"
#: Answers after which a record is sent again later. 401 and 403 refuse the sender's credentials (its
#: report token), not the record: records wait for the configuration to be fixed, not dead-lettered.
RETRYABLE_STATUS = frozenset({401, 403, 408, 425, 429, 500, 502, 503, 504})
#: A record older than this (waiting in memory or in flight) is also written to the spool,
#: so that a process killed while the gateway is slow or down loses nothing older.
SPILL_AFTER = 0.5
#: Seconds between two looks at a spool found empty (another process sharing it may fill it).
SPOOL_POLL = 1.0
#: Records read from the spool at a time.
SPOOL_CLAIM = 256
#: Delivered spooled records deleted in one transaction (at least every ``TICK``).
ACK_BATCH = 256
#: Seconds between two looks at the spool and at records in flight.
TICK = 0.25
FIRST_BACKOFF = 0.2
MAX_RETRY_AFTER = 300.0


def backoff(attempt: int, maximum: float) -> float:
    """Exponential backoff with full jitter."""
    ceiling = min(maximum, FIRST_BACKOFF * (2 ** min(attempt, 20)))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret


class Outage:
    """Whether the gateway takes records, as the sender sees it, and when to ask it again.

    Requests that fail together count as one attempt: one sent before the last counted failure
    failed for the same reason, so the backoff grows per outage, not per request (16 requests in
    flight do not take it to its ceiling at once). While failing, one request at a time probes the
    gateway, at least every ``max_backoff`` seconds, so delivery resumes within that time of the
    gateway answering again; ``Retry-After`` may ask for longer.
    """

    def __init__(self, max_backoff: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_backoff = max_backoff
        self._clock = clock
        self.attempts = 0  # failed attempts in the current outage
        self._attempt_at = 0.0  # when the last counted attempt failed
        self.retry_at = 0.0

    def failed(self, sent_at: float, after: float | None = None) -> float:
        """A request sent at ``sent_at`` failed (``after``: a ``Retry-After`` in seconds); returns the
        seconds until the next attempt."""
        now = self._clock()
        if sent_at >= self._attempt_at:  # sent after the last counted failure: a new attempt
            self.attempts += 1
            self._attempt_at = now
        delay = backoff(self.attempts, self.max_backoff)
        if after is not None:
            delay = max(delay, after)
        self.retry_at = max(self.retry_at, now + delay)
        return delay

    def recovered(self) -> None:
        """The gateway took records: the outage, if any, is over."""
        self.attempts = 0
        self.retry_at = 0.0

    def retry_now(self) -> None:
        """Ask again at once (exit: one more try before records are spooled)."""
        self.retry_at = min(self.retry_at, self._clock())

    def ready(self, now: float) -> bool:
        """Whether a request may start at ``now``."""
        return now >= self.retry_at

    def slots(self, most: int) -> int:
        """Requests that may be in flight: ``most`` while the gateway takes records, else one (the probe)."""
        return 1 if self.attempts else most


def retry_after(value: str | None) -> float | None:
    """Seconds to wait that a ``Retry-After`` header asks for (delta seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, MAX_RETRY_AFTER))


@dataclasses.dataclass
class Exit:
    """The process's exit, as the delivery thread sees it: once ``asked``, deliver until ``deadline``
    (pushed back while the gateway takes records), never past ``hard_deadline``, then stop."""

    asked: bool = False
    deadline: float = 0.0
    hard_deadline: float = 0.0


@dataclasses.dataclass
class _Unit:
    """Records sent in one request (one record, or a batch)."""

    records: list[Record]
    fresh: int  # how many of them count towards flushes (the rest came from the spool)
    started: float
    spooled: bool = False
    single: bool = False


class Sender:
    """Delivery in this process: the queue's records and the spool's, to the gateway."""

    def __init__(
        self,
        settings: Settings,
        queue: RecordQueue,
        spool: Spool,
        exit: Exit,
        transport: Callable[[Settings], Transport],
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.spool = spool
        self.exported = queue.exported
        self.exit = exit
        self._transport = transport
        self._clock = clock
        self._host = settings.openapi_host
        self._slots = in_flight(settings)
        self.outage = Outage(settings.max_backoff, clock)
        # Records taken from the queue, and those of them resolved (delivered, spooled, dropped):
        # a flush request is answered when the second count reaches the first's at its taking.
        self._taken = 0
        self._resolved = 0
        self._flushes: list[FlushRequest] = []
        self._inflight: dict[int, _Unit] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._claimed: deque[Record] = deque()
        self._spool_empty = False
        self._spool_looked = 0.0
        self._acked: list[str] = []
        self._acked_since = 0.0
        self._wake: asyncio.Event | None = None
        self.http: Transport | None = None

    async def run(self, wake: asyncio.Event) -> None:
        """Deliver until exit is asked and done (or its deadline passed); ``wake`` is set by callers."""
        self._wake = wake
        pool = self._transport(self.settings)
        self.http = pool
        queue, tasks, exit = self.queue, self._tasks, self.exit
        try:
            while True:
                now = self._clock()
                if exit.asked and (now >= exit.deadline or self._finished()):
                    break
                try:
                    lingering = self._take_queue(now)
                    self._drain_spool(now)
                    self._write_ahead_in_flight(now)
                    self._flush_acks(now)
                    self._answer_flushes()
                except Exception as exc:
                    # A fault in this loop's own bookkeeping must not stop delivery for the process's
                    # life: what it left in the queue and the spool is taken again at the next tick.
                    log_once("sender", "gateway-otel: delivery hit an error, going on: %r", exc, level=logging.ERROR)
                    lingering = TICK
                if lingering is None and queue.entries and self._free_slots() > 0 and self._healthy(now):
                    await asyncio.sleep(0)  # let the requests just started run, then take more
                    continue
                wake.clear()
                queue.idle = not queue.entries
                wait = TICK if lingering is None else min(TICK, lingering)
                with contextlib.suppress(asyncio.TimeoutError):
                    await within(wake.wait(), wait)
                queue.idle = False
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await pool.aclose()
        self._flush_acks(None)
        self.spool_what_remains()

    def spool_waited(self, error: str) -> None:
        """Spool the records at the head of the queue that have waited longer than ``SPILL_AFTER``
        (while no request can take them), so that a ``kill -9`` loses nothing older."""
        records, taken = self.queue.pop_waited(SPILL_AFTER)
        if records:
            self._spool_put(records, error=error)
        self._taken += taken
        self._resolved += taken

    def spool_now(self, records: list[Record], error: str) -> None:
        """Spool records that do not go through the queue (it is full), from any thread."""
        self._spool_put(records, error=error)

    def spool_what_remains(self) -> None:
        """Write what is still in memory to the spool (at exit, or when delivery stopped): records in
        flight and in the queue; spooled records claimed and not sent are released."""
        records: list[Record] = []
        for unit in list(self._inflight.values()):
            if not unit.spooled:
                records.extend(unit.records)
                unit.spooled = True
        records += self.queue.take_rest()
        if records:
            self._spool_put(records, error="not delivered before exit")
        if self._claimed:
            uuids = [uuid for uuid, _ in self._claimed]
            self._spool_call(
                "release", lambda: self.spool.release(uuids, error="not sent before exit", delay=0.0), refills=True
            )
            self._claimed.clear()
        for request in self._flushes:
            request.done.set()
        self._flushes = []

    def _finished(self) -> bool:
        """Nothing left to deliver: the queue, the requests in flight and the spool are empty."""
        return (
            not self.queue.entries
            and not self._inflight
            and not self._claimed
            and (self._spool_empty or not self._host)
        )

    def _flush_acks(self, now: float | None) -> None:
        """Delete delivered records from the spool: in one transaction per ``ACK_BATCH`` or ``TICK``
        (``now`` None: at once). Until then they stay claimed by this process; one it left there
        when killed is resent and the gateway acknowledges it as a duplicate."""
        if not self._acked:
            return
        if now is not None and len(self._acked) < ACK_BATCH and now - self._acked_since < TICK:
            return
        acked, self._acked = self._acked, []
        self._spool_call("delivered", lambda: self.spool.delivered(acked))

    def _healthy(self, now: float) -> bool:
        return self._host is not None and self.outage.ready(now)

    def _free_slots(self) -> int:
        """Requests that may start now (``Outage.slots``: one at a time during an outage)."""
        return self.outage.slots(self._slots) - len(self._inflight)

    def _take_queue(self, now: float) -> float | None:
        """Send or spool what the queue holds; returns the seconds until a lingering batch is due."""
        queue, settings, entries = self.queue, self.settings, self.queue.entries
        batch_size = settings.batch_size if settings.batch else 1
        stopping = self.exit.asked
        to_spool: list[Record] = []
        lingering: float | None = None
        while entries:
            healthy = self._healthy(now)
            head = entries[0]
            if isinstance(head, FlushRequest):
                entries.popleft()
                queue.flush_taken()
                head.target = self._taken  # counts the records spooled in this pass too
                self._flushes.append(head)
                continue
            too_old = now - head[2] > SPILL_AFTER
            if settings.batch and healthy and not stopping and len(entries) < batch_size:
                due = head[2] + settings.batch_linger - now
                if due > 0 and not queue.flushes_queued:  # no flush waits behind the records
                    lingering = due  # a fuller batch in a moment is cheaper for both sides
                    break
            if healthy and self._free_slots() > 0:
                records, taken = queue.pop_records(batch_size)
                self._taken += taken - len(records)
                self._resolved += taken - len(records)
                if records:
                    self._dispatch(records, fresh=len(records))
            elif not healthy or too_old or (stopping and now >= self.exit.deadline):
                records, taken = queue.pop_records(10_000)
                to_spool.extend(records)
                self._taken += taken
                self._resolved += taken - len(records)
            else:
                break
        if to_spool:
            self._spool_put(to_spool, error="gateway unavailable" if self._host else "no OPENAPI_HOST")
            self._resolved += len(to_spool)
        return lingering

    def _dispatch(
        self, records: list[Record], fresh: int, *, single: bool = False, spooled: bool | None = None
    ) -> None:
        single = single or not self.settings.batch
        unit = _Unit(records, fresh, self._clock(), spooled=fresh == 0 if spooled is None else spooled, single=single)
        self._taken += fresh
        self._inflight[id(unit)] = unit
        if self.http is None:
            raise RuntimeError("gateway-otel: records dispatched before the sender's connection pool exists")
        task = asyncio.ensure_future(self._send(self.http, unit))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drain_spool(self, now: float) -> None:
        """Send spooled records, oldest first, in the slots fresh records leave free."""
        if self.queue.entries or not self._healthy(now):
            return
        per_request = self.settings.batch_size if self.settings.batch else 1
        claimed = self._claimed
        if not claimed and self._spool_empty and now - self._spool_looked < SPOOL_POLL:
            return  # found empty a moment ago and nothing written since (other processes: next poll)
        while self._free_slots() > 0:
            if not claimed:
                self._spool_looked = now
                try:
                    records = self.spool.claim(max(SPOOL_CLAIM, per_request))
                except Exception as exc:
                    log_once("spool-claim", "could not read the spool: %r", exc, level=logging.ERROR)
                    return
                self._spool_empty = not records
                if not records:
                    return
                claimed.extend((record.uuid, record.body) for record in records)
            chunk = [claimed.popleft() for _ in range(min(per_request, len(claimed)))]
            self._dispatch(chunk, fresh=0)

    def _write_ahead_in_flight(self, now: float) -> None:
        old = [unit for unit in self._inflight.values() if not unit.spooled and now - unit.started > SPILL_AFTER]
        for unit in old:
            # Claimed: written ahead while the records are still being sent (not counted spooled).
            put = functools.partial(self.spool.put, unit.records, error="in flight", claimed=True)
            if self._spool_call("put", put, refills=True):
                unit.spooled = True

    def _answer_flushes(self) -> None:
        if self._flushes:
            waiting = []
            for request in self._flushes:
                if self._resolved >= request.target:
                    request.done.set()
                else:
                    waiting.append(request)
            self._flushes = waiting

    async def _send(self, pool: Transport, unit: _Unit) -> None:
        try:
            if unit.single:
                response = await pool.post(REPORT_PATH, unit.records[0][1])
            else:
                response = await pool.post(BATCH_PATH, b"[" + b",".join(body for _, body in unit.records) + b"]")
        except TransportError as exc:
            self._failed(unit, str(exc), None)
        except Exception as exc:
            log_once("send", "unexpected error sending records: %r", exc, level=logging.ERROR)
            self._failed(unit, repr(exc), None)
        else:
            status = response.status
            if 200 <= status < 300:
                self._delivered(unit)
            elif status in RETRYABLE_STATUS or status >= 500:
                self._failed(unit, f"HTTP {status}", retry_after(response.headers.get("retry-after")))
            elif not unit.single:
                # One bad record refuses the whole batch: send them one by one to find it.
                self._send_singly(unit)
            else:
                self._dead_letter(unit, f"HTTP {status}: {response.text[:500]}")
        finally:
            self._inflight.pop(id(unit), None)
            self._resolved += unit.fresh
            self._answer_flushes()
            if self._wake is not None:
                self._wake.set()

    def _delivered(self, unit: _Unit) -> None:
        self.exported["delivered"] += len(unit.records)
        self.outage.recovered()
        if unit.spooled:
            if not self._acked:
                self._acked_since = self._clock()
            self._acked.extend(uuid for uuid, _ in unit.records)
        exit = self.exit
        if exit.asked:  # exit waits while the gateway takes records, up to the hard deadline
            exit.deadline = min(exit.hard_deadline, self._clock() + self.settings.shutdown_timeout)

    def _failed(self, unit: _Unit, error: str, after: float | None) -> None:
        delay = self.outage.failed(unit.started, after)
        log_once("gateway-down", "gateway-otel: the gateway did not take records (%s); retrying in %.1fs", error, delay)
        uuids = [uuid for uuid, _ in unit.records]
        if unit.spooled:
            self._spool_call("release", lambda: self.spool.release(uuids, error=error, delay=delay), refills=True)
            self.exported["spooled"] += unit.fresh  # written ahead while in flight; waiting now
        else:
            self._spool_put(unit.records, error=error, delay=delay)

    def _dead_letter(self, unit: _Unit, reason: str) -> None:
        uuid, body = unit.records[0]
        log_once("dead-letter", "gateway-otel: the gateway refused record %s (%s); kept as a dead letter", uuid, reason)
        self._spool_call("dead_letter", lambda: self.spool.dead_letter(uuid, body, reason))
        self.exported["dead_letter"] += 1

    def _send_singly(self, unit: _Unit) -> None:
        each = 1 if unit.fresh else 0
        for record in unit.records:
            self._dispatch([record], each, single=True, spooled=unit.spooled)
        # Each record now counts for flushes in its own request.
        self._taken -= unit.fresh
        unit.fresh = 0

    def _spool_put(self, records: list[Record], *, error: str, delay: float = 0.0) -> None:
        """Write ``records`` to the spool, counted ``spooled`` (``dropped`` when the spool fails)."""
        put = functools.partial(self.spool.put, records, error=error, delay=delay)
        outcome = "spooled" if self._spool_call("put", put, refills=True) else "dropped"
        self.exported[outcome] += len(records)

    def _spool_call(self, what: str, call: Callable[[], object], *, refills: bool = False) -> bool:
        """Run one of the spool's methods; a failure is logged (once a minute) and ``False``.
        ``refills``: it puts records (back) on disk, so exit must look at the spool before it stops."""
        if refills:
            self._spool_empty = False
        try:
            call()
        except Exception as exc:
            log_once(f"spool-{what}", "gateway-otel: spool %s failed: %r", what, exc, level=logging.ERROR)
            return False
        return True


def in_flight(settings: Settings) -> int:
    """Requests in flight at most: several small ones hide the round trip; big batches only contend
    for the gateway's database, so fewer of them are in flight."""
    return settings.batch_in_flight if settings.batch else settings.max_in_flight


def http_pool(settings: Settings) -> HttpPool:
    """The sender's connections to the gateway, one per request in flight, kept alive."""
    return HttpPool(
        settings.openapi_host or "http://127.0.0.1",
        size=in_flight(settings),
        timeout=settings.timeout,
        config=settings.http,
        token=settings.report_token,
    )
