"""The relay: with ``relay`` on, a helper process builds and delivers the app's records.

Each scenario runs in a process of its own (the relay is that process's child), against the
session's reference gateway.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from gateway_otel.testing import eventually

from conftest import Gateway, Script, run_script

PRELUDE = """
import os, sys, time
import gateway_otel
from gateway_otel import operation_log, submit_log, trace_id_context
from gateway_otel._pipeline import current

@operation_log(is_cost_log=True)
def bill(i):
    return i

trace_id_context.set({rid!r})
delivery = current().delivery

def relay_pid():
    relay = delivery._relay
    return relay.process.pid if relay is not None else None

def handed_over():
    deadline = time.monotonic() + 30
    while (delivery._queue or relay_pid() is None) and time.monotonic() < deadline:
        time.sleep(0.01)
"""


def _env(gateway: Gateway, spool: Path, **extra: str) -> dict[str, str]:
    return {
        "OPENAPI_HOST": gateway.url,
        "GATEWAY_OTEL_SPOOL_DIR": str(spool),
        "GATEWAY_OTEL_RELAY": "1",
        "GATEWAY_OTEL_MAX_BACKOFF": "0.5",
        **extra,
    }


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_relay_process_delivers_the_records_and_flush_waits_for_it(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"relay-{uuid.uuid4().hex}"
    code = (
        PRELUDE.format(rid=rid)
        + """
for i in range(300):
    bill(i)
submit_log({"opType": "by-hand"})  # a record built in the app, delivered by the relay
assert gateway_otel.force_flush(20)
print(os.getpid(), relay_pid(), delivery._http is None, flush=True)
"""
    )
    done = run_script(code, _env(healthy_gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    app_pid, relay_pid, no_http_here = done.stdout.split()
    assert relay_pid not in ("None", app_pid)
    assert no_http_here == "True"  # the app itself never sent a request to the gateway
    records = healthy_gateway.records(rid)
    assert len(records) == 601  # counted when flush returned: it waited for the relay
    assert len({record["uuid"] for record in records}) == 601
    assert sum(record["opType"] == "by-hand" for record in records) == 1
    assert eventually(lambda: _gone(int(relay_pid)), timeout=20)  # its input ended with the app


def test_records_built_for_listeners_are_built_in_the_app_and_delivered_by_the_relay(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-listen-{uuid.uuid4().hex}"
    code = (
        PRELUDE.format(rid=rid)
        + """
seen = []
delivery.listeners.append(seen.append)
for i in range(50):
    bill(i)
assert gateway_otel.force_flush(20)
print(len(seen), relay_pid() is not None, flush=True)
"""
    )
    done = run_script(code, _env(healthy_gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["100", "True"]
    assert healthy_gateway.count(rid) == 100


def test_the_relay_delivers_what_the_app_handed_over_after_the_app_exits(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-exit-{uuid.uuid4().hex}"
    code = (
        PRELUDE.format(rid=rid)
        + """
for i in range(200):
    bill(i)
"""
    )  # no flush: exit hands the rest over and the relay delivers it
    done = run_script(code, _env(healthy_gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    assert eventually(lambda: healthy_gateway.count(rid) >= 400, timeout=30)
    assert healthy_gateway.count(rid) == 400


def test_records_handed_to_the_relay_survive_the_app_being_killed(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"relay-kill-{uuid.uuid4().hex}"
    code = (
        PRELUDE.format(rid=rid)
        + """
for i in range(100):
    bill(i)
handed_over()
print("handed", relay_pid(), flush=True)
sys.stdin.readline()
"""
    )
    healthy_gateway.faults(report_delay=0.3)  # the records are still on their way when the app dies
    script = Script(code, _env(healthy_gateway, tmp_path))
    try:
        assert script.process.stdout is not None
        word, relay_pid = script.process.stdout.readline().split()
        assert word == "handed"
        assert healthy_gateway.count(rid) < 200
        script.process.send_signal(signal.SIGKILL)
        script.wait(10)
    finally:
        script.close()
    healthy_gateway.faults()
    assert eventually(lambda: healthy_gateway.count(rid) >= 200, timeout=30)
    records = healthy_gateway.records(rid)
    assert len({record["uuid"] for record in records}) == len(records) == 200
    assert eventually(lambda: _gone(int(relay_pid)), timeout=30)


def test_records_waiting_for_a_relay_slow_to_start_survive_the_app_being_killed(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-slow-{uuid.uuid4().hex}"
    slow = tmp_path / "slow-python"  # the relay's interpreter takes 3 s to come up (a loaded machine)
    slow.write_text(f'#!/bin/sh\nsleep 3\nexec "{sys.executable}" "$@"\n')
    slow.chmod(0o755)
    code = (
        PRELUDE.format(rid=rid)
        + f"""
sys.executable = {str(slow)!r}
for i in range(50):
    bill(i)
time.sleep(1.5)
print("waited", relay_pid(), flush=True)
sys.stdin.readline()
"""
    )
    script = Script(code, _env(healthy_gateway, tmp_path / "spool"))
    try:
        script.expect("waited None")  # killed while the relay still comes up
        script.process.send_signal(signal.SIGKILL)
        script.wait(10)
    finally:
        script.close()
    # Older than a second at the kill: in the spool, which the relay delivers once it is up.
    assert eventually(lambda: healthy_gateway.count(rid) >= 100, timeout=30)
    records = healthy_gateway.records(rid)
    assert len({record["uuid"] for record in records}) == len(records) == 100


SERVING = """
import asyncio, httpx
from fastapi import FastAPI
from gateway_otel import instrument_app

app = instrument_app(FastAPI(), exclude_path=["*"])

@app.get("/bill")
async def endpoint() -> dict:
    return {"i": bill(1)}

async def main():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        answer = await client.get("/bill", headers={"x-request-id": trace_id_context.get()})
        assert answer.status_code == 200

if os.environ["HOW"] == "serve":
    asyncio.run(main())
else:
    bill(1)
assert gateway_otel.force_flush(20)
print(relay_pid() is not None, flush=True)
"""


@pytest.mark.parametrize(
    ("setting", "how", "relayed"),
    [("", "serve", True), ("0", "serve", False), ("", "call", False), ("1", "call", True)],
)
def test_by_default_a_process_that_serves_requests_delivers_through_a_relay(
    setting: str, how: str, relayed: bool, healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-default-{uuid.uuid4().hex}"
    code = PRELUDE.format(rid=rid) + SERVING
    done = run_script(code, _env(healthy_gateway, tmp_path, GATEWAY_OTEL_RELAY=setting, HOW=how))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(relayed)]
    assert len(healthy_gateway.records(rid)) == 2


def test_when_the_relay_dies_the_app_delivers_in_its_own_process(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"relay-dies-{uuid.uuid4().hex}"
    code = (
        PRELUDE.format(rid=rid)
        + """
import signal
for i in range(20):
    bill(i)
assert gateway_otel.force_flush(20)
os.kill(relay_pid(), signal.SIGKILL)
deadline = time.monotonic() + 20
while delivery._relay is not None and time.monotonic() < deadline:
    bill(-1)  # wakes the sender, which finds its relay gone
    time.sleep(0.05)
for i in range(30):
    bill(100 + i)
assert gateway_otel.force_flush(20)
print(delivery._relay is None, delivery._http is not None, flush=True)
"""
    )
    done = run_script(code, _env(healthy_gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
    assert "the relay stopped; delivering in this process" in done.stderr
    out = {record["uuid"]: record for record in healthy_gateway.records(rid) if record["opLogType"] == "out"}
    # Every call after the relay was gone is delivered by the app; those before, by the relay.
    assert set(range(20)) | set(range(100, 130)) <= {record["response"] for record in out.values()}


def test_a_forked_child_starts_a_relay_of_its_own_and_leaves_the_parents_alone(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-fork-{uuid.uuid4().hex}"
    code = (
        PRELUDE.format(rid=rid)
        + """
for i in range(10):
    bill(i)
assert gateway_otel.force_flush(20)
parent_relay = relay_pid()
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    os.close(read_end)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)  # the test reads the parent's output to its end: not the child's
    os.dup2(quiet, 2)
    inherited = delivery._relay
    for i in range(10):
        bill(100 + i)
    assert gateway_otel.force_flush(20)
    os.write(write_end, f"{inherited} {relay_pid()}\\n".encode())
    os.close(write_end)
    time.sleep(30)  # still alive while the parent exits
    os._exit(0)
os.close(write_end)
with os.fdopen(read_end) as answer:
    print(parent_relay, child, answer.readline().strip(), flush=True)
"""
    )
    done = run_script(code, _env(healthy_gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    parent_relay, child, inherited, child_relay = done.stdout.split()
    try:
        assert inherited == "None"  # the child let go of the parent's relay
        assert child_relay not in ("None", parent_relay)
        assert healthy_gateway.count(rid) == 40
        # The parent exited: its relay's input ended, though the child (which forked with the
        # pipe open) still lives.
        assert eventually(lambda: _gone(int(parent_relay)), timeout=20)
        assert not _gone(int(child))
    finally:
        if not _gone(int(child)):
            os.kill(int(child), signal.SIGKILL)


LOOP_PRELUDE = """
import asyncio, threading

hands = set()  # the threads that handed records over
hand_over = delivery._hand_over

def watched(relay, *, wait):
    taken, written = hand_over(relay, wait=wait)
    if taken:
        hands.add(threading.current_thread().name)
    return taken, written

delivery._hand_over = watched

@operation_log(is_cost_log=True)
async def abill(i, payload=""):
    return i

bill(-1)  # starts the sender thread and its relay
handed_over()
hands.clear()
"""


def _on_a_loop(gateway: Gateway, tmp_path: Path, rid: str, body: str) -> list[str]:
    """Run ``body`` after the event-loop prelude in a process of its own; its output's words."""
    done = run_script(PRELUDE.format(rid=rid) + LOOP_PRELUDE + body, _env(gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_on_an_event_loop_records_are_handed_to_the_relay_from_the_loop_itself(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-loop-{uuid.uuid4().hex}"
    words = _on_a_loop(
        healthy_gateway,
        tmp_path,
        rid,
        """
async def main():
    for i in range(300):
        await abill(i)
        if i % 50 == 0:
            await asyncio.sleep(0.05)  # the loop runs its hand-over
    await asyncio.sleep(0.1)

asyncio.run(main())
print(" ".join(sorted(hands)), flush=True)  # before the flush, which the sender thread hands over
assert gateway_otel.force_flush(20)
""",
    )
    assert words == ["MainThread"]  # the sender thread handed nothing over
    records = healthy_gateway.records(rid)
    assert len(records) == len({record["uuid"] for record in records}) == 602


def test_a_relay_that_stops_reading_never_blocks_the_event_loop_and_loses_nothing(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-stalled-{uuid.uuid4().hex}"
    words = _on_a_loop(
        healthy_gateway,
        tmp_path,
        rid,
        """
import signal
os.kill(relay_pid(), signal.SIGSTOP)  # it reads nothing more: the pipe to it fills up

async def main():
    longest = 0.0
    began = time.monotonic()
    i = 0
    while time.monotonic() - began < 3.0:
        before = time.monotonic()
        await abill(i, "x" * 20_000)  # 40 kB of records a call: the pipe's megabyte is full in 30
        i += 1
        await asyncio.sleep(0.005)
        longest = max(longest, time.monotonic() - before)
    return i, longest

calls, longest = asyncio.run(main())
os.kill(relay_pid(), signal.SIGCONT)
assert gateway_otel.force_flush(30)
print(calls, longest, flush=True)
""",
    )
    calls, longest = words
    assert int(calls) > 100  # far more than the pipe holds
    assert float(longest) < 1.0  # a blocked write would have held the loop until SIGCONT
    records = healthy_gateway.records(rid)
    assert len(records) == len({record["uuid"] for record in records}) == 2 * int(calls) + 2


def test_when_the_event_loop_is_blocked_the_sender_thread_hands_its_records_over(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-blocked-{uuid.uuid4().hex}"
    words = _on_a_loop(
        healthy_gateway,
        tmp_path,
        rid,
        """
async def main():
    await abill(1)
    time.sleep(1.0)  # the loop is blocked: the hand-over it was due to run cannot
    return len(delivery._queue), " ".join(sorted(hands))

left, by = asyncio.run(main())
print(left, by, flush=True)
assert gateway_otel.force_flush(20)
""",
    )
    assert words == ["0", "gateway-otel-delivery"]
    assert healthy_gateway.count(rid) == 4


def test_an_operation_that_ended_before_the_hand_over_sends_one_row_for_both_its_records(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-both-{uuid.uuid4().hex}"
    words = _on_a_loop(
        healthy_gateway,
        tmp_path,
        rid,
        """
import orjson
rows = []
relay = delivery._relay
write = relay._write

def recorded(data, entries, wait):
    line = bytes(data)
    if line.startswith(b"[["):  # records, not a flush request
        rows.extend(row[0] for row in orjson.loads(line))
    return write(data, entries, wait)

relay._write = recorded

@operation_log(op_type="slow")
async def slow():
    await asyncio.sleep(0.2)  # the loop hands its in record over while it runs
    return "done"

from opentelemetry import trace

@operation_log(op_type="big")
async def big():
    trace.get_current_span().set_attribute("x.big", 2**70)  # JSON cannot hold it: built in the app
    return 1

async def main():
    for i in range(50):
        await abill(i, "p")
    await asyncio.sleep(0.1)
    await slow()
    await asyncio.sleep(0.1)
    await big()
    await asyncio.sleep(0.1)

asyncio.run(main())
assert gateway_otel.force_flush(20)
print(" ".join(map(str, rows)), flush=True)
""",
    )
    # One row for each short operation's two records; both records built in the app for one whose
    # span holds what JSON cannot.
    assert words == ["3"] * 50 + ["0", "1", "2", "2"]
    records = healthy_gateway.records(rid)
    assert len(records) == len({record["uuid"] for record in records}) == 106
    by_type: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        by_type.setdefault((record["opType"], record["opLogType"]), []).append(record)
    for kind in ("in", "out"):
        assert len(by_type["abill", kind]) == 50
    outs = {record["request"]["i"]: record for record in by_type["abill", "out"]}
    for record in by_type["abill", "in"]:  # built from the ended span: the in record all the same
        out = outs[record["request"]["i"]]
        assert record["request"] == out["request"] == {"i": record["request"]["i"], "payload": "p"}
        assert record["operationStatus"] == "success"
        assert record["durationMillis"] == 0
        assert "response" not in record
        for field in ("requestId", "callerId", "requestUrl", "isCostLog", "startTimeMillis", "extraInfo"):
            assert record[field] == out[field], field
        assert out["response"] == record["request"]["i"]
    assert [record.get("response") for record in by_type["slow", "out"]] == ["done"]
    assert len(by_type["big", "in"]) == len(by_type["big", "out"]) == 1
