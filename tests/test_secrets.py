"""No secret leaves: not in records, spans, OTLP bytes, log lines or the spool on disk."""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway_otel._servers import serve_in_thread
from gateway_otel._spool import Spool
from gateway_otel.testing import eventually, free_port, wait_for_port

from conftest import PROGRAMS, Gateway, request_body


class OtlpCapture:
    """An OTLP/HTTP endpoint that keeps every body it receives, decompressed."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await request_body(receive)
        headers = dict(scope["headers"])
        self.bodies.append(gzip.decompress(body) if headers.get(b"content-encoding") == b"gzip" else body)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-protobuf")]}
        )
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def otlp_capture() -> Iterator[tuple[str, OtlpCapture]]:
    capture = OtlpCapture()
    with serve_in_thread(capture, free_port()) as url:
        yield url, capture


@pytest.mark.slow
def test_no_secret_leaves_the_process(
    healthy_gateway: Gateway, otlp_capture: tuple[str, OtlpCapture], tmp_path: Path
) -> None:
    secrets = {
        "token": f"tok-{uuid.uuid4().hex}",
        "password": f"pw-{uuid.uuid4().hex}",
        "api_key": f"key-{uuid.uuid4().hex}",
        "query": f"q-{uuid.uuid4().hex}",
        "cookie": f"ck-{uuid.uuid4().hex}",
    }
    otlp_url, capture = otlp_capture
    port = free_port()
    spool = tmp_path / "spool"
    log = tmp_path / "service.log"
    # The gateway takes the token (it must know it) from the demo callers: register a secret one.
    healthy_gateway.faults()
    from gateway_otel.gateway import Store

    with contextlib.closing(Store(healthy_gateway.db)) as store:
        store.add_caller("carol", tokens=[secrets["token"]], balance=10)
    with (
        log.open("wb") as out,
        subprocess.Popen(
            [sys.executable, str(PROGRAMS / "leaky_app.py"), str(port)],
            env={
                **os.environ,
                "OPENAPI_HOST": healthy_gateway.url,
                "GATEWAY_OTEL_SPOOL_DIR": str(spool),
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url,
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
        ) as service,
    ):
        try:
            wait_for_port(port, process=service)
            body = {
                "user": "carol",
                "password": secrets["password"],
                "options": {"api_key": secrets["api_key"], "n": 1},
            }
            url = f"http://127.0.0.1:{port}/v1/login?access_token={secrets['query']}&page=1"
            headers = {"Authorization": f"Bearer {secrets['token']}", "Cookie": f"session={secrets['cookie']}"}
            first = httpx.post(url, json=body, headers=headers)
            assert first.status_code == 200
            # its operation's records and the request's own
            assert len(healthy_gateway.wait_records(first.headers["x-request-id"], 6)) == 6
            healthy_gateway.faults(report_status=503)  # the next request's records wait in the spool
            response = httpx.post(url, json=body, headers=headers)
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            spooled = Spool(str(spool))
            assert eventually(lambda: any(request_id.encode() in r.body for r in spooled.pending()), timeout=20)
            spooled.close()
        finally:
            service.send_signal(signal.SIGTERM)
            service.wait(30)
            healthy_gateway.faults()
    assert (spool / "spool.sqlite3").exists()
    spooled = b"".join(path.read_bytes() for path in spool.iterdir())
    assert request_id.encode() in spooled  # the spool did hold this request's records
    stored = healthy_gateway.db.read_bytes() + b"".join(
        p.read_bytes() for p in healthy_gateway.db.parent.glob("gateway.sqlite3-*")
    )
    assert b"login" in stored
    assert capture.bodies, "no OTLP export arrived"
    places = {
        "gateway database": stored,
        "OTLP bytes": b"".join(capture.bodies),
        "log output": log.read_bytes(),
        "spool file": spooled,
    }
    for place, content in places.items():
        for name, secret in secrets.items():
            assert secret.encode() not in content, f"{name} leaked into the {place}"
    assert b"[REDACTED]" in places["OTLP bytes"] and b"[REDACTED]" in places["gateway database"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://svc:8000/v1/chat", "http://svc:8000/v1/chat"),
        ("http://svc/v1/chat?api_key=abc&lang=en", "http://svc/v1/chat?api_key=[REDACTED]&lang=en"),
        ("http://alice:pw@svc/v1/chat", "http://[REDACTED]@svc/v1/chat"),
        ("http://svc/v1/chat?lang=en#part", "http://svc/v1/chat?lang=en#part"),
    ],
)
def test_request_urls_lose_their_secrets(url: str, expected: str) -> None:
    from gateway_otel._scrub import default_scrubber

    assert default_scrubber.scrub_url(url) == expected


@pytest.mark.parametrize(
    "name",
    [
        "authorization", "Auth", "access_token", "password", "passwd", "pwd", "client_secret", "apiKey",
        "api-key", "Cookie", "session_id", "credentials", "private_key", "accessKey", "signature", "jwt", "otp",
    ],
)  # fmt: skip
def test_serialized_payloads_lose_every_secret_name(name: str) -> None:
    from gateway_otel._scrub import default_scrubber

    scrubbed = orjson.loads(default_scrubber.scrub_json(orjson.dumps({"payload": {name: "s3cr3t-value", "n": 1}})))
    assert scrubbed == {"payload": {name: "[REDACTED]", "n": 1}}


def test_a_payload_without_secrets_is_returned_as_it_is() -> None:
    from gateway_otel._scrub import default_scrubber

    data = orjson.dumps({"prompt": "hello gateway", "temperature": 0.5, "usage": {"total_tokens": 47}})
    assert default_scrubber.scrub_json(data) is data


def test_configured_patterns_redact_serialized_payloads() -> None:
    from gateway_otel._scrub import Scrubber

    scrubber = Scrubber(patterns=[r"ssn|social"])
    data = orjson.dumps({"customer": {"SSN": "123-45-6789", "socialNumber": "987", "name": "Ada"}})
    assert orjson.loads(scrubber.scrub_json(data)) == {
        "customer": {"SSN": "[REDACTED]", "socialNumber": "[REDACTED]", "name": "Ada"}
    }
