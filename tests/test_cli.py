"""The gateway-otel command: demo, logs, check, spool, and the gateway's page in a real browser."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_otel.testing import GatewayProcess

CLI = [sys.executable, "-m", "gateway_otel.cli"]


def gateway_otel(
    *args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    keep = tmp_path_factory.mktemp("demo")
    result = gateway_otel("demo", "--keep", str(keep))
    assert result.returncode == 0, result.stderr[-3000:]
    return keep, result.stdout


@pytest.fixture(scope="module")
def kept_gateway(demo: tuple[Path, str]) -> Iterator[GatewayProcess]:
    """A reference gateway serving the database the demo kept."""
    server = GatewayProcess(demo[0], faults=False)
    try:
        yield server
    finally:
        server.stop()


def request_ids(output: str) -> list[str]:
    return re.findall(r"^request (\S+)", output, re.M)


def test_demo_shows_at_least_five_request_trees(demo: tuple[Path, str]) -> None:
    _, output = demo
    assert len(request_ids(output)) >= 5
    for expected in ("summarize", "tokenize", "translate", "stream_answer", "embed", "HTTP 401", "not billed (failed)"):
        assert expected in output, expected
    assert re.search(r"failing translation \(bob\)\s+-> HTTP 422", output), output  # an error, not a 200
    # The adapter's own metrics, once: every record the edge made was delivered.
    assert re.search(r"gateway_otel\.records\.exported\s+│\s+outcome=delivered\s+│\s+[1-9]", output), output
    assert re.search(r"gateway_otel\.token_cache\.lookups\s+│\s+result=miss\s+│\s+[1-9]", output), output


def test_demo_worker_reports_from_a_process_of_its_own_under_the_edges_request(demo: tuple[Path, str]) -> None:
    _, output = demo
    trees = [_tree(output, request_id) for request_id in request_ids(output)]
    tree = next(tree for tree in trees if any("call_worker" in line for line in tree))
    assert "caller bob" in tree[0]
    # One tree across the two services, each request a record pair of its own.
    assert re.search(r"^└── POST /v1/pipeline\s+demo-edge", tree[1]), tree
    assert re.search(r"^    └── call_worker\s+demo-edge", tree[2]), tree
    assert re.search(r"^        └── POST /embed\s+demo-worker", tree[3]), tree
    assert re.search(r"^            └── embed\s+demo-worker\s+success.*billed", tree[4]), tree


def test_demo_billing_matches_the_gateway_database(demo: tuple[Path, str]) -> None:
    keep, output = demo
    printed = {
        caller: (int(count), float(charged))
        for caller, count, charged in re.findall(r"│ (\w+)\s+│\s+(\d+) │\s+([\d.]+) │", output)
    }
    with contextlib.closing(sqlite3.connect(keep / "gateway.sqlite3")) as db:
        rows = db.execute(
            "SELECT caller_id, count(*), sum(charge) FROM records WHERE charge > 0 GROUP BY caller_id"
        ).fetchall()
    assert printed == {caller: (count, charged) for caller, count, charged in rows}
    assert printed["alice"][0] >= 1 and printed["bob"][0] >= 1


def _tree(output: str, request_id: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"request {request_id}"))
    tree = [lines[start]]
    for line in lines[start + 1 :]:
        if not re.match(r"^[│ ]*[├└]", line):
            break
        tree.append(line)
    return tree


def test_logs_prints_the_same_tree_as_the_demo(demo: tuple[Path, str], kept_gateway: GatewayProcess) -> None:
    _, output = demo
    for request_id in request_ids(output):
        logs = gateway_otel("logs", request_id, "--host", kept_gateway.url)
        assert logs.returncode == 0, logs.stderr
        assert _tree(logs.stdout, request_id) == _tree(output, request_id)


def test_check_says_not_ready_without_a_gateway_and_ready_with_one(
    kept_gateway: GatewayProcess, tmp_path: Path
) -> None:
    missing = gateway_otel("check", env={"OPENAPI_HOST": "", "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)})
    assert missing.returncode == 1
    assert "OPENAPI_HOST" in missing.stdout and "not ready" in missing.stdout
    unreachable = gateway_otel(
        "check", env={"OPENAPI_HOST": "http://127.0.0.1:9", "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)}
    )
    assert unreachable.returncode == 1 and "unreachable" in unreachable.stdout
    ready = gateway_otel("check", env={"OPENAPI_HOST": kept_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)})
    assert ready.returncode == 0, ready.stdout
    assert "ready" in ready.stdout


def test_spool_shows_replays_and_purges(kept_gateway: GatewayProcess, tmp_path: Path) -> None:
    from gateway_otel._spool import Spool

    spool = Spool(tmp_path)
    body = (
        b'{"uuid":"spooled-1","requestId":"spool-req","callerId":"bob","requestUrl":"/x","opLogType":"out",'
        b'"opType":"late","isCostLog":false,"operationStatus":"success","startTimeMillis":1,"durationMillis":1,'
        b'"request":{}}'
    )
    spool.put([("spooled-1", body)], error="gateway unavailable")
    spool.dead_letter("dead-1", body.replace(b"spooled-1", b"dead-1"), "HTTP 400: malformed")
    env = {"GATEWAY_OTEL_SPOOL_DIR": str(tmp_path), "OPENAPI_HOST": kept_gateway.url}
    shown = gateway_otel("spool", "show", env=env)
    assert shown.returncode == 0
    assert "spooled-1" in shown.stdout and "dead-1" in shown.stdout and "HTTP 400" in shown.stdout
    replayed = gateway_otel("spool", "replay", env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert {r["uuid"] for r in kept_gateway.records("spool-req")} == {"spooled-1", "dead-1"}
    spool.put([("again-1", body.replace(b"spooled-1", b"again-1"))])
    purged = gateway_otel("spool", "purge", env=env)
    assert purged.returncode == 0 and "removed 1" in purged.stdout
    assert Spool(tmp_path).counts() == (0, 0)


@pytest.mark.infra
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is installed by ./dev test")
def test_the_request_page_shows_every_record_in_a_real_browser(
    demo: tuple[Path, str], kept_gateway: GatewayProcess, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    _, output = demo
    request_id = next(rid for rid in request_ids(output) if len(kept_gateway.records(rid)) >= 4)
    records = kept_gateway.records(request_id)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 720})
            page.goto(f"{kept_gateway.url}/requests/{request_id}")
            page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
            shown = set(page.eval_on_selector_all("tr[data-uuid]", "rows => rows.map(r => r.dataset.uuid)"))
            operations = page.eval_on_selector_all(".row[data-span]", "rows => rows.length")
            page.screenshot(path=str(tmp_path / "request-page.png"), full_page=True)
        finally:
            browser.close()
    assert shown == {r["uuid"] for r in records}
    assert operations == len({r["extraInfo"]["spanId"] for r in records})
    assert (tmp_path / "request-page.png").stat().st_size > 10_000


def test_an_operation_called_through_another_service_nests_under_its_caller() -> None:
    from gateway_otel.cli import record_tree

    def pair(op: str, span: str, parent: str, start: int, duration: int) -> list[dict[str, Any]]:
        extra = {"traceId": "t" * 32, "spanId": span, "parentSpanId": parent, "service": op.partition(".")[0]}
        base = {"requestId": "r", "callerId": "alice", "opType": op, "isCostLog": False, "startTimeMillis": start}
        return [
            {
                **base,
                "uuid": f"{span}-in",
                "opLogType": "in",
                "operationStatus": "success",
                "durationMillis": 0,
                "extraInfo": extra,
            },
            {
                **base,
                "uuid": f"{span}-out",
                "opLogType": "out",
                "operationStatus": "success",
                "durationMillis": duration,
                "extraInfo": extra,
            },
        ]

    records = [
        *pair("edge.answer", "e1", "edge-server", 0, 100),
        *pair("edge.audit", "e2", "edge-server", 20, 10),  # beside answer (same parent), not inside it
        *pair("worker.infer", "w1", "worker-server", 10, 50),  # called over HTTP by answer
        *pair("worker.tokenize", "w2", "w1", 12, 5),  # a direct child: nests by its parent id
    ]
    tree = record_tree("r", records)

    def names(node: Any) -> list[str]:
        return [str(child.label).split("[/]")[0].removeprefix("[bold]") for child in node.children]

    assert names(tree) == ["edge.answer", "edge.audit"]
    answer = tree.children[0]
    assert names(answer) == ["worker.infer"]
    assert names(answer.children[0]) == ["worker.tokenize"]

    # Within one millisecond a child's interval equals its parent's, and may come first in the order:
    # the tree still nests it by its parent id (no operation is taken to run around its own parent).
    same = [*pair("worker.tokenize", "w2", "w1", 10, 0), *pair("worker.infer", "w1", "worker-server", 10, 0)]
    tree = record_tree("r", same)
    assert names(tree) == ["worker.infer"]
    assert names(tree.children[0]) == ["worker.tokenize"]
