"""Real servers on 127.0.0.1 for the tests: the reference gateway in a subprocess, uvicorn apps."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import gateway_otel
from gateway_otel._pipeline import Pipeline, configure

pytest_plugins = ["gateway_otel.testing"]

ROOT = Path(__file__).resolve().parent.parent


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


def eventually(check: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``check()`` until it returns a truthy value (bounded); return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


class Gateway:
    """A reference gateway running in a subprocess, and a client to look into it."""

    def __init__(self, directory: Path, *, faults: bool = True, port: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = directory / "gateway.sqlite3"
        args = [sys.executable, "-m", "gateway_otel.gateway", "--port", str(self.port), "--db", str(self.db), "--demo"]
        if faults:
            args.append("--faults")
        self.log = open(directory / "gateway.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, process=self.process)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()

    def data(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()["data"]

    def records(self, request_id: str) -> list[dict[str, Any]]:
        return list(self.data("GET", f"/v1/openapi/log/{request_id}"))

    def wait_records(self, request_id: str, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """The request's records once there are at least ``count`` (or whatever is there at the timeout)."""
        eventually(lambda: len(self.records(request_id)) >= count, timeout)
        return self.records(request_id)

    def stats(self) -> dict[str, Any]:
        return dict(self.data("GET", "/v1/openapi/stats"))

    def faults(self, **settings: Any) -> None:
        self.data("PUT", "/v1/openapi/faults", json=settings)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    server = Gateway(tmp_path_factory.mktemp("gateway"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def healthy_gateway(gateway: Gateway) -> Iterator[Gateway]:
    """The session's gateway, with every fault switched off before and after the test."""
    gateway.faults()
    yield gateway
    gateway.faults()


@pytest.fixture(scope="session")
def spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spool")


@pytest.fixture(scope="session")
def pipeline(gateway: Gateway, spool_dir: Path) -> Pipeline:
    """The adapter of this test process, reporting to the session's gateway."""
    return configure(openapi_host=gateway.url, spool_dir=str(spool_dir))


@pytest.fixture
def flush(pipeline: Pipeline) -> Any:
    def run() -> None:
        assert gateway_otel.force_flush(20)

    return run


class Script:
    """A Python program in its own process, talking over stdin/stdout lines (for staged scenarios)."""

    def __init__(self, code: str, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def expect(self, line: str) -> None:
        assert self.process.stdout is not None
        got = self.process.stdout.readline().strip()
        if got != line:
            raise AssertionError(f"expected {line!r}, got {got!r}; stderr: {self.stderr()}")

    def say(self, line: str = "") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "(running)"
        return self.process.stderr.read()

    def wait(self, timeout: float = 60) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def run_script(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run Python code in a fresh interpreter (real process exit, real atexit)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )
