"""The OpenTelemetry path: OTLP to a collector (rotel) and into the gateway, zero-code export, sampling."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import rotel

from gateway_otel import operation_log, trace_id_context
from gateway_otel.testing import eventually, free_port, stop_process, wait_for_port

from conftest import Gateway, run_program


def test_otlp_json_operation_spans_become_the_exporters_records(
    healthy_gateway: Gateway, captured_spans: Any, flush: Any
) -> None:
    rid = uuid.uuid4().hex

    @operation_log(is_cost_log=True)
    def charge(amount: int) -> int:
        return amount

    token = trace_id_context.set(rid)
    try:
        charge(3)
    finally:
        trace_id_context.reset(token)
    flush()
    direct = {r["uuid"]: r for r in healthy_gateway.wait_records(rid, 2)}
    (span,) = [s for s in captured_spans.get_finished_spans() if s.name == "charge"]
    attributes = [
        {"key": key, "value": {"boolValue": value} if isinstance(value, bool) else {"stringValue": str(value)}}
        for key, value in span.attributes.items()
    ]
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": direct.popitem()[1]["extraInfo"]["service"]}}
                    ]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": format(span.context.trace_id, "032x"),
                                "spanId": format(span.context.span_id, "016x"),
                                "parentSpanId": "",
                                "name": span.name,
                                "startTimeUnixNano": str(span.start_time),
                                "endTimeUnixNano": str(span.end_time),
                                "attributes": attributes,
                                "status": {"code": 0},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    before = healthy_gateway.stats()
    response = httpx.post(
        f"{healthy_gateway.url}/v1/traces", content=orjson.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200
    after = healthy_gateway.stats()
    assert after["duplicates"] - before["duplicates"] == 2  # the same two uuids: acknowledged, not stored again
    assert after["stored"] == before["stored"]


def test_otlp_receiver_refuses_garbage_with_400(healthy_gateway: Gateway) -> None:
    for content_type in ("application/x-protobuf", "application/json"):
        response = httpx.post(
            f"{healthy_gateway.url}/v1/traces", content=b"\xff\x00garbage", headers={"content-type": content_type}
        )
        assert response.status_code == 400
        assert response.json()["code"] == 400


@pytest.fixture
def collector(healthy_gateway: Gateway, tmp_path: Path) -> Iterator[dict[str, int]]:
    """The rotel OTLP collector, receiving on free HTTP and gRPC ports and forwarding to the gateway's
    /v1/traces; yields its port by protocol."""
    agent = Path(rotel.__file__).parent / "rotel-agent"
    http_port, grpc_port = free_port(), free_port()
    args = [
        str(agent),
        "start",
        "--otlp-grpc-endpoint",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint",
        f"127.0.0.1:{http_port}",
        "--exporter",
        "otlp",
        "--otlp-exporter-endpoint",
        healthy_gateway.url,
        "--otlp-exporter-protocol",
        "http",
        "--batch-timeout",
        "100ms",
        "--pid-file",
        str(tmp_path / "rotel.pid"),
        "--log-file",
        str(tmp_path / "rotel.log"),
    ]
    with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as process:
        try:
            wait_for_port(http_port, process=process)
            wait_for_port(grpc_port, process=process)
            yield {"http/protobuf": http_port, "grpc": grpc_port}
        finally:
            stop_process(process, 10)


@pytest.mark.infra
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_through_a_real_collector_give_the_same_records_and_no_double_billing(
    protocol: str, healthy_gateway: Gateway, collector: dict[str, int], tmp_path: Path
) -> None:
    rid = f"otlp-{uuid.uuid4().hex}"
    n = 50
    before = healthy_gateway.stats()
    result = run_program(
        "billing",
        rid,
        n,
        env={
            "OPENAPI_HOST": healthy_gateway.url,
            "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector[protocol]}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_SERVICE_NAME": "otlp-test",
        },
    )
    assert result.returncode == 0, result.stderr
    # Every record arrives twice: from the adapter, and from the collector's OTLP. Stored once.
    assert eventually(lambda: healthy_gateway.stats()["duplicates"] - before["duplicates"] >= 2 * n, timeout=30)
    after = healthy_gateway.stats()
    assert after["duplicates"] - before["duplicates"] == 2 * n
    records = healthy_gateway.records(rid)
    assert len(records) == 2 * n
    assert sum(1 for r in records if r["opLogType"] == "out" and r["isCostLog"]) == n
    assert {r["extraInfo"]["service"] for r in records} == {"otlp-test"}


def test_sampling_never_drops_billing_records(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"sampled-{uuid.uuid4().hex}"
    before = healthy_gateway.stats()
    result = run_program(
        "billing",
        rid,
        1000,
        env={
            "OPENAPI_HOST": healthy_gateway.url,
            "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool"),
            "OTEL_EXPORTER_OTLP_ENDPOINT": healthy_gateway.url,  # the gateway's own OTLP receiver
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.01",
        },
    )
    assert result.returncode == 0, result.stderr
    records = healthy_gateway.wait_records(rid, 2000, timeout=30)
    assert sum(1 for r in records if r["opLogType"] == "out" and r["isCostLog"]) == 1000
    # Only sampled traces went over OTLP: each gave its two records a second time (deduplicated).
    assert eventually(lambda: healthy_gateway.stats()["duplicates"] > before["duplicates"], timeout=10)
    traces_over_otlp = (healthy_gateway.stats()["duplicates"] - before["duplicates"]) / 2
    assert 1 <= traces_over_otlp <= 35, traces_over_otlp
