"""gunicorn --preload with 4 workers: every worker delivers, access lines carry request ids."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from gateway_otel.testing import free_port, wait_for_port

from conftest import PROGRAMS, Gateway


@pytest.mark.slow
def test_preloaded_workers_each_deliver_their_records(healthy_gateway: Gateway, tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PATH": str(Path(sys.executable).parent),
        "OPENAPI_HOST": healthy_gateway.url,
        "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool"),
    }
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "service_app:app",
                "--preload",
                "-w",
                "4",
                "-k",
                "gateway_otel.gunicorn.GatewayOtelWorker",
                "-b",
                f"127.0.0.1:{port}",
                "--chdir",
                str(PROGRAMS),
                "--graceful-timeout",
                "20",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, timeout=60, process=server)
            rid = f"gunicorn-{uuid.uuid4().hex}"
            pids = set()
            for i in range(200):
                # A new connection each time, so that the workers share the requests.
                response = httpx.get(
                    f"http://127.0.0.1:{port}/bill/{i}",
                    headers={"Authorization": "demo-alice", "X-Request-ID": rid, "Connection": "close"},
                )
                assert response.status_code == 200
                pids.add(response.json()["pid"])
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    assert len(pids) >= 2, "the requests all went to one worker"
    records = healthy_gateway.wait_records(rid, 800, timeout=30)  # each request's pair and its operation's
    assert len(records) == 800
    assert len({r["uuid"] for r in records}) == 800
    assert {r["callerId"] for r in records} == {"alice"}
    text = log.read_text()
    access = [line for line in text.splitlines() if "GET /bill/" in line]
    assert len(access) == 200, text[-2000:]
    assert all(f"rid={rid}" in line and "ms rid=" in line for line in access), access[:3]
