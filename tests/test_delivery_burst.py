"""A burst of decorated calls, then a normal interpreter exit: every record arrives once."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from gateway_otel.testing import eventually

from conftest import Gateway, run_program


@pytest.mark.slow
def test_burst_of_10000_calls_then_exit_delivers_every_record_once(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"burst-{uuid.uuid4().hex}"
    before = healthy_gateway.stats()
    result = run_program(
        "billing",
        rid,
        10_000,
        env={
            "OPENAPI_HOST": healthy_gateway.url,
            "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path),
            "OTEL_SERVICE_NAME": "burst",
        },
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert eventually(lambda: healthy_gateway.count(rid) >= 20_000, timeout=60)
    records = healthy_gateway.records(rid)
    assert len(records) == 20_000
    assert len({r["uuid"] for r in records}) == 20_000
    assert sum(1 for r in records if r["opLogType"] == "out" and r["isCostLog"]) == 10_000
    after = healthy_gateway.stats()
    assert after["duplicates"] == before["duplicates"]
