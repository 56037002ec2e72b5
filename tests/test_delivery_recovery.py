"""A short outage costs seconds, not half a minute: concurrent failures count as one attempt, the
gateway is probed while records wait, and exit delivers what waits once the gateway answers."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_otel._spool import Spool
from gateway_otel.testing import eventually

from conftest import Gateway

PROGRAM = Path(__file__).parent / "programs" / "outage_worker.py"
CALLS = 300
RECORDS = 2 * CALLS + 2
#: Seconds within which delivery must resume once the gateway answers again (quality.md).
RESUME_WITHIN = 5.0

OUTAGES: dict[str, dict[str, Any]] = {"503": {"report_status": 503}, "dropped connections": {"drop": True}}


class Worker:
    def __init__(self, rid: str, gateway: Gateway, spool: Path) -> None:
        env = {**os.environ, "OPENAPI_HOST": gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(spool)}
        env.pop("GATEWAY_OTEL_MAX_BACKOFF", None)  # the default backoff
        self.process = subprocess.Popen(
            [sys.executable, str(PROGRAM), rid, str(CALLS)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, line: str) -> None:
        assert self.process.stdout is not None
        got = self.process.stdout.readline().strip()
        assert got == line, f"expected {line!r}, got {got!r}: {self.stderr()}"

    def say(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "(running)"
        return self.process.stderr.read()

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def worker_in_an_outage(
    request: pytest.FixtureRequest, healthy_gateway: Gateway, tmp_path: Path
) -> Iterator[tuple[Worker, str]]:
    """A worker whose records of ``CALLS`` calls wait through an outage that has just ended."""
    rid = f"recover-{uuid.uuid4().hex}"
    worker = Worker(rid, healthy_gateway, tmp_path)
    try:
        worker.expect("idle")
        healthy_gateway.faults(**OUTAGES[request.param])
        worker.say()
        worker.expect("waiting")
        assert healthy_gateway.count(rid) == 2  # the first call only
        healthy_gateway.faults()
        yield worker, rid
    finally:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait(10)
        worker.close()
        healthy_gateway.faults()


@pytest.mark.slow
@pytest.mark.parametrize("worker_in_an_outage", list(OUTAGES), indirect=True)
def test_delivery_resumes_within_seconds_in_the_same_process(
    worker_in_an_outage: tuple[Worker, str], healthy_gateway: Gateway
) -> None:
    worker, rid = worker_in_an_outage
    assert eventually(lambda: healthy_gateway.count(rid) >= RECORDS, timeout=RESUME_WITHIN)
    assert worker.process.poll() is None  # delivered by the process that made them, still running
    worker.say()
    assert worker.process.wait(60) == 0, worker.stderr()
    records = healthy_gateway.records(rid)
    assert len(records) == RECORDS and len({r["uuid"] for r in records}) == RECORDS


@pytest.mark.slow
@pytest.mark.parametrize("worker_in_an_outage", list(OUTAGES), indirect=True)
def test_exit_delivers_what_waits_once_the_gateway_answers(
    worker_in_an_outage: tuple[Worker, str], healthy_gateway: Gateway, tmp_path: Path
) -> None:
    worker, rid = worker_in_an_outage
    worker.say()  # exit right away, while the records wait for their retry
    assert worker.process.wait(60) == 0, worker.stderr()
    assert healthy_gateway.count(rid) == RECORDS  # all there when the process is gone
    assert Spool(str(tmp_path)).counts() == (0, 0)  # nothing left for a later process
