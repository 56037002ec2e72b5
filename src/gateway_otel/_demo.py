"""``gateway-otel demo``: the whole path on one machine, with no set-up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from . import (
    caller_id_context,
    configure,
    force_flush,
    operation_log,
    request_url_context,
    trace_id_context,
)
from ._servers import free_port, serve_in_thread
from .cli import billing_table, fetch_records, record_tree


@operation_log
def tokenize(text: str) -> list[str]:
    return text.split()


@operation_log(is_cost_log=True)
def summarize(text: str, *, max_words: int = 3, api_key: str = "") -> str:
    return " ".join(tokenize(text)[:max_words])


@operation_log(is_cost_log=True)
def translate(text: str, target: str) -> str:
    raise ValueError(f"no model for language {target!r}")


@operation_log(is_cost_log=True)
async def stream_answer(prompt: str) -> AsyncIterator[str]:
    for word in ("streamed", "answer", "to", prompt):
        await asyncio.sleep(0.01)
        yield word


def _as(caller: str, url: str) -> tuple[str, list[Any]]:
    request_id = uuid.uuid4().hex
    return request_id, [
        (trace_id_context, trace_id_context.set(request_id)),
        (caller_id_context, caller_id_context.set(caller)),
        (request_url_context, request_url_context.set(url)),
    ]


def _reset(tokens: list[Any]) -> None:
    for field, token in reversed(tokens):
        field.reset(token)


def run(console: Console, workdir: Path) -> None:
    from .gateway._server import build

    store, gateway_app = build(workdir / "gateway.sqlite3", demo=True)
    port = free_port()
    with serve_in_thread(gateway_app, port) as gateway_url:
        console.print(f"[bold]reference gateway[/] {gateway_url} (callers alice: demo-alice, bob: demo-bob)")
        os.environ.setdefault("OTEL_SERVICE_NAME", "demo-service")
        configure(openapi_host=gateway_url, spool_dir=str(workdir / "spool"))
        request_ids: list[str] = []

        with console.status("running sample operations"):
            rid, tokens = _as("alice", "http://demo/v1/summarize?api_key=secret")
            summarize("the quick brown fox jumps", api_key="sk-demo-secret")
            _reset(tokens)
            request_ids.append(rid)

            rid, tokens = _as("bob", "http://demo/v1/translate")
            with contextlib.suppress(ValueError):  # the failing operation of the demo
                translate("hello", "tlh")
            _reset(tokens)
            request_ids.append(rid)

            rid, tokens = _as("alice", "http://demo/v1/stream")

            async def consume() -> list[str]:
                return [word async for word in stream_answer("you")]

            asyncio.run(consume())
            _reset(tokens)
            request_ids.append(rid)

            force_flush(10)

        for request_id in request_ids:
            console.print(record_tree(request_id, fetch_records(gateway_url, request_id)))
        stats = httpx.get(f"{gateway_url}/v1/openapi/stats", timeout=10).json()["data"]
        console.print(billing_table(stats))
        console.print(f"records delivered: {stats['stored']}, duplicates refused: {stats['duplicates']}")
    store.close()
