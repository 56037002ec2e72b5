"""A short outage costs seconds, not half a minute: concurrent failures count as one attempt, the
gateway is probed while records wait, and exit delivers what waits once the gateway answers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_otel._spool import Spool
from gateway_otel.testing import eventually

from conftest import Gateway, Script

PROGRAM = Path(__file__).parent / "programs" / "outage_worker.py"
CALLS = 300
RECORDS = 2 * CALLS + 2
#: Seconds within which delivery must resume once the gateway answers again (quality.md).
RESUME_WITHIN = 5.0

OUTAGES: dict[str, dict[str, Any]] = {"503": {"report_status": 503}, "dropped connections": {"drop": True}}


@pytest.fixture
def worker_in_an_outage(
    request: pytest.FixtureRequest, healthy_gateway: Gateway, tmp_path: Path
) -> Iterator[tuple[Script, str]]:
    """A worker whose records of ``CALLS`` calls wait through an outage that has just ended."""
    rid = f"recover-{uuid.uuid4().hex}"
    env = {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)}
    worker = Script.of_program(PROGRAM, rid, str(CALLS), env=env)  # the default backoff
    try:
        worker.expect("idle")
        healthy_gateway.faults(**OUTAGES[request.param])
        worker.say()
        worker.expect("waiting")
        assert healthy_gateway.count(rid) == 2  # the first call only
        healthy_gateway.faults()
        yield worker, rid
    finally:
        worker.close()
        healthy_gateway.faults()


@pytest.mark.slow
@pytest.mark.parametrize("worker_in_an_outage", list(OUTAGES), indirect=True)
def test_delivery_resumes_within_seconds_in_the_same_process(
    worker_in_an_outage: tuple[Script, str], healthy_gateway: Gateway
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
    worker_in_an_outage: tuple[Script, str], healthy_gateway: Gateway, tmp_path: Path
) -> None:
    worker, rid = worker_in_an_outage
    worker.say()  # exit right away, while the records wait for their retry
    assert worker.process.wait(60) == 0, worker.stderr()
    assert healthy_gateway.count(rid) == RECORDS  # all there when the process is gone
    assert Spool(str(tmp_path)).counts() == (0, 0)  # nothing left for a later process
