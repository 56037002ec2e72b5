"""The reference gateway over HTTP: schemathesis against its OpenAPI schema (no 5xx, no schema
violations), hostile bodies, and batches of records."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_otel.testing import GatewayProcess


@pytest.fixture(scope="module")
def plain_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    server = GatewayProcess(tmp_path_factory.mktemp("schema-gateway"), faults=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.slow
def test_schemathesis_finds_no_failure(plain_gateway: GatewayProcess, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{plain_gateway.url}/openapi.json",
            "--max-examples",
            "40",
            "--generation-deterministic",
            "--header",
            "Authorization: Bearer demo-alice",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "9 passed" in result.stdout


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"{not json", {"content-type": "application/json"}, 400),
        (b"\xff\xfe\x00garbage", {"content-type": "application/json"}, 400),
        (b'{"uuid": "x"}', {"content-type": "application/json"}, 400),
        (b"x" * (17 * 1024 * 1024), {"content-type": "application/json"}, 413),
        (iter([b"x" * (1024 * 1024)] * 17), {"content-type": "application/json"}, 413),
    ],
    ids=["invalid JSON", "invalid UTF-8", "missing fields", "17 MB body", "17 MB chunked body"],
)
def test_hostile_bodies_get_a_clear_4xx_with_a_json_error(
    plain_gateway: GatewayProcess, body: Any, headers: dict[str, str], status: int
) -> None:
    import httpx

    response = httpx.post(f"{plain_gateway.url}/v1/openapi/report/log", content=body, headers=headers, timeout=30)
    assert response.status_code == status
    assert response.json()["code"] == status
    assert httpx.get(f"{plain_gateway.url}/v1/openapi/stats").status_code == 200  # still up


@pytest.mark.parametrize(
    "path", ["/v1/openapi/log/..%2F..%2Fetc%2Fpasswd", "/v1/openapi/log/%00", "/requests/<script>"]
)
def test_path_tricks_are_harmless(plain_gateway: GatewayProcess, path: str) -> None:
    import httpx

    response = httpx.get(f"{plain_gateway.url}{path}")
    assert response.status_code in (200, 404)
    assert b"root:" not in response.content
    if path.startswith("/v1/openapi/log/"):
        assert response.json()["data"] in ([], None)


def _record(rid: str, caller: str, *, kind: str = "out", status: str = "success", **extra: Any) -> dict[str, Any]:
    return {
        "uuid": str(uuid.uuid4()),
        "requestId": rid,
        "callerId": caller,
        "requestUrl": "http://svc/v1/chat",
        "opLogType": kind,
        "opType": "chat",
        "isCostLog": True,
        "operationStatus": status,
        "startTimeMillis": 1,
        "durationMillis": 2,
        "request": {},
        **extra,
    }


def _balances(gateway: GatewayProcess) -> dict[str, float]:
    return {entry["callerId"]: entry["balance"] for entry in gateway.stats()["billing"]}


def test_a_batch_stores_each_new_record_once_and_bills_each_caller_for_its_own(plain_gateway: GatewayProcess) -> None:
    rid = uuid.uuid4().hex
    repeated = _record(rid, "bob")
    batch = [
        _record(rid, "alice", kind="in"),  # an "in" record costs nothing
        _record(rid, "alice"),
        _record(rid, "alice", requestUrl="http://svc/caf\u00e9?q=\u2603"),
        repeated,
        repeated,  # twice in one batch: stored and billed once
        _record(rid, "bob", status="failed"),  # a failed operation is not charged
    ]
    before = _balances(plain_gateway)
    first = plain_gateway.data("POST", "/v1/openapi/report/logs", json=batch)
    again = plain_gateway.data("POST", "/v1/openapi/report/logs", json=batch)  # a resent batch: all duplicates
    assert first == {"accepted": 5, "duplicates": 1}
    assert again == {"accepted": 0, "duplicates": 6}
    after = _balances(plain_gateway)
    assert (before["alice"] - after["alice"], before["bob"] - after["bob"]) == (2.0, 1.0)
    stored = plain_gateway.records(rid)
    assert sorted(r["uuid"] for r in stored) == sorted({r["uuid"] for r in batch})
    assert "http://svc/caf\u00e9?q=\u2603" in {r["requestUrl"] for r in stored}


@pytest.mark.parametrize(
    ("change", "message"),
    [({"opType": None}, "1.opType"), ({"durationMillis": True}, "1.durationMillis")],
    ids=["a field missing", "a boolean for a number"],
)
def test_a_batch_with_one_invalid_record_is_refused_whole_with_the_reason(
    plain_gateway: GatewayProcess, change: dict[str, Any], message: str
) -> None:
    rid = uuid.uuid4().hex
    bad = {key: value for key, value in {**_record(rid, "alice"), **change}.items() if value is not None}
    response = plain_gateway.client.post("/v1/openapi/report/logs", json=[_record(rid, "alice"), bad])
    assert response.status_code == 400
    assert message in response.json()["msg"]
    assert plain_gateway.records(rid) == []


def test_a_batch_over_the_limit_is_refused(plain_gateway: GatewayProcess) -> None:
    from gateway_otel.gateway._app import MAX_BATCH

    rid = uuid.uuid4().hex
    batch = [_record(rid, "alice") for _ in range(MAX_BATCH + 1)]
    response = plain_gateway.client.post("/v1/openapi/report/logs", json=batch, timeout=60)
    assert response.status_code == 400
    assert plain_gateway.records(rid) == []
