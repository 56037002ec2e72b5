"""Nothing lost, nothing twice: outages, refused and dropped connections, hangs, refusals, exits.

Outages here last seconds rather than quality.md's 60 s; the mechanisms (backoff, spool,
recovery) are the same, and the suite stays within its time budget.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway_otel import submit_log
from gateway_otel._spool import Spool
from gateway_otel.testing import eventually, free_port, wait_for_port

from conftest import PROGRAMS, Gateway, Script, run_program, run_script

N = 100


@pytest.fixture
def script_env(healthy_gateway: Gateway, tmp_path: Path) -> dict[str, str]:
    return {
        "OPENAPI_HOST": healthy_gateway.url,
        "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool"),
        "GATEWAY_OTEL_TIMEOUT": "0.5",
        "GATEWAY_OTEL_MAX_BACKOFF": "1",
    }


@pytest.fixture
def scripts() -> Iterator[list[Script]]:
    started: list[Script] = []
    yield started
    for script in started:
        script.close()


def assert_stored_once(gateway: Gateway, rid: str, count: int) -> list[dict[str, Any]]:
    assert eventually(lambda: gateway.count(rid) >= count, timeout=30)
    records = gateway.records(rid)
    assert len(records) == count
    assert len({r["uuid"] for r in records}) == count
    return records


FAULTS = {
    "503": {"report_status": 503},
    "503 with Retry-After": {"report_status": 503, "retry_after": "1"},
    "429": {"report_status": 429},
    "dropped mid-response": {"drop": True},
    "hanging past the timeout": {"report_delay": 2.0},
}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(FAULTS))
def test_an_outage_then_recovery_loses_nothing_and_doubles_nothing(
    fault: str, healthy_gateway: Gateway, script_env: dict[str, str], scripts: list[Script]
) -> None:
    rid = f"fault-{uuid.uuid4().hex}"
    healthy_gateway.faults(**FAULTS[fault])
    before = healthy_gateway.stats()
    script = Script.of_program(PROGRAMS / "billing.py", rid, str(N), "wait", env=script_env)
    scripts.append(script)
    script.expect("done")
    # The outage goes on while the sender probes it (the first attempt and at least two retries).
    assert eventually(lambda: healthy_gateway.stats()["reportCalls"] - before["reportCalls"] >= 3, timeout=20)
    during = healthy_gateway.stats()
    healthy_gateway.faults()
    script.say()
    assert script.wait() == 0, script.stderr()
    assert_stored_once(healthy_gateway, rid, 2 * N)
    # Backoff: a handful of probes during the outage, not one request per record.
    assert during["reportCalls"] - before["reportCalls"] < 40
    if fault != "hanging past the timeout":  # a hung request was stored late: its retry is a duplicate
        assert healthy_gateway.stats()["duplicates"] == before["duplicates"]


@pytest.mark.slow
def test_refused_connections_then_a_gateway_appears(
    tmp_path: Path, script_env: dict[str, str], scripts: list[Script]
) -> None:
    port = free_port()
    rid = f"refused-{uuid.uuid4().hex}"
    env = {**script_env, "OPENAPI_HOST": f"http://127.0.0.1:{port}"}
    script = Script.of_program(PROGRAMS / "billing.py", rid, str(N), "wait", env=env)
    scripts.append(script)
    script.expect("done")
    spool = Spool(script_env["GATEWAY_OTEL_SPOOL_DIR"])
    assert eventually(lambda: spool.counts()[0] == 2 * N, timeout=20)  # refused: every record spooled
    late = Gateway(tmp_path / "late-gateway", port=port)
    try:
        script.say()
        assert script.wait() == 0, script.stderr()
        assert_stored_once(late, rid, 2 * N)
        assert late.stats()["duplicates"] == 0
    finally:
        late.stop()


def test_a_record_the_gateway_refuses_is_a_dead_letter_and_the_others_flow(
    healthy_gateway: Gateway, spool_dir: Path, flush: Any
) -> None:
    rid = uuid.uuid4().hex
    bad = f"bad-{uuid.uuid4().hex}"
    healthy_gateway.faults(reject_uuids=[bad])
    base = {"requestId": rid, "callerId": "bob", "requestUrl": "/x", "opType": "refused"}
    submit_log({**base, "uuid": bad})
    for i in range(5):
        submit_log({**base, "uuid": f"good-{i}-{rid}"})
    flush()
    stored = assert_stored_once(healthy_gateway, rid, 5)
    assert bad not in {r["uuid"] for r in stored}
    dead = {record.uuid: record for record in Spool(spool_dir).dead_letters()}
    assert bad in dead
    assert dead[bad].last_error is not None and dead[bad].last_error.startswith("HTTP 400")


def test_the_batch_endpoint_takes_records_in_few_requests_and_sets_a_refused_one_aside(
    healthy_gateway: Gateway, script_env: dict[str, str]
) -> None:
    rid = uuid.uuid4().hex
    bad = f"bad-{uuid.uuid4().hex}"
    n = 2000
    healthy_gateway.faults(reject_uuids=[bad])
    before = healthy_gateway.stats()
    result = run_program("batched_records", rid, bad, n, env={**script_env, "GATEWAY_OTEL_BATCH": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["flushed"]
    stored = assert_stored_once(healthy_gateway, rid, n)
    assert bad not in {r["uuid"] for r in stored}
    # Batches, not one request per record: the refused batch is resent one record at a time (500
    # requests at most), every other batch is one request.
    calls = healthy_gateway.stats()["reportCalls"] - before["reportCalls"]
    assert calls < 600, calls
    dead = {record.uuid: record for record in Spool(Path(script_env["GATEWAY_OTEL_SPOOL_DIR"])).dead_letters()}
    assert bad in dead
    assert dead[bad].last_error is not None and dead[bad].last_error.startswith("HTTP 400")


def test_batches_linger_for_records_that_trickle_in(healthy_gateway: Gateway, script_env: dict[str, str]) -> None:
    rid = uuid.uuid4().hex
    before = healthy_gateway.stats()["reportCalls"]
    env = {**script_env, "GATEWAY_OTEL_BATCH": "1", "GATEWAY_OTEL_BATCH_LINGER": "1"}
    result = run_program("trickled_records", rid, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["flushed"]  # the flush does not wait out the linger
    assert_stored_once(healthy_gateway, rid, 10)
    # 10 records 10 ms apart: one batch (two if the first left alone), not one request each.
    assert healthy_gateway.stats()["reportCalls"] - before <= 2


def test_the_sender_keeps_going_while_threads_append_to_a_lingering_batch(
    healthy_gateway: Gateway, script_env: dict[str, str]
) -> None:
    rid = uuid.uuid4().hex
    per_thread = 1500
    env = {**script_env, "GATEWAY_OTEL_BATCH": "1", "GATEWAY_OTEL_BATCH_LINGER": "0.2"}
    result = run_program("trickling_threads", rid, per_thread, env=env)
    assert result.returncode == 0, result.stderr
    assert "delivery stopped" not in result.stderr, result.stderr
    assert result.stdout.split() == ["alive", "flushed"]
    assert_stored_once(healthy_gateway, rid, 4 * per_thread)


def test_a_fault_in_the_senders_loop_is_logged_and_delivery_goes_on(
    healthy_gateway: Gateway, script_env: dict[str, str]
) -> None:
    rid = uuid.uuid4().hex
    result = run_program("faulty_sender", rid, env=script_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["flushed", "alive"], result.stderr
    assert result.stderr.count("a fault in the sender") == 1  # logged once, not at each tick
    assert_stored_once(healthy_gateway, rid, 50)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "kill -9"])
def test_a_service_stopped_during_an_outage_delivers_everything_on_its_next_start(
    how: str, healthy_gateway: Gateway, script_env: dict[str, str], scripts: list[Script], tmp_path: Path
) -> None:
    rid = f"stop-{uuid.uuid4().hex}"
    port = free_port()
    healthy_gateway.faults(report_status=503)
    # Delivery in the app's process (a relay has a test of its own); FastAPI's own server spans
    # (0.16x) would be request records under request ids of their own.
    env = {**script_env, "GATEWAY_OTEL_RELAY": "0", "GATEWAY_OTEL_REQUEST_RECORDS": "0"}
    service = Script.of_program(PROGRAMS / "billing_service.py", rid, str(port), env=env)
    scripts.append(service)
    wait_for_port(port, process=service.process)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for i in range(N):
            assert client.get(f"/bill/{i}").json() == {"i": i}
    spool = Spool(script_env["GATEWAY_OTEL_SPOOL_DIR"])
    assert eventually(lambda: spool.counts()[0] == 2 * N, timeout=20)  # refused: all of them in the spool
    service.process.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
    service.wait(30)
    assert spool.counts()[0] == 2 * N
    assert healthy_gateway.records(rid) == []

    healthy_gateway.faults()
    before = healthy_gateway.stats()
    restarted = run_script("import gateway_otel; gateway_otel.configure()", env=script_env)
    assert restarted.returncode == 0, restarted.stderr
    assert_stored_once(healthy_gateway, rid, 2 * N)
    assert healthy_gateway.stats()["duplicates"] == before["duplicates"]
    assert spool.counts()[0] == 0


@pytest.mark.parametrize("relay", ["0", "1"])
def test_a_service_stopped_with_sigterm_right_after_its_requests_loses_nothing(
    relay: str, healthy_gateway: Gateway, script_env: dict[str, str], scripts: list[Script]
) -> None:
    # uvicorn raises SIGTERM again once the lifespan shutdown is complete: the process ends there,
    # without atexit. The records of the last moment (the relay's first too, while it comes up) must
    # be delivered or spooled by then.
    rid = f"sigterm-{uuid.uuid4().hex}"
    port = free_port()
    healthy_gateway.faults(report_delay=0.2)  # the records are still on their way at the signal
    env = {**script_env, "GATEWAY_OTEL_RELAY": relay}
    service = Script.of_program(PROGRAMS / "billing_service.py", rid, str(port), "instrumented", env=env)
    scripts.append(service)
    wait_for_port(port, process=service.process)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for i in range(N):
            assert client.get(f"/bill/{i}").json() == {"i": i}
    service.process.send_signal(signal.SIGTERM)
    # uvicorn hands the signal back to the handler it found, the adapter's: a normal exit, status 143.
    assert service.wait(30) == 128 + signal.SIGTERM
    healthy_gateway.faults()
    # What the app spooled is delivered by its next start; what a relay read, by the relay.
    restarted = run_script("import gateway_otel; gateway_otel.configure()", env=script_env)
    assert restarted.returncode == 0, restarted.stderr
    assert_stored_once(healthy_gateway, rid, 2 * N)


def test_asyncio_run_returning_right_after_calls_loses_nothing(
    healthy_gateway: Gateway, script_env: dict[str, str]
) -> None:
    rid = f"asyncio-{uuid.uuid4().hex}"
    result = run_program("asyncio_burst", rid, N, env=script_env)
    assert result.returncode == 0, result.stderr
    assert_stored_once(healthy_gateway, rid, 2 * N)
