"""One trace and one request id across HTTP -> RabbitMQ RPC -> worker -> HTTP (real rabbitmq-server)."""

from __future__ import annotations

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

import httpx
import pytest

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
