"""The token client in a long-lived process: one ``asyncio.run()`` after another leaves nothing behind."""

from __future__ import annotations

import asyncio
import gc

from gateway_otel import GatewayClient

from conftest import Gateway


def test_each_event_loop_s_client_goes_with_its_loop(healthy_gateway: Gateway) -> None:
    client = GatewayClient(healthy_gateway.url, token_ttl=1e-6)  # every look-up asks the gateway
    for _ in range(20):
        assert asyncio.run(client.avalidate_token("demo-alice")) == "alice"
    assert client.lookups["miss"] == 20
    gc.collect()
    assert len(client._async_clients) == 0
