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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest

from gateway_otel import caller_id_context, current_caller_id, current_request_id, operation_log, trace_id_context
from gateway_otel._spool import Spool
from gateway_otel.amqp import message_headers
from gateway_otel.testing import eventually, free_port, wait_for_port

from conftest import PROGRAMS, Gateway, Script, assert_one_tree, parent_op

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


def _start(role: str, port: int, method: str, b_url: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(PROGRAMS / "rpc_services.py"), role, str(port), method, b_url],
        env={**os.environ, **env, "OTEL_SERVICE_NAME": role},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_requests_over_rpc_and_http_are_one_tree_each(rabbitmq: None, healthy_gateway: Gateway, tmp_path: Path) -> None:
    """Seed 002's shape: edge -> aio_pika RPC -> worker -> instrumented httpx -> service-b, four requests
    at once: each keeps its own request id and caller across the three services, and its records
    form one tree rooted at the edge's request (a CLIENT span between worker and service-b makes
    no record, and no record hangs under it)."""
    method = f"work_{uuid.uuid4().hex[:12]}"
    edge_port, b_port = free_port(), free_port()
    b_url = f"http://127.0.0.1:{b_port}"
    env = {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")}
    processes = [
        _start("service-b", b_port, method, b_url, env),
        _start("worker", 0, method, b_url, env),
        _start("edge", edge_port, method, b_url, env),
    ]
    callers = {"alice": "Bearer demo-alice", "bob": "Bearer demo-bob"}
    sent = {f"tree-{i}-{uuid.uuid4().hex}": ("alice", "bob")[i % 2] for i in range(4)}
    try:
        worker = processes[1]
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        wait_for_port(b_port, process=processes[0])
        wait_for_port(edge_port, process=processes[2])

        async def one(client: httpx.AsyncClient, request_id: str, caller: str) -> httpx.Response:
            return await client.post(
                f"http://127.0.0.1:{edge_port}/v1/rpc",
                json={"text": request_id},
                # a forged caller in the baggage: the edge trusts no upstream and takes the token's
                headers={
                    "Authorization": callers[caller],
                    "X-Request-ID": request_id,
                    "baggage": "gateway.caller_id=admin",
                },
            )

        async def all_at_once() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                return list(await asyncio.gather(*(one(client, rid, caller) for rid, caller in sent.items())))

        for response in asyncio.run(all_at_once()):
            assert response.status_code == 200, response.text
            assert response.json()["reply"] == {"score": len(response.headers["x-request-id"])}
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
    for request_id, caller in sent.items():
        records = healthy_gateway.wait_records(request_id, 12, timeout=20)
        assert sorted(r["opType"] for r in records if r["opLogType"] == "out") == sorted(
            ["POST /v1/rpc", "dispatch", f"consume {method}", "work", "POST /score", "score"]
        ), records
        assert len(records) == 12
        assert {r["extraInfo"]["service"] for r in records} == {"edge", "worker", "service-b"}
        assert len({r["extraInfo"]["traceId"] for r in records}) == 1
        assert {r["callerId"] for r in records} == {caller}
        assert [r["isCostLog"] for r in records if r["opLogType"] == "out" and r["isCostLog"]] == [True]
        assert_one_tree(records, root="POST /v1/rpc")
        parents = {r["opType"]: parent_op(records, r) for r in records}
        assert parents == {
            "POST /v1/rpc": None,
            "dispatch": "POST /v1/rpc",
            f"consume {method}": "dispatch",
            "work": f"consume {method}",
            "POST /score": "work",  # across the httpx CLIENT span, which makes no record
            "score": "POST /score",
        }


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
        assert sorted((r["opType"], r["opLogType"]) for r in records) == [
            (f"consume {method}", "in"),
            (f"consume {method}", "out"),
            ("scored", "in"),
            ("scored", "out"),
        ], records
        assert {r["callerId"] for r in records} == {"alice"}
        assert_one_tree(records, root=f"consume {method}")
    consumers = [s for s in captured_records.spans if s.name == f"rpc {method}"]
    operations = {s.context.span_id: s for s in captured_records.spans if s.name == "scored"}
    assert len(consumers) == 5
    for consumer in consumers:  # each handler's operation is a child of its CONSUMER span
        assert any(
            op.parent is not None and op.parent.span_id == consumer.context.span_id for op in operations.values()
        )


def test_a_consumer_stopped_with_sigterm_keeps_every_record(
    rabbitmq: None, healthy_gateway: Gateway, tmp_path: Path
) -> None:
    """SIGTERM (Docker's, systemd's stop) right after the last message, while the gateway is slow:
    every record of the handled messages is delivered or spooled, and the next start delivers."""
    rid, queue, n = f"consumer-{uuid.uuid4().hex}", f"embed-{uuid.uuid4().hex}", 20
    env = {**os.environ, "OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)}
    healthy_gateway.faults(report_delay=1.0)  # records are in flight at the signal
    consumer = Script.of_program(PROGRAMS / "amqp_consumer.py", queue, env=env)
    try:
        consumer.expect("ready")

        async def publish() -> None:
            trace_id_context.set(rid)
            caller_id_context.set("alice")
            connection = await aio_pika.connect_robust("amqp://guest:guest@127.0.0.1/")
            async with connection:
                channel = await connection.channel()
                for i in range(n):
                    message = aio_pika.Message(f"text {i}".encode(), headers=message_headers())
                    await channel.default_exchange.publish(message, routing_key=queue)

        asyncio.run(publish())
        for _ in range(n):
            consumer.expect("handled")
        consumer.process.send_signal(signal.SIGTERM)
        assert consumer.wait(60) == 128 + signal.SIGTERM
    finally:
        healthy_gateway.faults()
        consumer.close()
    # Each message: its CONSUMER span's pair and its operation's, under the sender's request id.
    waiting, dead = Spool(str(tmp_path)).counts()
    assert dead == 0
    assert healthy_gateway.count(rid) + waiting >= 4 * n
    restarted = subprocess.run(
        [sys.executable, "-c", "import gateway_otel; gateway_otel.configure()"], env=env, check=False, timeout=120
    )
    assert restarted.returncode == 0
    assert eventually(lambda: healthy_gateway.count(rid) >= 4 * n, timeout=30)
    records = healthy_gateway.records(rid)
    assert len(records) == len({r["uuid"] for r in records}) == 4 * n
    assert {r["callerId"] for r in records} == {"alice"}
