"""The adapter's CPU per request, with the app called as ASGI in one process: python benchmarks/inprocess.py

Four apps of ``fastapi_app.py`` live in one process: the bare app, the app with ``instrument_app``
and no operation, the app with ``instrument_app`` and one ``operation_log`` (the wrk part's
``gateway``), and the same with the four request context plugins. Each round sends a batch of the
same POST to each, in a random order, and takes the CPU time of this thread per request; the median
over the rounds is reported. Why: under wrk this machine's speed drifts within a minute, and one
run's ratio to the bare runs beside it moves too much to tell two commits apart; batches a fraction
of a second apart, in one process, drift together. Without uvicorn and the network, the bare app's
request costs about half of what it does under wrk, so this ratio is not the bar's: the figures are
the adapter's own microseconds.

The records go wherever the environment says (``OPENAPI_HOST``, ``GATEWAY_OTEL_RELAY``, ...). Each
batch ends with a pause of twice the relay's hand-over pause, inside the timed span: the hand-over
runs on the event loop, as under load, and the pause itself takes no CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

from fastapi_app import make_app

from gateway_otel._handover import RELAY_PAUSE

BODY = b'{"prompt": "hello gateway", "temperature": 0.5}'
#: The request wrk sends (post.lua), as uvicorn hands it to the app.
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"wrk"),
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer demo-alice"),
    (b"content-length", str(len(BODY)).encode()),
]


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat",
        "raw_path": b"/v1/chat",
        "root_path": "",
        "query_string": b"",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": list(HEADERS),
    }


async def _request(app: Any) -> int:
    """One POST through the app; its status."""
    received = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:  # the app reads no further: only a disconnect would come
            await asyncio.Event().wait()
        received = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(), receive, send)
    return status


async def measure(rounds: int, requests: int, seed: int = 0) -> dict[str, Any]:
    apps = {
        # FastAPI's own tracing off in the bare app: the instrumented apps set a TracerProvider in
        # this process, which an app in a process of its own never sees.
        "bare": make_app("bare", fastapi_tracing=False),
        "middleware": make_app("gateway", operation=False),
        "gateway": make_app("gateway"),
        "plugins": make_app("gateway-plugins"),
    }
    for name, app in apps.items():  # warm-up: the token cache, first-request work, imports
        for _ in range(200):
            status = await _request(app)
            if status != 200:
                raise SystemExit(f"{name}: HTTP {status}")
    await asyncio.sleep(2 * RELAY_PAUSE)
    order = random.Random(seed)
    micros: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(rounds):
        names = list(apps)
        order.shuffle(names)
        for name in names:
            app = apps[name]
            started = time.thread_time()
            for _ in range(requests):
                await _request(app)
            await asyncio.sleep(2 * RELAY_PAUSE)
            micros[name].append((time.thread_time() - started) / requests * 1e6)
    median = {name: statistics.median(values) for name, values in micros.items()}
    return {
        "rounds": rounds,
        "requests": requests,
        "us_per_request": median,
        "middleware_us": median["middleware"] - median["bare"],
        "operation_us": median["gateway"] - median["middleware"],
        "plugins_us": median["plugins"] - median["gateway"],
        "ratio": median["bare"] / median["gateway"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--requests", type=int, default=200, help="requests per app per round")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.rounds, args.requests))))


if __name__ == "__main__":
    main()
