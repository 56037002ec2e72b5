"""Internal services behind the gateway: identity from a trusted upstream, docs without a token,
request URLs too long for baggage."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from gateway_otel import (
    GatewayClient,
    current_caller_id,
    current_request_id,
    instrument_app,
    operation_log,
    request_url_context,
)
from gateway_otel._context import CUT_MARKER
from gateway_otel._servers import serve_in_thread
from gateway_otel.amqp import message_headers
from gateway_otel.middleware import HttpContextMiddleware
from gateway_otel.testing import free_port

from conftest import Gateway


@operation_log
def downstream_headers() -> dict[str, Any]:
    return message_headers()


def make_app(gateway: Gateway, *, trust_upstream: bool, server_spans: bool = True) -> FastAPI:
    app = FastAPI()

    @app.get("/who")
    async def who() -> dict[str, Any]:
        return {"caller": current_caller_id(), "request_id": current_request_id()}

    @app.get("/forward")
    async def forward() -> dict[str, Any]:
        return {"headers": downstream_headers(), "url": request_url_context.get()}

    client = GatewayClient(gateway.url)
    if server_spans:
        instrument_app(app, client=client, trust_upstream=trust_upstream)
    else:
        app.add_middleware(HttpContextMiddleware, client=client, trust_upstream=trust_upstream)
    return app


@pytest.fixture(params=[True, False], ids=["instrument_app", "middleware alone"])
def internal(request: pytest.FixtureRequest, healthy_gateway: Gateway, pipeline: Any) -> Iterator[str]:
    with serve_in_thread(
        make_app(healthy_gateway, trust_upstream=True, server_spans=request.param), free_port()
    ) as url:
        yield url


def test_a_trusted_upstreams_identity_needs_no_token(internal: str) -> None:
    rid = f"edge-{uuid.uuid4().hex}"
    baggage = f"gateway.caller_id=alice,gateway.request_id={rid}"
    response = httpx.get(f"{internal}/who", headers={"baggage": baggage})
    assert response.status_code == 200, response.text
    assert response.json() == {"caller": "alice", "request_id": rid}
    # Without that identity a token is still required.
    assert httpx.get(f"{internal}/who").status_code == 401
    assert httpx.get(f"{internal}/who", headers={"Authorization": "demo-bob"}).json()["caller"] == "bob"


def test_an_untrusting_service_ignores_identity_in_baggage(healthy_gateway: Gateway, pipeline: Any) -> None:
    with serve_in_thread(make_app(healthy_gateway, trust_upstream=False), free_port()) as url:
        assert httpx.get(f"{url}/who", headers={"baggage": "gateway.caller_id=admin"}).status_code == 401
        answer = httpx.get(f"{url}/who", headers={"baggage": "gateway.caller_id=admin", "Authorization": "demo-bob"})
        assert answer.json()["caller"] == "bob"


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/redoc"])
def test_the_docs_need_no_token(healthy_gateway: Gateway, pipeline: Any, path: str) -> None:
    with serve_in_thread(make_app(healthy_gateway, trust_upstream=False), free_port()) as url:
        assert httpx.get(f"{url}{path}").status_code == 200


def test_a_request_url_too_long_for_baggage_is_cut_to_fit_and_the_ids_travel(
    healthy_gateway: Gateway, pipeline: Any
) -> None:
    with serve_in_thread(make_app(healthy_gateway, trust_upstream=False), free_port()) as url:
        long_query = "q=" + "x" * 6000
        rid = f"long-{uuid.uuid4().hex}"
        answer = httpx.get(f"{url}/forward?{long_query}", headers={"Authorization": "demo-alice", "X-Request-ID": rid})
    assert answer.status_code == 200
    body = answer.json()
    assert body["url"].endswith(CUT_MARKER) and body["url"].startswith("http://")
    baggage = body["headers"]["baggage"]
    assert len(baggage) <= 8192
    assert f"gateway.request_id={rid}" in baggage and "gateway.caller_id=alice" in baggage
    assert "gateway.request_url=" in baggage  # cut, not dropped
