"""Servers on 127.0.0.1: free ports, uvicorn in a thread, the reference gateway in a subprocess.

Used by the demo, the benchmarks and the tests (``gateway_otel.testing`` re-exports them for users).
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, process: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def eventually(check: Callable[[], T], timeout: float = 20.0, interval: float = 0.1) -> T:
    """Poll ``check()`` until it returns a truthy value (bounded); return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def stop_process(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then up to ``timeout`` seconds to exit (a drain on exit, say); killed after that."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


class GatewayProcess:
    """A reference gateway running in a subprocess, and a client to look into it."""

    def __init__(
        self,
        directory: Path,
        *,
        faults: bool = True,
        port: int | None = None,
        config: Path | None = None,
        report_token: str | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = directory / "gateway.sqlite3"
        # With ``faults``, behind the test-only fault injection (``_faulty_gateway``).
        module = "gateway_otel._faulty_gateway" if faults else "gateway_otel.gateway"
        self.injects_faults = faults
        args = [sys.executable, "-m", module, "--port", str(self.port), "--db", str(self.db), "--demo"]
        if config is not None:
            args += ["--config", str(config)]
        if report_token is not None:
            args += ["--report-token", report_token]
        self.log = open(directory / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)  # noqa: S603 - our own argv
        wait_for_port(self.port, process=self.process)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def stop(self) -> None:
        self.client.close()
        stop_process(self.process, 10)
        self.log.close()

    def data(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()["data"]

    def records(self, request_id: str) -> list[dict[str, Any]]:
        return list(self.data("GET", f"/v1/openapi/log/{request_id}"))

    def count(self, request_id: str) -> int:
        """How many records of the request the gateway holds, read from its database (WAL: a reader
        never blocks it), so that waiting for thousands of records does not load the gateway itself."""
        with contextlib.closing(sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True, timeout=10)) as conn:
            row = conn.execute("SELECT count(*) FROM records WHERE request_id = ?", (request_id,)).fetchone()
        return int(row[0])

    def balance(self, caller_id: str) -> float:
        """The caller's balance as the gateway holds it now (read from its database)."""
        with contextlib.closing(sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True, timeout=10)) as conn:
            row = conn.execute("SELECT balance FROM callers WHERE caller_id = ?", (caller_id,)).fetchone()
        return float(row[0])

    def wait_records(self, request_id: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The request's records once there are at least ``count`` (or whatever is there at the timeout)."""
        eventually(lambda: self.count(request_id) >= count, timeout)
        return self.records(request_id)

    def stats(self) -> dict[str, Any]:
        """The gateway's counts, and with fault injection the calls it saw (``tokenChecks``, ``reportCalls``)."""
        stats = dict(self.data("GET", "/v1/openapi/stats"))
        if self.injects_faults:
            stats.update(self.data("GET", "/v1/openapi/faults"))
        return stats

    def faults(self, **settings: Any) -> None:
        self.data("PUT", "/v1/openapi/faults", json=settings)


@contextlib.contextmanager
def serve_in_thread(asgi_app: Any, port: int) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread."""
    import uvicorn  # the gateway extra

    server = uvicorn.Server(uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"server on port {port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
