"""Scenarios of an app delivering through its relay: python relay_scenarios.py SCENARIO RID [ARG].

Each scenario is a function below; what it prints is read by ``tests/test_relay.py``. The
environment turns the relay on (``GATEWAY_OTEL_RELAY=1``) and names the gateway and the spool.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from opentelemetry import trace

import gateway_otel
from gateway_otel import operation_log, submit_log, trace_id_context
from gateway_otel._delivery import Delivery
from gateway_otel._handover import RelayHandOver
from gateway_otel._pipeline import current_pipeline
from gateway_otel.testing import eventually

scenario, rid = sys.argv[1], sys.argv[2]
argument = sys.argv[3] if len(sys.argv) > 3 else ""


@operation_log(is_cost_log=True)
def bill(i: int) -> int:
    return i


@operation_log(is_cost_log=True)
async def abill(i: int, payload: str = "") -> int:
    return i


trace_id_context.set(rid)
delivery = current_pipeline().delivery


def relay_pid() -> int | None:
    relay = delivery.relay
    return relay.process.pid if relay is not None else None


def handed_over() -> None:
    assert eventually(lambda: not delivery.queue.entries and relay_pid() is not None, timeout=30)


def flush() -> None:
    assert gateway_otel.force_flush(20)


# -- plain calls -------------------------------------------------------------------------------


def delivers() -> None:
    for i in range(300):
        bill(i)
    submit_log({"opType": "by-hand"})  # a record built in the app, delivered by the relay
    flush()
    print(os.getpid(), relay_pid(), delivery.sender.http is None, flush=True)


def listeners() -> None:
    seen: list[bytes] = []
    delivery.queue.listeners.append(seen.append)
    for i in range(50):
        bill(i)
    flush()
    print(len(seen), relay_pid() is not None, flush=True)


def exits_without_flush() -> None:
    for i in range(200):
        bill(i)  # no flush: exit hands the rest over and the relay delivers it


def killed_after_hand_over() -> None:
    for i in range(100):
        bill(i)
    handed_over()
    print("handed", relay_pid(), flush=True)
    sys.stdin.readline()


def killed_while_the_relay_starts() -> None:
    sys.executable = argument  # an interpreter that takes seconds to come up (a loaded machine)
    for i in range(50):
        bill(i)
    # Older than SPILL_AFTER: spooled while the relay still comes up.
    assert eventually(lambda: delivery.spool.counts()[0] == 100, timeout=20)
    print("waited", relay_pid(), flush=True)
    sys.stdin.readline()


def relay_dies() -> None:
    for i in range(20):
        bill(i)
    flush()
    pid = relay_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    def relay_gone() -> bool:
        bill(-1)  # wakes the sender, which finds its relay gone
        return delivery.relay is None

    assert eventually(relay_gone, timeout=20)
    for i in range(30):
        bill(100 + i)
    flush()
    print(delivery.relay is None, delivery.sender.http is not None, flush=True)


def forked() -> None:
    for i in range(10):
        bill(i)
    flush()
    parent_relay = relay_pid()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)  # the test reads the parent's output to its end: not the child's
        os.dup2(quiet, 2)
        inherited = delivery.relay
        for i in range(10):
            bill(100 + i)
        flush()
        os.write(write_end, f"{inherited} {relay_pid()}\n".encode())
        os.close(write_end)
        time.sleep(30)  # alive while the parent exits (the test kills it)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        print(parent_relay, child, answer.readline().strip(), flush=True)


# -- on an event loop --------------------------------------------------------------------------

hands: set[str] = set()  # the threads that handed records over


def watch_hand_overs() -> None:
    hand_over = RelayHandOver.hand_over

    def watched(self: RelayHandOver, *, wait: bool) -> tuple[int, bool]:
        taken, written = hand_over(self, wait=wait)
        if taken:
            hands.add(threading.current_thread().name)
        return taken, written

    RelayHandOver.hand_over = watched  # type: ignore[method-assign]
    bill(-1)  # starts the sender thread and its relay
    handed_over()
    hands.clear()


def loop_hands_over() -> None:
    watch_hand_overs()

    async def main() -> None:
        for i in range(300):
            await abill(i)
            if i % 50 == 0:
                await asyncio.sleep(0.05)  # the loop runs its hand-over
        await asyncio.sleep(0.1)

    asyncio.run(main())
    print(" ".join(sorted(hands)), flush=True)  # before the flush, which the sender thread hands over
    flush()


def relay_stalled() -> None:
    watch_hand_overs()
    pid = relay_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it reads nothing more: the pipe to it fills up

    async def main() -> int:
        calls = 0
        began = time.monotonic()
        while time.monotonic() - began < 3.0:
            await abill(calls, "x" * 20_000)  # 40 kB of records a call: the pipe's megabyte is full in 30
            calls += 1
            await asyncio.sleep(0.005)
        return calls

    calls = asyncio.run(main())
    os.kill(pid, signal.SIGCONT)
    assert gateway_otel.force_flush(30)
    print(calls, flush=True)


def loop_blocked() -> None:
    watch_hand_overs()

    async def main() -> tuple[int, str]:
        await abill(1)
        time.sleep(1.0)  # noqa: ASYNC251 - the loop blocked on purpose: the hand-over it was due to run cannot
        return len(delivery.queue.entries), " ".join(sorted(hands))

    left, by = asyncio.run(main())
    print(left, by, flush=True)
    flush()


def one_row_for_both() -> None:
    watch_hand_overs()
    rows: list[int] = []
    relay = delivery.relay
    assert relay is not None
    write = relay._write

    def recorded(data: bytes | memoryview, entries: list[Any], wait: bool) -> bool:
        line = bytes(data)
        if line.startswith(b"[["):  # records, not a flush request
            rows.extend(row[0] for row in orjson.loads(line))
        return write(data, entries, wait)

    relay._write = recorded  # type: ignore[method-assign]

    @operation_log(op_type="slow")
    async def slow() -> str:
        await asyncio.sleep(0.2)  # the loop hands its in record over while it runs
        return "done"

    @operation_log(op_type="big")
    async def big() -> int:
        trace.get_current_span().set_attribute("x.big", 2**70)  # JSON cannot hold it: built in the app
        return 1

    async def main() -> None:
        for i in range(50):
            await abill(i, "p")
        await asyncio.sleep(0.1)
        await slow()
        await asyncio.sleep(0.1)
        await big()
        await asyncio.sleep(0.1)

    asyncio.run(main())
    flush()
    print(" ".join(map(str, rows)), flush=True)


SCENARIOS: dict[str, Callable[[], None]] = {
    function.__name__: function
    for function in (
        delivers,
        listeners,
        exits_without_flush,
        killed_after_hand_over,
        killed_while_the_relay_starts,
        relay_dies,
        forked,
        loop_hands_over,
        relay_stalled,
        loop_blocked,
        one_row_for_both,
    )
}
assert isinstance(delivery, Delivery)
SCENARIOS[scenario]()
