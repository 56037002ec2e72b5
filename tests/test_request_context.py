"""``request_context``: a request-scoped mapping in OTel Context, filled by plugins, in log lines,
propagated by choice."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from gateway_otel import GatewayClient, context_executor, instrument_app, request_context, run_in_context
from gateway_otel._servers import serve_in_thread
from gateway_otel.amqp import message_headers
from gateway_otel.plugins import CorrelationIdPlugin, ForwardedForPlugin, RequestTimePlugin, UserAgentPlugin
from gateway_otel.testing import free_port

from conftest import Gateway

ALICE = {"Authorization": "demo-alice"}
PLUGINS = [CorrelationIdPlugin(), UserAgentPlugin(), ForwardedForPlugin(), RequestTimePlugin()]


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(request_id)s|%(correlation_id)s|%(user_agent)s|%(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def log_lines() -> Iterator[Keep]:
    keep = Keep()
    logger = logging.getLogger("tests.request_context")
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    yield keep
    logger.removeHandler(keep)


def make_app(gateway: Gateway, **options: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/context")
    async def context() -> dict[str, Any]:
        request_context["set_in_endpoint"] = "yes"
        pool = ThreadPoolExecutor(1)
        in_pool = await asyncio.wrap_future(context_executor(pool).submit(lambda: request_context["set_in_endpoint"]))
        pool.shutdown()
        in_threadpool = await run_in_threadpool(run_in_context(lambda: request_context.get("correlation_id")))
        logging.getLogger("tests.request_context").info("handled")
        return {"data": request_context.data, "in_pool": in_pool, "in_threadpool": in_threadpool}

    @app.get("/fresh")
    async def fresh() -> dict[str, Any]:
        return {"set_in_endpoint": request_context.get("set_in_endpoint")}

    @app.get("/headers")
    async def headers() -> dict[str, Any]:
        return {"outgoing": message_headers(), "correlation_id": request_context.get("correlation_id")}

    return instrument_app(app, client=GatewayClient(gateway.url), **options)


@pytest.fixture(scope="module")
def service(gateway: Gateway, pipeline: Any, log_lines: Keep) -> Iterator[str]:
    app = make_app(gateway, context_plugins=PLUGINS, propagate=["correlation_id"])
    with serve_in_thread(app, free_port()) as url:
        yield url


def test_outside_a_request_it_says_so() -> None:
    assert not request_context.exists()
    with pytest.raises(RuntimeError, match="outside a request"):
        request_context["x"] = 1
    with pytest.raises(RuntimeError, match="outside a request"):
        _ = request_context.data


def test_plugins_fill_it_and_it_follows_threads_and_pools(service: str, log_lines: Keep) -> None:
    headers = {
        **ALICE,
        "X-Correlation-ID": "corr-1",
        "User-Agent": "probe/2.0",
        "X-Forwarded-For": "203.0.113.5, 10.0.0.1",
        "X-Request-ID": "rid-ctx-1",
    }
    response = httpx.get(f"{service}/context", headers=headers)
    assert response.status_code == 200
    body = response.json()
    data = body["data"]
    assert data["correlation_id"] == "corr-1" and response.headers["x-correlation-id"] == "corr-1"
    assert data["user_agent"] == "probe/2.0"
    assert data["forwarded_for"] == "203.0.113.5"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", data["request_time"])
    assert data["set_in_endpoint"] == "yes"
    assert body["in_pool"] == "yes" and body["in_threadpool"] == "corr-1"
    assert "rid-ctx-1|corr-1|probe/2.0|handled" in log_lines.lines
    # Set during a request, gone after it.
    assert httpx.get(f"{service}/fresh", headers=ALICE).json() == {"set_in_endpoint": None}


@pytest.mark.parametrize("given", [None, "bad id with spaces", "x" * 200])
def test_a_missing_or_unusable_correlation_id_is_replaced(service: str, given: str | None) -> None:
    headers = {**ALICE, **({"X-Correlation-ID": given} if given else {})}
    response = httpx.get(f"{service}/context", headers=headers)
    made = response.headers["x-correlation-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made) and response.json()["data"]["correlation_id"] == made


def test_values_never_hold_secrets(service: str) -> None:
    secret = f"s3cr3t{uuid.uuid4().hex}"
    response = httpx.get(f"{service}/context", headers={**ALICE, "User-Agent": f"tool/1 Bearer {secret}"})
    assert secret not in response.text


def test_named_keys_travel_as_baggage_and_a_trusting_downstream_restores_them(
    service: str, gateway: Gateway, pipeline: Any
) -> None:
    outgoing = httpx.get(f"{service}/headers", headers={**ALICE, "X-Correlation-ID": "corr-9"}).json()["outgoing"]
    assert "gateway.context.correlation_id=corr-9" in outgoing["baggage"]
    downstream = make_app(gateway, context_plugins=[CorrelationIdPlugin()], trust_upstream=True)
    untrusting = make_app(gateway, context_plugins=[CorrelationIdPlugin()])
    with serve_in_thread(downstream, free_port()) as url, serve_in_thread(untrusting, free_port()) as other:
        restored = httpx.get(f"{url}/headers", headers=outgoing).json()
        assert restored["correlation_id"] == "corr-9"
        assert "gateway.context.correlation_id=corr-9" in restored["outgoing"]["baggage"]  # on along the chain
        ignored = httpx.get(f"{other}/headers", headers={**ALICE, **outgoing}).json()
        assert ignored["correlation_id"] != "corr-9"
        assert "gateway.context." not in ignored["outgoing"]["baggage"]  # an untrusting service drops it
    # Nothing propagates unless named.
    with serve_in_thread(make_app(gateway, context_plugins=[CorrelationIdPlugin()]), free_port()) as plain:
        unnamed = httpx.get(f"{plain}/headers", headers={**ALICE, "X-Correlation-ID": "corr-10"}).json()
    assert "corr-10" not in unnamed["outgoing"].get("baggage", "")


def test_log_fields_outside_a_request_are_dashes(service: str, log_lines: Keep) -> None:
    logging.getLogger("tests.request_context").info("outside")
    assert "-|-|-|outside" in log_lines.lines
