"""Delivery: records travel from the caller's thread to the gateway without blocking it.

Three parts, each with one job: the callers' queue (``_queue``), and one of two backends on a
delivery thread of its own, chosen once when the ``Delivery`` is made: the sender in this process
(``_sender``: retries, backoff, spool, acknowledgements) or the hand-over to a relay process
(``_handover``), which falls back to the sender when the relay dies. This module starts and stops
them: the thread and its event loop, flushes, exit, ``fork()``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context

from ._handover import RelayHandOver
from ._metrics import EXPORT_OUTCOMES
from ._otel_internals import suppressed
from ._queue import Builder, RecordQueue
from ._relay import Relay
from ._selflog import log_once
from ._sender import Exit, Sender, http_pool
from ._settings import Settings
from ._spool import Spool
from ._transport import Transport

__all__ = ["Delivery"]

logger = logging.getLogger(__name__)


class Delivery:
    """One process's delivery: its queue, its delivery thread and backend, its spool."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool | None = None,
        *,
        relay: bool | None = None,
        transport: Callable[[Settings], Transport] = http_pool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``relay``: a relay process builds and sends the records (``settings.relay`` by default,
        resolved by ``configure()``); ``transport``: makes the sender's connection to the gateway (an
        ``HttpPool`` by default); ``clock``: the monotonic clock of the sender's timing."""
        self.settings = settings
        #: Whether the records go through a relay process (else this process sends them): decided
        #: here, once, and kept by forked children (each starts a relay of its own).
        self.relayed = bool(settings.relay if relay is None else relay) and bool(settings.openapi_host)
        self._transport = transport
        self._clock = clock
        self.spool = spool if spool is not None else Spool(settings.spool_dir)
        self._held_spool = self.spool  # the spool held still across a fork()
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
        #: What became of this process's records, by ``outcome`` (the adapter's own metrics).
        self.exported = dict.fromkeys(EXPORT_OUTCOMES, 0)
        self.queue = RecordQueue(self.settings.queue_size, self.exported, self._clock)
        self.queue.wake = self._wake_thread
        self._exit = Exit()
        self.sender = Sender(self.settings, self.queue, self.spool, self._exit, self._transport, self._clock)
        #: The relay backend while a relay delivers this process's records.
        self.hand_over: RelayHandOver | None = None
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._running = False
        self._closed = False

    @property
    def relay(self) -> Relay | None:
        """The relay process delivering this process's records, if any."""
        hand_over = self.hand_over
        return hand_over.relay if hand_over is not None else None

    def exported_counts(self) -> dict[str, int]:
        """What became of this process's records so far, its relay's included."""
        counts = dict(self.exported)
        relay = self.relay
        if relay is not None:
            _add_counts(counts, relay.exported)
        return counts

    def submit(self, build: Builder, item: Any) -> None:
        """Queue a record for delivery; never blocks on the network."""
        if self._running and self.queue.put(build, item):
            return
        if self._thread is None and not self._closed:
            self._start()
            if self._running and self.queue.put(build, item):
                return
        # The queue is full (delivery falls behind the callers), or delivery stopped: to disk.
        record = self.queue.build(build, item)
        if record is not None:
            self.sender.spool_now([record], error="the queue is full")

    def force_flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far is delivered, dead-lettered or spooled."""
        if self._thread is None or not self._thread.is_alive():
            return not self.queue.entries
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        request = self.queue.request_flush(timeout)
        return request.done.wait(timeout) and request.flushed

    def shutdown(self, timeout: float | None = None) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, spool the rest, stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._running = False
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        thread = self._thread
        if thread is not None and thread.is_alive():
            now, exit = self._clock(), self._exit
            exit.deadline = now + timeout
            exit.hard_deadline = now + max(timeout, self.settings.drain_on_exit)
            self.sender.outage.retry_now()  # exit asks the gateway once more, at once
            exit.asked = True
            self._wake_thread()
            thread.join(exit.hard_deadline - now + 2.0)
        self.sender.spool_what_remains()
        self.spool.close()

    def resume(self) -> None:
        """Start delivering now when an earlier process left records in the spool."""
        if not self.settings.openapi_host or not self.spool.path.exists():
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

    def _wake_thread(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        self.queue.idle = False
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(wake.set)

    def _thread_main(self, ready: threading.Event) -> None:
        # Our own requests must not be traced: that would make spans, which make records, ...
        otel_context.attach(suppressed())
        loop = asyncio.new_event_loop()
        wake = asyncio.Event()
        self._loop, self._wake = loop, wake
        ready.set()
        try:
            relay = self._start_relay() if self.relayed else None
            if relay is None or not loop.run_until_complete(self._relay_run(relay, wake)):
                loop.run_until_complete(self.sender.run(wake))
        except Exception as exc:
            logger.exception("gateway-otel delivery stopped: %r", exc)
        finally:
            self._running = False
            self._loop = None
            loop.close()
            self.sender.spool_what_remains()

    def _start_relay(self) -> Relay | None:
        # While the relay comes up, records that waited too long are spooled (the relay delivers them).
        relay = Relay.start(self.settings, lambda: self.sender.spool_waited("the relay is starting"))
        if relay is not None and self.settings.relay is None:
            logger.info(
                "gateway-otel: a relay process (pid %d) delivers this service's records; "
                "GATEWAY_OTEL_RELAY=0 keeps delivery in this process",
                relay.process.pid,
            )
        return relay

    async def _relay_run(self, relay: Relay, wake: asyncio.Event) -> bool:
        """The relay delivers until exit (``True``) or its death (``False``: the sender takes over)."""
        self.hand_over = hand_over = RelayHandOver(relay, self.queue, self._exit, self._clock)
        if await hand_over.run(wake):
            return True
        self.hand_over = None
        _add_counts(self.exported, relay.exported)  # what it had done stays counted
        return False

    def _at_exit(self) -> None:
        self.shutdown()

    def _before_fork(self) -> None:
        self._held_spool = self.spool
        self._held_spool.hold_for_fork()

    def _after_fork_in_parent(self) -> None:
        self._held_spool.release_after_fork()

    def _after_fork(self) -> None:
        # The parent delivers what it queued; the child starts empty, with fresh threads and locks.
        relay = self.relay
        if relay is not None:
            relay.abandon()  # the parent's: its input must end when the parent's does
        self.spool = Spool(self.spool.directory)
        self._reset()


def _add_counts(into: dict[str, int], counts: dict[str, int]) -> None:
    for outcome, count in counts.items():
        into[outcome] = into.get(outcome, 0) + count


def _call_weak(ref: weakref.ref[Delivery], method: str) -> None:
    target = ref()
    if target is not None:
        getattr(target, method)()
