"""One trace and one request id across HTTP -> RabbitMQ RPC -> worker -> HTTP (real rabbitmq-server)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from gateway_otel import caller_id_context, current_caller_id, current_request_id, operation_log, trace_id_context
from gateway_otel.testing import free_port, wait_for_port

from conftest import Gateway

TESTS = Path(__file__).parent
pytestmark = [
    pytest.mark.infra,
    pytest.mark.skipif(shutil.which("rabbitmq-server") is None, reason="rabbitmq-server is installed by ./dev test"),
]


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[None]:
    if _listening(5672):  # already running on this machine
        yield
        return
    env = {**os.environ, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "ERL_EPMD_ADDRESS": "127.0.0.1"}
    subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, capture_output=True)
    try:
        wait_for_port(5672, timeout=60)
        yield
    finally:
        subprocess.run(["rabbitmqctl", "shutdown"], env=env, check=False, capture_output=True, timeout=60)
        subprocess.run(["pkill", "-x", "epmd"], check=False)


def _start(role: str, port: int, queue: str, b_url: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(TESTS / "amqp_apps.py"), role, str(port), queue, b_url],
        env={**os.environ, **env, "OTEL_SERVICE_NAME": role},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_a_request_stays_one_trace_and_one_request_id_across_amqp_and_http(
    rabbitmq: None, healthy_gateway: Gateway, tmp_path: Path
) -> None:
    queue = f"rpc-{uuid.uuid4().hex}"
    edge_port, b_port = free_port(), free_port()
    b_url = f"http://127.0.0.1:{b_port}"
    env = {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")}
    processes = [
        _start("service-b", b_port, queue, b_url, env),
        _start("worker", 0, queue, b_url, env),
        _start("edge", edge_port, queue, b_url, env),
    ]
    try:
        worker = processes[1]
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        wait_for_port(b_port, process=processes[0])
        wait_for_port(edge_port, process=processes[2])
        response = httpx.post(
            f"http://127.0.0.1:{edge_port}/v1/rpc",
            json={"text": "hello rabbit"},
            headers={"Authorization": "Bearer demo-alice", "baggage": "gateway.caller_id=admin"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
            if process.stdout is not None:
                process.stdout.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(healthy_gateway.records(request_id)) < 6:
        time.sleep(0.1)
    records = healthy_gateway.records(request_id)
    assert {r["opType"] for r in records} == {"dispatch", "work", "score"}
    assert len(records) == 6
    assert {r["extraInfo"]["service"] for r in records} == {"edge", "worker", "service-b"}
    assert len({r["extraInfo"]["traceId"] for r in records}) == 1
    assert {r["callerId"] for r in records} == {"alice"}


@operation_log
async def scored(text: str) -> dict[str, Any]:
    return {"text": text, "caller": current_caller_id(), "request_id": current_request_id()}


def test_the_rpc_pattern_as_seed_002_writes_it_carries_identity_and_trace(
    rabbitmq: None, pipeline: Any, captured_records: Any
) -> None:
    from gateway_otel.amqp import RPC

    method = f"score_{uuid.uuid4().hex[:8]}"
    rids = [f"rpc-{i}-{uuid.uuid4().hex}" for i in range(5)]

    async def main() -> list[Any]:
        connection = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1/")
        async with connection:
            worker = await RPC.create(await connection.channel())
            worker.trust_upstream = True  # a worker behind the gateway
            await worker.register(method, scored, auto_delete=True)
            caller = await RPC.create(await connection.channel())

            async def one(rid: str) -> Any:  # each request in a task of its own, as an edge serves them
                trace_id_context.set(rid)
                caller_id_context.set("alice")
                return await caller.call(method, kwargs={"text": rid})

            return list(await asyncio.gather(*(one(rid) for rid in rids)))

    answers = asyncio.run(main())
    assert answers == [{"text": rid, "caller": "alice", "request_id": rid} for rid in rids]  # never mixed
    for rid in rids:
        records = captured_records.of(rid)
        assert sorted(r["opLogType"] for r in records) == ["in", "out"], records
        assert {r["callerId"] for r in records} == {"alice"}
    consumers = [s for s in captured_records.spans if s.name == f"rpc {method}"]
    operations = {s.context.span_id: s for s in captured_records.spans if s.name == "scored"}
    assert len(consumers) == 5
    for consumer in consumers:  # each handler's operation is a child of its CONSUMER span
        assert any(
            op.parent is not None and op.parent.span_id == consumer.context.span_id for op in operations.values()
        )
