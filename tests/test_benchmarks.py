"""The benchmark command runs end to end in its short mode (it measures; this test only runs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Gateway

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.infra
def test_benchmarks_run_in_quick_mode() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((ROOT / "benchmarks" / "results" / "latest.json").read_text())
    assert results["quick"] is True
    for part in ("decorator", "end_to_end", "delivery", "fastapi", "inprocess", "memory"):
        assert part in results, part
    assert results["end_to_end"]["gateway-otel"]["records_held"] == 2 * results["end_to_end"]["gateway-otel"]["calls"]
    assert "delivery, one record per POST" in done.stdout
    assert results["delivery"]["wrk /report/logs"]["records_per_s"] > 0  # the batch endpoint's own rate
    assert "FastAPI gateway vs bare" in done.stdout
    assert set(results["inprocess"]["us_per_request"]) == {"bare", "middleware", "gateway", "plugins"}


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["bare", "middleware", "gateway", "gateway-no-request-records"])
def test_each_variant_the_instruction_count_runs_answers_its_requests(
    healthy_gateway: Gateway, tmp_path: Path, variant: str
) -> None:
    """What ``instructions.py`` runs under valgrind, run here without it, briefly (the quick run skips
    the count itself: valgrind's start-up takes minutes)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from instructions import child_env
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "instructions.py"), "--child", variant, "10"],
        env=child_env(variant, healthy_gateway.url, str(tmp_path / "spool")),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
