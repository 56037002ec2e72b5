"""Real servers on 127.0.0.1 for the tests: the reference gateway in a subprocess, uvicorn apps."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import gateway_otel
from gateway_otel._pipeline import Pipeline, configure
from gateway_otel._servers import GatewayProcess, stop_process, wait_for_port

pytest_plugins = ["gateway_otel.testing"]

ROOT = Path(__file__).resolve().parent.parent
#: The programs the tests run in processes of their own (linted and type-checked with the tests).
PROGRAMS = Path(__file__).resolve().parent / "programs"


Gateway = GatewayProcess


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

    def __init__(
        self, code: str, env: dict[str, str], *, program: Path | None = None, args: Sequence[str] = ()
    ) -> None:
        """Run ``code`` (``python -c``), or the ``program`` file with ``args`` when given."""
        argv = [sys.executable, str(program), *args] if program is not None else [sys.executable, "-c", code]
        self.process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @classmethod
    def of_program(cls, program: Path, *args: str, env: dict[str, str]) -> Script:
        return cls("", env, program=program, args=args)

    def read(self) -> str:
        """The program's next line."""
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def expect(self, line: str) -> None:
        got = self.read()
        if got != line:
            raise AssertionError(f"expected {line!r}, got {got!r}; stderr: {self.stderr()}")

    def ask(self, line: str) -> str:
        """Say ``line``, return the program's answer (its next line)."""
        self.say(line)
        return self.read()

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


async def request_body(receive: Any) -> bytes:
    """The whole body of an ASGI request (for the small servers the tests write)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


def uvicorn(app: str, port: int) -> list[str]:
    """The command that serves ``app`` (``module:attribute``) with uvicorn on ``port``."""
    return [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"]


@contextlib.contextmanager
def serving(
    command: Sequence[str], *, port: int, cwd: Path, env: dict[str, str], log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A server program (uvicorn, gunicorn) run in ``cwd`` with ``env`` added to the environment, its
    output in ``log`` (else discarded), listening on ``port`` for the block; stopped with SIGTERM
    after it (killed if it has not exited in 60 s)."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("wb")) if log is not None else subprocess.DEVNULL
        process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, timeout=60, process=process)
            yield process
        finally:
            stop_process(process, 60)


def run_program(
    name: str, *args: object, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``tests/programs/<name>.py`` with ``args`` in a fresh interpreter (real process exit)."""
    return subprocess.run(
        [sys.executable, str(PROGRAMS / f"{name}.py"), *map(str, args)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_script(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run Python code in a fresh interpreter (real process exit, real atexit)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def parent_op(records: Sequence[dict[str, Any]], record: dict[str, Any]) -> str | None:
    """The ``opType`` of the record that ``record``'s ``parentSpanId`` names (``None``: a root)."""
    parent = record["extraInfo"].get("parentSpanId")
    if parent is None:
        return None
    found = {r["opType"] for r in records if r["extraInfo"]["spanId"] == parent}
    assert len(found) == 1, f"{record['opType']}'s parent {parent} is no record of the request: {records}"
    return found.pop()


def assert_one_tree(records: Sequence[dict[str, Any]], *, root: str) -> None:
    """The records are one tree: each ``parentSpanId`` names another record of them, and the one record
    span without a parent is ``root``'s."""
    roots = {r["opType"] for r in records if parent_op(records, r) is None}
    assert roots == {root}, records
