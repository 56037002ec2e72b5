"""The adapter's own metrics: an operator sees the billing pipeline's health in their dashboards."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway_otel import GatewayClient
from gateway_otel._metrics import SpoolGauges
from gateway_otel._spool import Spool
from gateway_otel.testing import eventually

from conftest import Gateway, Script

PROGRAM = Path(__file__).parent / "programs" / "metrics_worker.py"


def metrics_of(process: Script) -> dict[str, dict[str, Any]]:
    return dict(orjson.loads(process.ask("metrics")))


@pytest.fixture(params=["0", "1"], ids=["in-process", "relay"])
def worker(request: pytest.FixtureRequest, healthy_gateway: Gateway, tmp_path: Path) -> Iterator[tuple[Script, str]]:
    rid = f"metrics-{uuid.uuid4().hex}"
    env = {
        "OPENAPI_HOST": healthy_gateway.url,
        "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path),
        "GATEWAY_OTEL_RELAY": request.param,
        "GATEWAY_OTEL_MAX_BACKOFF": "0.5",
    }
    process = Script.of_program(PROGRAM, rid, env=env)
    try:
        process.expect("ready")
        yield process, rid
    finally:
        healthy_gateway.faults()
        process.say("exit")
        process.wait(60)
        process.close()


def exported(snapshot: dict[str, dict[str, Any]], outcome: str) -> int:
    return int(snapshot.get("gateway_otel.records.exported", {}).get(f"outcome={outcome}", 0))


def spool_gauge(snapshot: dict[str, dict[str, Any]], name: str) -> float:
    return float(snapshot.get(f"gateway_otel.spool.{name}", {}).get("", -1))


@pytest.mark.slow
def test_through_an_outage_the_gauges_rise_and_return_and_delivered_matches_the_gateway(
    worker: tuple[Script, str], healthy_gateway: Gateway
) -> None:
    process, rid = worker
    assert process.ask("bill 10") == "billed"
    assert process.ask("flush") == "flushed"
    healthy_gateway.faults(report_status=503)
    assert process.ask("bill 50") == "billed"
    during = eventually(lambda: (m := metrics_of(process)) and spool_gauge(m, "records") >= 100 and m, timeout=15)
    assert during, metrics_of(process)
    assert spool_gauge(during, "oldest_age") > 0
    assert exported(during, "spooled") >= 100
    healthy_gateway.faults()
    after = eventually(
        lambda: (m := metrics_of(process)) and spool_gauge(m, "records") == 0 and exported(m, "delivered") >= 120 and m,
        timeout=20,
    )
    assert after, metrics_of(process)
    assert spool_gauge(after, "oldest_age") == 0
    assert spool_gauge(after, "dead_letters") == 0
    assert exported(after, "delivered") == healthy_gateway.count(rid) == 120
    assert exported(after, "dropped") == 0 and exported(after, "dead_letter") == 0


def test_token_cache_lookups_are_counted(healthy_gateway: Gateway) -> None:
    client = GatewayClient(healthy_gateway.url)
    try:
        assert client.validate_token("demo-alice") == "alice"  # miss: one gateway call
        assert client.validate_token("demo-alice") == "alice"  # hit
        assert client._cached_caller("demo-alice") == "alice"  # hit (the middleware's path)
        for _ in range(2):
            with pytest.raises(Exception, match="invalid token"):
                client.validate_token("not-a-token")  # a miss rejected, then a hit of the rejection
    finally:
        client.close()
    assert client.lookups == {"hit": 2, "miss": 2, "rejected": 2}


def test_spool_gauges_read_depth_dead_letters_and_age(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path))
    assert SpoolGauges(spool.stats).reading() == (0, 0, 0.0)
    spool.put([("a", b"{}"), ("b", b"{}")], error="down")
    spool.dead_letter("c", b"{}", "HTTP 400")
    assert eventually(lambda: SpoolGauges(spool.stats).reading()[2] > 0, timeout=5)  # the oldest ages
    waiting, dead, _ = SpoolGauges(spool.stats).reading()
    assert (waiting, dead) == (2, 1)
    spool.close()


def test_check_prints_the_spools_depth_and_age_and_fails_past_max_age(healthy_gateway: Gateway, tmp_path: Path) -> None:
    spool = Spool(str(tmp_path))
    spool.put([("old-1", b"{}")], error="down")
    spool.close()
    env = {**os.environ, "OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path), "COLUMNS": "200"}

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway_otel.cli", "check", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    relaxed = check("--max-age", "3600")
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert "1 waiting" in relaxed.stdout and "oldest" in relaxed.stdout
    assert eventually(lambda: check("--max-age", "1").returncode == 1, timeout=10)  # once it is a second old
    strict = check("--max-age", "1")
    assert strict.returncode == 1
    assert "waited longer than 1" in strict.stdout
