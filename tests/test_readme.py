"""Every code block of the README runs as written, or is mirrored by the test named for it here."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from gateway_otel._servers import GatewayProcess, free_port
from gateway_otel._spool import Spool

from conftest import Gateway, parent_op, serving, uvicorn

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

#: Each block by its first line: what runs it.
EXERCISED = {
    "./dev demo    # run the whole path": "tests/test_cli.py (the demo) and CI (./dev test)",
    "pip install gateway-otel              # scripts": "tests/test_install.py",
    "from gateway_otel import operation_log, trace_id_context, caller_id_context, request_url_context": (
        "test_migration_block_reports_under_the_ids_it_sets"
    ),
    "from fastapi import FastAPI": "test_fastapi_block_serves_authenticates_and_bills",
    "OTEL_TRACES_EXPORTER=gateway,otlp OPENAPI_HOST=https://gateway opentelemetry-instrument uvicorn app:app": (
        "tests/test_zero_code.py (an unmodified app, and a script, under opentelemetry-instrument)"
    ),
    "import httpx": "test_edge_and_internal_service_block_is_one_tree",
    '{"callers": {"alice": {"tokens": ["secret-token"], "models": ["*"], "balance": 100.0}},': (
        "test_gateway_config_block_is_a_config_the_gateway_reads"
    ),
    "# conftest.py": "test_testing_block_passes_and_delivers_nothing",
    "import logging": "test_request_context_block_serves_as_the_seeds_patterns",
    "livenessProbe:": "tests/test_metrics.py::test_check_prints_the_spools_depth_and_age_and_fails_past_max_age",
    "src/gateway_otel/": "(the layout: not code)",
}


def blocks() -> list[str]:
    return [match.group(1) for match in re.finditer(r"^```[a-z]*\n(.*?)^```", README, re.S | re.M)]


def block(first_line: str) -> str:
    return next(text for text in blocks() if text.startswith(first_line))


def test_every_block_is_exercised() -> None:
    firsts = [text.splitlines()[0] for text in blocks()]
    named = [next((key for key in EXERCISED if first.startswith(key)), first) for first in firsts]
    assert sorted(named) == sorted(EXERCISED), "a README block changed or is new: exercise it and name it here"


def test_migration_block_reports_under_the_ids_it_sets(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"readme-{uuid.uuid4().hex}"
    code = block("from gateway_otel import operation_log").replace('"request-id"', repr(rid))
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = healthy_gateway.wait_records(rid, 2)
    assert sorted(r["opLogType"] for r in records) == ["in", "out"]
    assert {(r["opType"], r["callerId"], r["requestUrl"]) for r in records} == {
        ("safety_check", "alice", "https://svc/v1/check")
    }


def write_app(directory: Path) -> None:
    (directory / "app.py").write_text(block("from fastapi import FastAPI"))


def test_fastapi_block_serves_authenticates_and_bills(healthy_gateway: Gateway, tmp_path: Path) -> None:
    write_app(tmp_path)
    port = free_port()
    env = {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")}
    with serving(uvicorn("app:app", port), port=port, cwd=tmp_path, env=env):
        url = f"http://127.0.0.1:{port}/v1/summarize"
        assert httpx.post(url, json={"text": "t"}).status_code == 401
        response = httpx.post(url, json={"text": "t"}, headers={"Authorization": "demo-alice"})
        assert response.status_code == 200, response.text
        request_id = response.headers["x-request-id"]
        records = healthy_gateway.wait_records(request_id, 2)
        billed = [r for r in records if r["opLogType"] == "out" and r["isCostLog"]]
        assert [(r["opType"], r["callerId"]) for r in billed] == [("summarize", "alice")]


def test_edge_and_internal_service_block_is_one_tree(healthy_gateway: Gateway, tmp_path: Path) -> None:
    edge_port, scorer_port = free_port(), free_port()
    code = block("import httpx").replace("http://scorer:8000", f"http://127.0.0.1:{scorer_port}")
    (tmp_path / "services.py").write_text(code)
    env = {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")}
    with contextlib.ExitStack() as servers:
        for app, port in (("edge", edge_port), ("scorer", scorer_port)):
            service_env = {**env, "OTEL_SERVICE_NAME": app}
            servers.enter_context(serving(uvicorn(f"services:{app}", port), port=port, cwd=tmp_path, env=service_env))
        url = f"http://127.0.0.1:{edge_port}/v1/rpc"
        assert httpx.post(url, json={"text": "four"}).status_code == 401  # the edge checks tokens
        response = httpx.post(url, json={"text": "four"}, headers={"Authorization": "demo-alice"})
        assert response.status_code == 200 and response.json() == {"score": 4}, response.text
        records = healthy_gateway.wait_records(response.headers["x-request-id"], 8)
    assert len(records) == 8
    assert {(r["callerId"], r["extraInfo"]["traceId"]) for r in records} == {
        ("alice", records[0]["extraInfo"]["traceId"])
    }
    assert {r["opType"]: (parent_op(records, r), r["extraInfo"]["service"]) for r in records} == {
        "POST /v1/rpc": (None, "edge"),
        "ask_scorer": ("POST /v1/rpc", "edge"),
        "POST /score": ("ask_scorer", "scorer"),
        "score": ("POST /score", "scorer"),
    }


def test_gateway_config_block_is_a_config_the_gateway_reads(tmp_path: Path) -> None:
    config = tmp_path / "gateway.json"
    config.write_text(block('{"callers"'))
    json.loads(config.read_text())
    server = GatewayProcess(tmp_path, faults=False, config=config)
    try:
        response = server.client.get("/v1/openapi/validate/tokens", headers={"Authorization": "secret-token"})
        assert response.json()["data"] == "alice"
    finally:
        server.stop()


def test_testing_block_passes_and_delivers_nothing(tmp_path: Path) -> None:
    write_app(tmp_path)
    conftest, test = block("# conftest.py").split("# test_billing.py")
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_billing.py").write_text(test)
    gateway = GatewayProcess(tmp_path / "gateway", faults=False)
    spool = tmp_path / "spool"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_billing.py"],
            cwd=tmp_path,
            env={**os.environ, "OPENAPI_HOST": gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(spool)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 passed" in result.stdout
        assert gateway.stats()["stored"] == 0  # the test's records billed no one
    finally:
        gateway.stop()
    assert Spool(str(spool)).counts() == (0, 0)  # and none waits for a later process to deliver


def test_request_context_block_serves_as_the_seeds_patterns(healthy_gateway: Gateway, tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(block("import logging"))
    port = free_port()
    log = tmp_path / "shop.log"
    env = {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")}
    with serving(uvicorn("shop:app", port), port=port, cwd=tmp_path, env=env, log=log):
        headers = {"Authorization": "demo-alice", "X-Request-ID": "seed-rid-1", "X-Correlation-ID": "corr-7"}
        response = httpx.get(f"http://127.0.0.1:{port}/v1/items?shop=east", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"request_id": "seed-rid-1", "shop": "east", "seen_by_thread": "east"}
    assert response.headers["x-correlation-id"] == "corr-7"
    assert "WARNING [seed-rid-1] [corr-7] shop: audited" in log.read_text()
