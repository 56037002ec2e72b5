"""Delivery: records travel from the caller's thread to the gateway without blocking it.

Callers append to an in-memory deque (no lock, no I/O). One background thread runs an asyncio
loop that builds the records, sends them over a keep-alive connection pool with several requests
in flight, and moves to the SQLite spool whatever cannot be delivered now: records the gateway
did not accept yet, records waiting longer than ``SPILL_AFTER`` seconds, everything while the
gateway is down or not configured. The spool is drained, oldest first, once the gateway answers.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import email.utils
import logging
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context

from ._metrics import EXPORT_OUTCOMES
from ._otel_internals import suppressed
from ._records import encode
from ._relay import Relay
from ._selflog import log_once
from ._settings import Settings
from ._spool import Spool
from ._transport import HttpPool, Transport, TransportError, within

logger = logging.getLogger(__name__)

#: Builds a record payload from what the caller handed over (a span, or a ready payload).
Builder = Callable[[Any], dict[str, Any]]
#: Receives each record's body as it is built (the testing capture).
Listener = Callable[[bytes], None]

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
#: Seconds between two hand-overs to the relay while records keep coming (one write for many).
RELAY_PAUSE = 0.02
#: Delivered spooled records deleted in one transaction (at least every ``TICK``).
ACK_BATCH = 256
#: Seconds between two looks at the spool and at records in flight.
TICK = 0.25
FIRST_BACKOFF = 0.2
MAX_RETRY_AFTER = 300.0


@dataclasses.dataclass
class _Unit:
    """Records sent in one request (one record, or a batch)."""

    records: list[tuple[str, bytes]]
    fresh: int  # how many of them count towards flushes (the rest came from the spool)
    started: float
    spooled: bool = False
    single: bool = False


class _Marker:
    """A flush request travelling through the queue behind the records it waits for."""

    __slots__ = ("done", "flushed", "target", "timeout")

    def __init__(self, timeout: float) -> None:
        self.done = threading.Event()
        self.flushed = True
        self.target = -1
        self.timeout = timeout

    def answer(self, flushed: bool) -> None:
        """The relay's answer (``False``: its records may not be delivered or spooled)."""
        self.flushed = flushed
        self.done.set()


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


class Delivery:
    """The queue, the sender thread and the spool of one process."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool | None = None,
        *,
        relay: bool | None = None,
        transport: Callable[[Settings], Transport] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``relay``: a relay process builds and sends the records (``settings.relay`` by default,
        resolved by ``configure()``); ``transport``: makes the sender's connection to the gateway (an
        ``HttpPool`` by default); ``clock``: the monotonic clock of the sender's timing."""
        self.settings = settings
        #: Whether the records go through a relay process (else this process sends them): decided
        #: here, once, and kept by forked children (each starts a relay of its own).
        self.relayed = bool(settings.relay if relay is None else relay) and bool(settings.openapi_host)
        self._transport = transport or _http_pool
        self._clock = clock
        self.spool = spool if spool is not None else Spool(settings.spool_dir)
        self._held_spool = self.spool  # the spool held still across a fork()
        self.listeners: list[Listener] = []
        self._host = settings.openapi_host
        self._slots = _in_flight(settings)
        self._hard_limit = settings.queue_size
        self._reset()
        ref = weakref.ref(self)
        atexit.register(_call_weak, ref, "_at_exit")
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(
                before=lambda: _call_weak(ref, "_before_fork"),
                after_in_parent=lambda: _call_weak(ref, "_after_fork_in_parent"),
                after_in_child=lambda: _call_weak(ref, "_after_fork"),
            )

    def _reset(self) -> None:
        self._queue: deque[tuple[Builder, Any, float] | _Marker] = deque()
        # Flush markers in the queue: counted, as other threads append while the sender reads.
        self._marker_lock = threading.Lock()
        self._markers_queued = 0
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._relay: Relay | None = None
        # Hand-overs to the relay, from the sender thread or an event loop's thread, one at a time.
        self._hand_lock = threading.Lock()
        self._handing = False  # one is due on an event loop (since _handing_since)
        self._handing_since = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._idle = False
        self._running = False
        self._stopping = False
        self._deadline = 0.0
        self._hard_deadline = 0.0
        self._closed = False
        # Owned by the sender thread:
        self._dispatched = 0
        self._resolved = 0
        self._markers: list[_Marker] = []
        self._inflight: dict[int, _Unit] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._claimed: deque[tuple[str, bytes]] = deque()
        self._spool_empty = False
        self._spool_looked = 0.0
        self._acked: list[str] = []
        self._acked_since = 0.0
        self._http: Transport | None = None
        #: What became of this process's records, by ``outcome`` (the adapter's own metrics).
        self.exported = dict.fromkeys(EXPORT_OUTCOMES, 0)
        self.outage = Outage(self.settings.max_backoff, self._clock)

    def exported_counts(self) -> dict[str, int]:
        """What became of this process's records so far, its relay's included."""
        counts = dict(self.exported)
        relay = self._relay
        if relay is not None:
            _add_counts(counts, relay.exported)
        return counts

    # -- the caller's side -------------------------------------------------------------

    def submit(self, build: Builder, item: Any) -> None:
        """Queue a record for delivery; never blocks on the network."""
        queue = self._queue
        if self._running and len(queue) < self._hard_limit:
            queue.append((build, item, self._clock()))
            # With a relay, a hand-over already due on an event loop takes this record too.
            if self._relay is not None and (self._handing or self._hand_over_soon()):
                return
            if self._idle:
                self._wake_sender()
            return
        if self._thread is None and not self._closed:
            self._start()
            if self._running:
                queue.append((build, item, self._clock()))
                return
        self._spool_overflow(build, item)

    def _hand_over_soon(self) -> bool:
        """On an event loop's thread, with a relay: hand the queue over from that loop in
        ``RELAY_PAUSE`` seconds (``True``), rather than from the sender thread.

        Why: a second thread that takes the GIL every few milliseconds to hand records over costs an
        app serving requests under load more than the same work done on its own event loop, between
        requests (``benchmarks/results/``).
        """
        loop = asyncio._get_running_loop()
        if loop is None:
            return False
        self._handing = True
        self._handing_since = self._clock()
        try:
            loop.call_later(RELAY_PAUSE, self._hand_over_from_loop)
        except RuntimeError:  # the loop is closing
            self._handing = False
            return False
        return True

    def _hand_over_from_loop(self) -> None:
        self._handing = False
        relay = self._relay
        done = False
        if relay is not None and self._hand_lock.acquire(blocking=False):
            try:
                done = self._hand_over(relay, wait=False)[1]
            except (OSError, ValueError):
                pass  # the relay is gone: the sender finds out, and takes the queue back
            finally:
                self._hand_lock.release()
        if not done:  # a flush marker, a full pipe, the sender handing over, or no relay: its turn
            self._wake_sender()

    def _spool_overflow(self, build: Builder, item: Any) -> None:
        # The sender falls behind the callers: keep memory bounded by writing this one to disk.
        try:
            record = self._build(build, item)
            if record is not None:
                self.spool.put([record])
                self._spool_empty = False
                self.exported["spooled"] += 1
        except Exception as exc:
            log_once("spill", "could not spool a record: %r", exc, level=logging.ERROR)
            self.exported["dropped"] += 1

    def force_flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far is delivered, dead-lettered or spooled."""
        if self._thread is None or not self._thread.is_alive():
            return not self._queue
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        marker = _Marker(timeout)
        with self._marker_lock:
            self._markers_queued += 1
            self._queue.append(marker)
        self._wake_sender()
        return marker.done.wait(timeout) and marker.flushed

    def shutdown(self, timeout: float | None = None) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, spool the rest, stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._running = False
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        thread = self._thread
        if thread is not None and thread.is_alive():
            now = self._clock()
            self._deadline = now + timeout
            self._hard_deadline = now + max(timeout, self.settings.drain_on_exit)
            self.outage.retry_now()  # exit asks the gateway once more, at once
            self._stopping = True
            self._wake_sender()
            thread.join(self._hard_deadline - now + 2.0)
        self._spool_what_remains()
        self.spool.close()

    def resume(self) -> None:
        """Start delivering now when an earlier process left records in the spool."""
        if not self._host or not self.spool.path.exists():
            return
        try:
            self.spool.release_dead_owners()
            waiting = self.spool.counts()[0]
        except Exception as exc:
            log_once("spool-read", "gateway-otel: could not read the spool: %r", exc, level=logging.ERROR)
            return
        if waiting:
            self._start()

    def replay(self, timeout: float) -> bool:
        """Deliver the spool now (the sender drains it), for up to ``timeout`` seconds; ``True`` when emptied."""
        self._start()
        deadline = self._clock() + timeout
        while self._clock() < deadline:
            if self.spool.counts()[0] == 0:
                break
            time.sleep(0.1)
        self.shutdown()
        return self.spool.counts()[0] == 0

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._closed:
                return
            ready = threading.Event()
            thread = threading.Thread(
                target=self._thread_main, args=(ready,), name="gateway-otel-delivery", daemon=True
            )
            try:
                thread.start()
            except RuntimeError:  # interpreter shutting down: no new threads
                self._closed = True
                return
            self._thread = thread
            self._running = ready.wait(5.0)

    def _wake_sender(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        self._idle = False
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(wake.set)

    def _at_exit(self) -> None:
        self.shutdown()

    def _before_fork(self) -> None:
        self._held_spool = self.spool
        self._held_spool.hold_for_fork()

    def _after_fork_in_parent(self) -> None:
        self._held_spool.release_after_fork()

    def _after_fork(self) -> None:
        # The parent delivers what it queued; the child starts empty, with fresh threads and locks.
        if self._relay is not None:
            self._relay.abandon()  # the parent's: its input must end when the parent's does
        self._reset()
        self.spool = Spool(self.spool.directory)

    # -- the sender thread -------------------------------------------------------------

    def _thread_main(self, ready: threading.Event) -> None:
        # Our own requests must not be traced: that would make spans, which make records, ...
        otel_context.attach(suppressed())
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._wake = asyncio.Event()
        ready.set()
        try:
            relay = Relay.start(self.settings, self._spool_while_relay_starts) if self.relayed else None
            if relay is not None and self.settings.relay is None:
                logger.info(
                    "gateway-otel: a relay process (pid %d) delivers this service's records; "
                    "GATEWAY_OTEL_RELAY=0 keeps delivery in this process",
                    relay.process.pid,
                )
            if relay is None or not loop.run_until_complete(self._relay_run(relay)):
                loop.run_until_complete(self._run())
        except Exception as exc:
            logger.exception("gateway-otel delivery stopped: %r", exc)
        finally:
            self._running = False
            self._loop = None
            loop.close()
            self._spool_what_remains()

    async def _run(self) -> None:
        wake = self._loop_event()
        pool = self._transport(self.settings)
        self._http = pool
        tasks = self._tasks
        try:
            while True:
                now = self._clock()
                if self._stopping and (now >= self._deadline or self._finished()):
                    break
                try:
                    lingering = self._take_queue(now)
                    self._drain_spool(now)
                    self._write_ahead_in_flight(now)
                    self._flush_acks(now)
                    self._resolve_markers()
                except Exception as exc:
                    # A fault in this loop's own bookkeeping must not stop delivery for the process's
                    # life: what it left in the queue and the spool is taken again at the next tick.
                    log_once("sender", "gateway-otel: delivery hit an error, going on: %r", exc, level=logging.ERROR)
                    lingering = TICK
                if lingering is None and self._queue and self._free_slots() > 0 and self._healthy(now):
                    await asyncio.sleep(0)  # let the requests just started run, then take more
                    continue
                wake.clear()
                self._idle = not self._queue
                wait = TICK if lingering is None else min(TICK, lingering)
                with contextlib.suppress(asyncio.TimeoutError):
                    await within(wake.wait(), wait)
                self._idle = False
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await pool.aclose()
        self._flush_acks(None)
        self._spool_what_remains()

    async def _relay_run(self, relay: Relay) -> bool:
        """Hand the queue over to the relay process; ``False`` when it is gone (delivery goes on here)."""
        wake = self._loop_event()
        self._relay = relay
        while relay.alive():
            handed = 0
            # An event loop due to hand the queue over does it, unless a flush waits or exit has come
            # (or the loop is busy or gone: a hand-over due for longer than TICK has not happened;
            # records then wait in the app at most twice TICK, well within the second kill -9 allows).
            if not self._handing or self._stopping or self._markers_queued or self._stale_handing():
                try:
                    with self._hand_lock:
                        handed = self._hand_over(relay, wait=True)[0]
                        if self._stopping:
                            relay.close(max(0.0, self._hard_deadline - self._clock()))
                            return True
                except (OSError, ValueError):
                    break
            wake.clear()
            # While records come, look again after RELAY_PAUSE, unasked: the app's threads then never
            # signal this one (a flush still does). Idle, wait for the next record.
            if not handed:
                self._idle = True
                self._idle = not self._queue  # one queued before the flag was up asked for no wake
            with contextlib.suppress(asyncio.TimeoutError):
                await within(wake.wait(), TICK if self._idle or self._handing else RELAY_PAUSE)
            self._idle = False
        log_once("relay", "gateway-otel: the relay stopped; delivering in this process", level=logging.ERROR)
        with self._hand_lock:
            self._queue.extendleft(reversed(relay.take_back()))
            relay.abandon()
            self._relay = None
            _add_counts(self.exported, relay.exported)  # what it had done stays counted
        return False

    def _spool_while_relay_starts(self) -> None:
        """Spool the records at the head of the queue that have waited longer than ``SPILL_AFTER``
        (while the relay comes up, as ``_take_queue`` does while the gateway is away), so that a
        ``kill -9`` loses nothing older; the relay delivers the spool."""
        queue, now = self._queue, self._clock()
        records: list[tuple[str, bytes]] = []
        while queue and not isinstance(queue[0], _Marker) and now - queue[0][2] > SPILL_AFTER:
            records.extend(self._pop_records(1))
        if records:
            self._spool_put(records, error="the relay is starting")
            self._dispatched += len(records)
            self._resolved += len(records)

    def _stale_handing(self) -> bool:
        if self._clock() - self._handing_since > TICK:
            self._handing = False
            return True
        return False

    def _hand_over(self, relay: Relay, *, wait: bool) -> tuple[int, bool]:
        """Write the queue to the relay, flush requests in their place: (items taken, all written).
        Without ``wait`` (on an event loop) it stops at a flush request, and keeps what the pipe does
        not take for the next call. What a failed write held goes back to the queue (``OSError``)."""
        if not relay.drain(wait):
            return 0, False
        queue = self._queue
        build_here = bool(self.listeners)  # listeners see each record as it is built: here
        entries: list[tuple[Builder, Any, float]] = []
        taken = 0
        try:
            while queue:
                head = queue[0]
                if isinstance(head, _Marker):
                    if not wait:
                        break
                    queue.popleft()
                    self._marker_taken()
                    relay.send(entries, self._build, build_here=build_here)
                    entries = []
                    relay.flush(head.timeout, head.answer)
                else:
                    entries.append(queue.popleft())  # type: ignore[arg-type]
                taken += 1
            written = relay.send(entries, self._build, build_here=build_here, wait=wait)
        except (OSError, ValueError):
            queue.extendleft(reversed(entries))
            raise
        return taken, written and not (queue and isinstance(queue[0], _Marker))

    def _finished(self) -> bool:
        """Nothing left to deliver: the queue, the requests in flight and the spool are empty."""
        return not self._queue and not self._inflight and not self._claimed and (self._spool_empty or not self._host)

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
        queue, settings = self._queue, self.settings
        batch_size = settings.batch_size if settings.batch else 1
        to_spool: list[tuple[str, bytes]] = []
        lingering: float | None = None
        while queue:
            healthy = self._healthy(now)
            head = queue[0]
            if isinstance(head, _Marker):
                queue.popleft()
                self._marker_taken()
                head.target = self._dispatched  # counts the records spooled in this pass too
                self._markers.append(head)
                continue
            too_old = now - head[2] > SPILL_AFTER
            if settings.batch and healthy and not self._stopping and len(queue) < batch_size:
                due = head[2] + settings.batch_linger - now
                if due > 0 and not self._markers_queued:  # no flush waits behind the records
                    lingering = due  # a fuller batch in a moment is cheaper for both sides
                    break
            if healthy and self._free_slots() > 0:
                records = self._pop_records(batch_size)
                if records:
                    self._dispatch(records, fresh=len(records))
            elif not healthy or too_old or (self._stopping and now >= self._deadline):
                records = self._pop_records(10_000)
                to_spool.extend(records)
                self._dispatched += len(records)
            else:
                break
        if to_spool:
            self._spool_put(to_spool, error="gateway unavailable" if self._host else "no OPENAPI_HOST")
            self._resolved += len(to_spool)
        return lingering

    def _marker_taken(self) -> None:
        """A flush marker left the queue (taken by the sender, or released at exit)."""
        with self._marker_lock:
            self._markers_queued -= 1

    def _pop_records(self, limit: int) -> list[tuple[str, bytes]]:
        queue = self._queue
        records: list[tuple[str, bytes]] = []
        while queue and len(records) < limit and not isinstance(queue[0], _Marker):
            build, item, _ = queue.popleft()  # type: ignore[misc]
            record = self._build(build, item)
            if record is None:  # could not be built: counted as resolved, logged
                self._dispatched += 1
                self._resolved += 1
            else:
                records.append(record)
        return records

    def _build(self, build: Builder, item: Any) -> tuple[str, bytes] | None:
        try:
            payload = build(item)
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

    def _dispatch(
        self, records: list[tuple[str, bytes]], fresh: int, *, single: bool = False, spooled: bool | None = None
    ) -> None:
        single = single or not self.settings.batch
        unit = _Unit(records, fresh, self._clock(), spooled=fresh == 0 if spooled is None else spooled, single=single)
        self._dispatched += fresh
        self._inflight[id(unit)] = unit
        if self._http is None:
            raise RuntimeError("gateway-otel: records dispatched before the sender's connection pool exists")
        task = asyncio.ensure_future(self._send(self._http, unit))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _drain_spool(self, now: float) -> None:
        """Send spooled records, oldest first, in the slots fresh records leave free."""
        if self._queue or not self._healthy(now):
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
            self._spool_put(unit.records, error="in flight", claimed=True)
            unit.spooled = True

    def _resolve_markers(self) -> None:
        if self._markers:
            waiting = []
            for marker in self._markers:
                if self._resolved >= marker.target:
                    marker.done.set()
                else:
                    waiting.append(marker)
            self._markers = waiting

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
            self._resolve_markers()
            self._loop_event().set()

    def _delivered(self, unit: _Unit) -> None:
        self.exported["delivered"] += len(unit.records)
        self.outage.recovered()
        if unit.spooled:
            if not self._acked:
                self._acked_since = self._clock()
            self._acked.extend(uuid for uuid, _ in unit.records)
        if self._stopping:  # exit waits while the gateway takes records, up to the hard deadline
            self._deadline = min(self._hard_deadline, self._clock() + self.settings.shutdown_timeout)

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
        self._dispatched -= unit.fresh
        unit.fresh = 0

    def _spool_put(
        self, records: list[tuple[str, bytes]], *, error: str, delay: float = 0.0, claimed: bool = False
    ) -> None:
        put = lambda: self.spool.put(records, error=error, delay=delay, claimed=claimed)  # noqa: E731
        if self._spool_call("put", put, refills=True):
            if not claimed:  # claimed: written ahead while the records are still being sent
                self.exported["spooled"] += len(records)
        else:
            self.exported["dropped"] += len(records)

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

    def _loop_event(self) -> asyncio.Event:
        """The sender loop's wake-up event (it exists while the sender thread runs its loop)."""
        if self._wake is None:
            raise RuntimeError("gateway-otel: the sender's loop is not running")
        return self._wake

    def _spool_what_remains(self) -> None:
        """Write what is still in memory to the spool (at exit, or when the sender stopped)."""
        records: list[tuple[str, bytes]] = []
        for unit in list(self._inflight.values()):
            if not unit.spooled:
                records.extend(unit.records)
                unit.spooled = True
        while self._queue:
            head = self._queue.popleft()
            if isinstance(head, _Marker):
                self._marker_taken()
                head.done.set()
                continue
            record = self._build(head[0], head[1])
            if record is not None:
                records.append(record)
        if records:
            self._spool_put(records, error="not delivered before exit")
        if self._claimed:
            uuids = [uuid for uuid, _ in self._claimed]
            self._spool_call(
                "release", lambda: self.spool.release(uuids, error="not sent before exit", delay=0.0), refills=True
            )
            self._claimed.clear()
        for marker in self._markers:
            marker.done.set()
        self._markers = []


def _in_flight(settings: Settings) -> int:
    """Requests in flight at most: several small ones hide the round trip; big batches only contend
    for the gateway's database, so fewer of them are in flight."""
    return settings.batch_in_flight if settings.batch else settings.max_in_flight


def _http_pool(settings: Settings) -> HttpPool:
    """The sender's connections to the gateway, one per request in flight, kept alive."""
    return HttpPool(
        settings.openapi_host or "http://127.0.0.1",
        size=_in_flight(settings),
        timeout=settings.timeout,
        config=settings.http,
        token=settings.report_token,
    )


def _add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for outcome, count in counts.items():
        into[outcome] = into.get(outcome, 0) + count


def _call_weak(ref: weakref.ref[Delivery], method: str) -> None:
    target = ref()
    if target is not None:
        getattr(target, method)()
