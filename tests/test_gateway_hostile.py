"""The reference gateway's OTLP receiver and its address, against hostile or careless input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from gateway_otel._servers import GatewayProcess, free_port, wait_for_port
from gateway_otel.testing import eventually

from conftest import run_program


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    server = GatewayProcess(tmp_path_factory.mktemp("hostile-gateway"), faults=False)
    try:
        yield server
    finally:
        server.stop()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def gzip_of_zeros(size: int) -> bytes:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1024 * 1024)
    parts = [deflate.compress(chunk) for _ in range(size // len(chunk))]
    return b"".join([*parts, deflate.flush()])


def test_a_gzip_bomb_is_refused_with_bounded_memory(gateway: GatewayProcess) -> None:
    bomb = gzip_of_zeros(512 * 1024 * 1024)
    assert len(bomb) < 1024 * 1024
    response = gateway.client.post(
        "/v1/traces",
        content=bomb,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    assert response.status_code == 413, response.text
    assert peak_rss_mib(gateway.process.pid) < 256  # the whole body would take 512 MiB


def span(span_id: str, trace_id: str, **attributes: Any) -> dict[str, Any]:
    return {
        "traceId": trace_id,
        "spanId": span_id,
        "name": "op",
        "startTimeUnixNano": "2000000000",
        "endTimeUnixNano": "3000000000",
        "attributes": [{"key": key, "value": {"stringValue": str(value)}} for key, value in attributes.items()],
    }


def export(*spans: dict[str, Any]) -> bytes:
    return orjson.dumps({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": list(spans)}]}]})


def test_a_malformed_span_is_rejected_alone(gateway: GatewayProcess) -> None:
    trace_id = uuid.uuid4().hex
    rid = f"partial-{trace_id}"
    good = span("1" * 16, trace_id, **{"gateway.op_type": "good", "gateway.request_id": rid, "gateway.request": "{}"})
    bad = span("2" * 16, trace_id, **{"gateway.op_type": "bad", "gateway.request_id": rid, "gateway.request": "{oops"})
    spliced = span(
        "3" * 16,
        trace_id,
        **{
            "gateway.op_type": "spliced",
            "gateway.request_id": rid,
            "gateway.request": '{},"callerId":"bob","isCostLog":true,"uuid":"chosen-by-the-sender"',
        },
    )
    unreadable = {"traceId": "not hex", "spanId": "4" * 16, "attributes": []}
    response = gateway.client.post(
        "/v1/traces", content=export(good, bad, spliced, unreadable), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    partial = response.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "3"
    assert "gateway.request" in partial["errorMessage"]
    records = gateway.wait_records(rid, 2)
    assert sorted((r["opType"], r["opLogType"]) for r in records) == [("good", "in"), ("good", "out")]
    assert gateway.stats()["stored"] == 2
    assert not any(r["uuid"] == "chosen-by-the-sender" for r in records)


def test_protobuf_exports_answer_partial_success_too(gateway: GatewayProcess) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    proto_span = request.resource_spans.add().scope_spans.add().spans.add()
    proto_span.trace_id = uuid.uuid4().bytes
    proto_span.span_id = b"\x05" * 8
    for key, value in (("gateway.op_type", "bad"), ("gateway.request", "not json")):
        attribute = proto_span.attributes.add()
        attribute.key = key
        attribute.value.string_value = value
    response = gateway.client.post(
        "/v1/traces", content=request.SerializeToString(), headers={"content-type": "application/x-protobuf"}
    )
    assert response.status_code == 200
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(response.content)
    assert answer.partial_success.rejected_spans == 1


def test_an_operation_that_ends_before_it_starts_lasts_zero(gateway: GatewayProcess) -> None:
    trace_id = uuid.uuid4().hex
    rid = f"backwards-{trace_id}"
    backwards = span("6" * 16, trace_id, **{"gateway.op_type": "backwards", "gateway.request_id": rid})
    backwards["startTimeUnixNano"], backwards["endTimeUnixNano"] = "9000000000", "1000000000"
    response = gateway.client.post(
        "/v1/traces", content=export(backwards), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    out = next(r for r in gateway.wait_records(rid, 2) if r["opLogType"] == "out")
    assert out["durationMillis"] == 0


def test_a_gateway_bound_beyond_loopback_warns(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway_otel.gateway", "--host", "0.0.0.0", "--port", str(port)],
            env=os.environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, process=process)
            assert eventually(lambda: "beyond this machine" in log.read_text(), timeout=10)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


def test_a_report_token_guards_every_write_and_the_adapter_sends_it(tmp_path: Path) -> None:
    token = f"rt-{uuid.uuid4().hex}"
    guarded = GatewayProcess(tmp_path / "gateway", faults=False, report_token=token)
    try:
        record = {"uuid": str(uuid.uuid4()), "requestId": "guarded", "opLogType": "in", "opType": "x"}
        assert guarded.client.post("/v1/openapi/report/log", json=record).status_code == 401
        assert guarded.client.post("/v1/openapi/report/logs", json=[record]).status_code == 401
        assert (
            guarded.client.post(
                "/v1/traces", content=export(), headers={"content-type": "application/json"}
            ).status_code
            == 401
        )
        wrong = {"Authorization": "Bearer not-it"}
        assert guarded.client.post("/v1/openapi/report/log", json=record, headers=wrong).status_code == 401
        # Reads and token checks need none of it.
        assert (
            guarded.client.get("/v1/openapi/validate/tokens", headers={"Authorization": "demo-alice"}).status_code
            == 200
        )
        rid = f"guarded-{uuid.uuid4().hex}"
        env = {"OPENAPI_HOST": guarded.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")}
        result = run_program("billing", rid, 3, "flush", env={**env, "GATEWAY_OTEL_REPORT_TOKEN": token})
        assert result.returncode == 0, result.stderr
        assert guarded.count(rid) == 6
        assert token not in result.stderr
    finally:
        guarded.stop()
