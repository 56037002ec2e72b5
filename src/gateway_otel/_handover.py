"""Delivery through the relay: the queue is written to the relay process's pipe (``_relay``).

The delivery thread hands the queue over while records come, every ``RELAY_PAUSE`` seconds,
unasked (the callers' threads then never signal it; a flush request does). A caller on an event
loop's thread has its own loop hand the queue over instead, ``RELAY_PAUSE`` after its record:
a second thread that takes the GIL every few milliseconds costs an app serving requests under load
more than the same work done on its own event loop, between requests (``benchmarks/results/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from ._queue import Entry, FlushRequest, RecordQueue
from ._relay import Relay
from ._selflog import log_once
from ._sender import TICK, Exit
from ._transport import within

__all__ = ["RELAY_PAUSE", "RelayHandOver"]

#: Seconds between two hand-overs to the relay while records keep coming (one write for many).
RELAY_PAUSE = 0.02


class RelayHandOver:
    """The relay backend of one process's delivery, from the relay's start to its end."""

    def __init__(self, relay: Relay, queue: RecordQueue, exit: Exit, clock: Callable[[], float]) -> None:
        self.relay = relay
        self.queue = queue
        self.exit = exit
        self._clock = clock
        # Hand-overs, from the delivery thread or an event loop's thread, one at a time.
        self._lock = threading.Lock()
        self._handing = False  # one is due on an event loop (since _handing_since)
        self._handing_since = 0.0

    async def run(self, wake: asyncio.Event) -> bool:
        """Hand the queue over until exit (then close the relay's input and wait for it, ``True``) or
        the relay's death (``False``: the queue holds what it had not taken, delivered elsewhere)."""
        relay, queue, exit = self.relay, self.queue, self.exit
        queue.taken_soon = self.taken_soon
        try:
            while relay.alive():
                handed = 0
                # An event loop due to hand the queue over does it, unless a flush waits or exit has
                # come (or the loop is busy or gone: a hand-over due for longer than TICK has not
                # happened; records then wait in the app at most twice TICK, well within the second
                # kill -9 allows).
                if not self._handing or exit.asked or queue.flushes_queued or self._stale_handing():
                    try:
                        with self._lock:
                            handed = self.hand_over(wait=True)[0]
                            if exit.asked:
                                relay.close(max(0.0, exit.hard_deadline - self._clock()))
                                return True
                    except (OSError, ValueError):
                        break
                wake.clear()
                # While records come, look again after RELAY_PAUSE, unasked. Idle, wait for the next record.
                if not handed:
                    queue.idle = True
                    queue.idle = not queue.entries  # one queued before the flag was up asked for no wake
                with contextlib.suppress(asyncio.TimeoutError):
                    await within(wake.wait(), TICK if queue.idle or self._handing else RELAY_PAUSE)
                queue.idle = False
        finally:
            queue.taken_soon = None
        log_once("relay", "gateway-otel: the relay stopped; delivering in this process", level=logging.ERROR)
        with self._lock:
            queue.entries.extendleft(reversed(relay.take_back()))
            relay.abandon()
        return False

    def taken_soon(self) -> bool:
        """On an event loop's thread: hand the queue over from that loop in ``RELAY_PAUSE`` seconds
        (``True``, also when one is due already), rather than from the delivery thread."""
        if self._handing:
            return True
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
        done = False
        if self._lock.acquire(blocking=False):
            try:
                done = self.hand_over(wait=False)[1]
            except (OSError, ValueError):
                pass  # the relay is gone: the delivery thread finds out, and takes the queue back
            finally:
                self._lock.release()
        if not done:  # a flush request, a full pipe, the delivery thread handing over: its turn
            self.queue.wake()

    def _stale_handing(self) -> bool:
        if self._clock() - self._handing_since > TICK:
            self._handing = False
            return True
        return False

    def hand_over(self, *, wait: bool) -> tuple[int, bool]:
        """Write the queue to the relay, flush requests in their place: (entries taken, all written).
        Without ``wait`` (on an event loop) it stops at a flush request, and keeps what the pipe does
        not take for the next call. What a failed write held goes back to the queue (``OSError``)."""
        relay, queue = self.relay, self.queue
        if not relay.drain(wait):
            return 0, False
        entries = queue.entries
        build, build_here = queue.build, bool(queue.listeners)  # listeners see each record built: here
        taken: list[Entry] = []
        count = 0
        try:
            while entries:
                head = entries[0]
                if isinstance(head, FlushRequest):
                    if not wait:
                        break
                    entries.popleft()
                    queue.flush_taken()
                    relay.send(taken, build, build_here=build_here)
                    taken = []
                    relay.flush(head.timeout, head.answer)
                else:
                    taken.append(entries.popleft())  # type: ignore[arg-type]
                count += 1
            written = relay.send(taken, build, build_here=build_here, wait=wait)
        except (OSError, ValueError):
            entries.extendleft(reversed(taken))
            raise
        return count, written and not queue.head_is_flush()
