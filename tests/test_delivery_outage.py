"""Records that wait in the spool through an outage are delivered once the gateway is back."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gateway_otel.testing import eventually

from conftest import PROGRAMS, Gateway


@pytest.mark.slow
def test_records_spooled_during_an_outage_are_delivered_at_exit(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"outage-{uuid.uuid4().hex}"
    env = {
        "OPENAPI_HOST": healthy_gateway.url,
        "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path),
        "GATEWAY_OTEL_MAX_BACKOFF": "0.5",
    }
    with subprocess.Popen(
        [sys.executable, str(PROGRAMS / "outage_at_exit.py"), rid, "200"],
        env={**os.environ, **env},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None and process.stdin is not None
            assert process.stdout.readline().strip() == "idle"
            healthy_gateway.faults(report_status=503)
            process.stdin.write("\n")
            process.stdin.flush()
            assert process.stdout.readline().strip() == "spooled"
            assert len(healthy_gateway.records(rid)) == 2  # bill(-1) only
            healthy_gateway.faults()
            process.stdin.write("\n")
            process.stdin.flush()
            assert process.wait(60) == 0, process.stderr.read() if process.stderr else ""
        finally:
            if process.poll() is None:
                process.kill()
    assert eventually(lambda: healthy_gateway.count(rid) >= 402, timeout=30)
    records = healthy_gateway.records(rid)
    assert len(records) == 402
    assert len({r["uuid"] for r in records}) == 402
