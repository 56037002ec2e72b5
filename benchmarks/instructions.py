"""The instructions a request executes in the app, counted: python benchmarks/instructions.py

wrk's and the in-process part's figures move with this shared machine's speed; the number of
instructions a request executes moves by a few tenths of a per cent from run to run, so it tells
two commits apart and says where the adapter's cost lies. Each variant of the app
(``fastapi_app.make_app``) runs under valgrind's callgrind, called as ASGI in one process as
``inprocess.py`` calls it, twice: ``N`` and ``2N`` requests after the same warm-up. The difference
of the two counts, divided by ``N``, is the instructions a request costs the app's process, every
thread of it (start-up and warm-up cancel out): the relay's hand-over included (on the event loop,
or on the delivery thread), the relay's own work not (it is another process).

Variants: ``bare``; ``middleware`` (``instrument_app``, no operation: its server span and the
request's record pair); ``gateway`` (one ``operation_log`` too: the wrk part's default);
``gateway-no-request-records`` (``GATEWAY_OTEL_REQUEST_RECORDS=0``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
#: variant: (make_app's variant, with an operation, extra environment)
VARIANTS: dict[str, tuple[str, bool, dict[str, str]]] = {
    "bare": ("bare", False, {}),
    "middleware": ("gateway", False, {}),
    "gateway": ("gateway", True, {}),
    "gateway-no-request-records": ("gateway", True, {"GATEWAY_OTEL_REQUEST_RECORDS": "0"}),
}
WARM_UP = 200
#: N: the counts of N and 2N requests are taken.
REQUESTS = 600
#: Requests between two pauses, and the pause: the relay's hand-over runs in it, on the event loop, as
#: between requests under load. Under wrk the default variant serves about 3,000 requests a second
#: and its loop hands the queue over every ``RELAY_PAUSE`` (20 ms): about 60 requests a hand-over,
#: which share its own cost (the timer, the line's write). Under valgrind a batch of 60 takes about
#: half a second, longer than the delivery thread waits (``TICK``) before it hands over a queue the
#: loop has not: here a hand-over serves some 30 to 60 requests, which moves a count by up to about
#: one per cent from run to run.
BATCH, PAUSE = 60, 0.041


def child(variant: str, requests: int) -> None:
    """Warm the app up, then send it ``requests`` requests (run under callgrind)."""
    sys.path.insert(0, str(HERE))
    import inprocess
    from fastapi_app import make_app

    name, operation, _ = VARIANTS[variant]
    app = make_app(name, operation=operation)

    async def main() -> None:
        for _ in range(WARM_UP):
            if await inprocess._request(app) != 200:
                raise SystemExit(f"{variant}: a request failed")
        for done in range(0, requests, BATCH):
            for _ in range(min(BATCH, requests - done)):
                await inprocess._request(app)
            await asyncio.sleep(PAUSE)

    asyncio.run(main())


def _count(variant: str, requests: int, gateway_url: str, tmp: str) -> int:
    out = Path(tmp) / f"callgrind.{variant}.{requests}"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            variant,
            str(requests),
        ],
        # A spool of its own: no process delivers what another left (it would be counted).
        env=child_env(variant, gateway_url, f"{tmp}/spool-{variant}-{requests}"),
        capture_output=True,
        check=True,
    )
    found = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no instruction count in {out}")
    return int(found.group(1))


def child_env(variant: str, gateway_url: str, spool: str) -> dict[str, str]:
    """The environment of a counted process of ``variant``."""
    return {
        **os.environ,
        "OPENAPI_HOST": gateway_url,
        "GATEWAY_OTEL_SPOOL_DIR": spool,
        "GATEWAY_OTEL_RELAY": "1",  # as a served app delivers (no ASGI server is loaded here)
        "PYTHONHASHSEED": "0",  # the same dict and set layouts in every run
        **VARIANTS[variant][2],
    }


def measure(gateway_url: str, requests: int = REQUESTS) -> dict[str, Any]:
    """Instructions per request of each variant, and the differences that say what costs what."""
    with tempfile.TemporaryDirectory(prefix="gateway-otel-instructions-") as tmp:
        per_request: dict[str, int] = {}
        with ThreadPoolExecutor(2) as pool:  # the two counts of a variant side by side, one a core
            for variant in VARIANTS:
                once, twice = pool.map(
                    lambda n, v=variant: _count(v, n, gateway_url, tmp),
                    (requests, 2 * requests),
                )
                per_request[variant] = round((twice - once) / requests)
    bare, middleware, gateway = per_request["bare"], per_request["middleware"], per_request["gateway"]
    return {
        "requests": requests,
        "per_request": per_request,
        "middleware": middleware - bare,
        "operation": gateway - middleware,
        "request_records": gateway - per_request["gateway-no-request-records"],
        "ratio": bare / gateway,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=REQUESTS, help="N: the counts of N and 2N requests are taken")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    from run import ensure_program

    from gateway_otel.testing import GatewayProcess

    if ensure_program("valgrind") is None:
        raise SystemExit("valgrind is needed (apt-get install valgrind)")

    with tempfile.TemporaryDirectory(prefix="gateway-otel-instructions-gateway-") as tmp:
        gateway = GatewayProcess(Path(tmp) / "gateway", faults=False)
        try:
            print(json.dumps(measure(gateway.url, args.requests)))
        finally:
            gateway.stop()


if __name__ == "__main__":
    main()
