"""schemathesis against the reference gateway's OpenAPI schema: no 5xx, no schema violations."""

from __future__ import annotations

import subprocess
import sys
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
