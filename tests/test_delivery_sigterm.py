"""A worker stopped with SIGTERM loses no billed record, and the next start delivers the spool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gateway_otel._spool import Spool
from gateway_otel.testing import eventually

from conftest import PROGRAMS, Gateway, Script

CALLS = 40


@pytest.mark.slow
def test_a_plain_asyncio_worker_stopped_with_sigterm_keeps_every_record(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"sigterm-{uuid.uuid4().hex}"
    env = {**os.environ, "OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)}
    healthy_gateway.faults(report_delay=1.0)  # a slow gateway: records are in flight at the signal
    try:
        worker = subprocess.Popen(
            [sys.executable, str(PROGRAMS / "sigterm_worker.py"), rid, str(CALLS)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "done"
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
        stderr = worker.stderr.read() if worker.stderr else ""
        worker.stdout.close()
        if worker.stderr:
            worker.stderr.close()
    finally:
        healthy_gateway.faults()
    assert code == 128 + signal.SIGTERM, stderr
    delivered = healthy_gateway.count(rid)
    waiting, dead = Spool(str(tmp_path)).counts()
    assert dead == 0
    assert delivered + waiting >= 2 * CALLS, (delivered, waiting)  # delivered or in the spool: none lost

    # The next worker delivers the spool as it starts, before it has any work of its own.
    idle = Script.of_program(PROGRAMS / "idle_worker.py", env=env)
    try:
        idle.expect("ready")
        assert eventually(lambda: healthy_gateway.count(rid) >= 2 * CALLS, timeout=20)
    finally:
        idle.say()
        idle.wait(60)
        idle.close()
    records = healthy_gateway.records(rid)
    assert len(records) == 2 * CALLS and len({r["uuid"] for r in records}) == 2 * CALLS
    assert sum(1 for r in records if r["opLogType"] == "out" and r["isCostLog"]) == CALLS


def test_a_relay_worker_that_starts_with_a_spool_delivers_it_without_a_chain_of_relays(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"leftover-{uuid.uuid4().hex}"
    spool = Spool(str(tmp_path))
    body = (
        '{"uuid":"%s","requestId":"%s","callerId":"alice","requestUrl":"","opLogType":"in","opType":"left",'
        '"isCostLog":false,"operationStatus":"success","startTimeMillis":1,"durationMillis":0,"request":{}}'
    )
    spool.put([(f"{rid}-{i}", (body % (f"{rid}-{i}", rid)).encode()) for i in range(20)], error="down")
    spool.close()
    env = {
        **os.environ,
        "OPENAPI_HOST": healthy_gateway.url,
        "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path),
        "GATEWAY_OTEL_RELAY": "1",
    }
    idle = Script.of_program(PROGRAMS / "idle_worker.py", env=env)
    try:
        idle.expect("ready")
        assert eventually(lambda: healthy_gateway.count(rid) >= 20, timeout=20)
        children = subprocess.run(["pgrep", "-P", str(idle.process.pid)], capture_output=True, text=True, check=False)
        assert children.stdout.split() == []  # the spool is delivered here, not through relays of relays
    finally:
        idle.say()
        idle.wait(60)
        idle.close()
    assert len(healthy_gateway.records(rid)) == 20
