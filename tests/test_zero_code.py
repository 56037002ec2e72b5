"""Zero code: an unmodified FastAPI app run by ``opentelemetry-instrument`` with ``OTEL_TRACES_EXPORTER=gateway``."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway_otel.testing import free_port

from conftest import PROGRAMS, Gateway, serving, uvicorn

ALICE = {"Authorization": "Bearer demo-alice"}


def _serve(gateway: Gateway, tmp_path: Path, **env: str) -> Iterator[str]:
    port = free_port()
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    settings = {
        "OTEL_TRACES_EXPORTER": "gateway",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "plain",
        "OPENAPI_HOST": gateway.url,
        "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool"),
        **env,
    }
    with serving([str(instrument), *uvicorn("plain_app:app", port)], port=port, cwd=PROGRAMS, env=settings):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def instrumented(healthy_gateway: Gateway, tmp_path: Path) -> Iterator[str]:
    yield from _serve(healthy_gateway, tmp_path)


@pytest.fixture
def exporter_only(healthy_gateway: Gateway, tmp_path: Path) -> Iterator[str]:
    yield from _serve(healthy_gateway, tmp_path, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="gateway_otel")


def test_every_request_of_an_unmodified_app_is_a_record_with_the_tokens_caller(
    instrumented: str, healthy_gateway: Gateway
) -> None:
    """The ``gateway_otel`` instrumentor puts ``instrument_app`` on the app: tokens are checked, the
    request id is the caller's, and each request is one record pair (the contrib instrumentor's
    SERVER span adopted: not a second one of its own)."""
    rids = [f"zero-{i}-{uuid.uuid4().hex}" for i in range(5)]
    for i, rid in enumerate(rids):
        response = httpx.get(f"{instrumented}/v1/items/{i}", headers={**ALICE, "X-Request-ID": rid})
        assert response.status_code == 200 and response.json() == {"item": i}
        assert response.headers["x-request-id"] == rid
    refused = httpx.get(f"{instrumented}/v1/items/1")
    assert refused.status_code == 401 and refused.json()["msg"]
    failed = httpx.get(f"{instrumented}/v1/items/-1", headers={**ALICE, "X-Request-ID": f"{rids[0]}-failed"})
    assert failed.status_code == 500
    for rid in rids:
        records = healthy_gateway.wait_records(rid, 2, timeout=20)
        assert sorted((r["opType"], r["opLogType"]) for r in records) == [
            ("GET /v1/items/{item}", "in"),
            ("GET /v1/items/{item}", "out"),
        ]
        assert {(r["callerId"], r["isCostLog"], r["extraInfo"]["service"]) for r in records} == {
            ("alice", False, "plain")
        }
        assert records[-1]["response"] == 200
    (failed_out,) = [r for r in healthy_gateway.wait_records(f"{rids[0]}-failed", 2) if r["opLogType"] == "out"]
    assert failed_out["operationStatus"] == "failed" and failed_out["response"] == 500
    assert "no negative items" in failed_out["errMsg"]


def test_with_the_instrumentor_disabled_the_exporter_still_reports_every_request(
    exporter_only: str, healthy_gateway: Gateway
) -> None:
    """``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=gateway_otel``: no token checks, and the contrib
    instrumentor's SERVER spans still become request records (anonymous, under their trace id)."""
    trace_ids = [uuid.uuid4().hex for _ in range(5)]
    for i, trace_id in enumerate(trace_ids):
        response = httpx.get(
            f"{exporter_only}/v1/items/{i}",
            params={"token": "sk-secret"},
            headers={"traceparent": f"00-{trace_id}-{'1' * 16}-01"},
        )
        assert response.status_code == 200  # no token asked for
        assert "x-request-id" not in response.headers
    for trace_id in trace_ids:
        records = healthy_gateway.wait_records(trace_id, 2, timeout=20)
        assert sorted((r["opType"], r["opLogType"]) for r in records) == [
            ("GET /v1/items/{item}", "in"),
            ("GET /v1/items/{item}", "out"),
        ]
        assert {r["callerId"] for r in records} == {"anonymous"}
        assert {r["extraInfo"]["parentSpanId"] for r in records} == {"1" * 16}  # the caller's span
        assert all("sk-secret" not in r["requestUrl"] and "/v1/items/" in r["requestUrl"] for r in records)


def test_a_scripts_operations_under_opentelemetry_instrument_are_delivered(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"zero-code-{uuid.uuid4().hex}"
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    result = subprocess.run(
        [str(instrument), sys.executable, str(PROGRAMS / "billing.py"), rid, "20"],
        env={
            **os.environ,
            "OTEL_TRACES_EXPORTER": "gateway",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OPENAPI_HOST": healthy_gateway.url,
            "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool"),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = healthy_gateway.wait_records(rid, 40)
    assert len(records) == 40
    assert len({r["uuid"] for r in records}) == 40
