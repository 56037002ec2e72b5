"""The core tests on the other setups users run: the oldest OpenTelemetry SDK that pyproject.toml
admits, and the public path (the SDK's own ``Tracer.start_span``, no lean spans).

``./dev test`` makes ``.venv-floor`` with that SDK (``GATEWAY_OTEL_FLOOR_VENV``); these run the
tests of spans, operations, context, records and delivery there, in a pytest of its own, and the
tests that go through the pipeline with ``GATEWAY_OTEL_LEAN_SPANS=0``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FLOOR_VENV = os.environ.get("GATEWAY_OTEL_FLOOR_VENV")
#: The tests of the core: the lean spans, the decorator, context, records, the sender, the relay's wire.
CORE = [
    "tests/test_lean_span.py",
    "tests/test_operation_log.py",
    "tests/test_context.py",
    "tests/test_sender.py",
    "tests/test_relay_wire.py",
    "tests/test_request_context.py",
    "tests/test_otel_internals.py",
]
#: The tests whose spans start through the pipeline (run again on the public path).
THROUGH_THE_PIPELINE = [
    "tests/test_operation_log.py",
    "tests/test_context.py",
    "tests/test_request_context.py",
    "tests/test_fastapi.py",
    "tests/test_coexistence.py",
]


def _floor_of(requirement: str) -> str:
    found = re.search(r"opentelemetry-sdk>=([\d.]+)", requirement)
    assert found is not None
    return found.group(1)


def test_the_floor_venv_has_the_lowest_sdk_pyproject_admits() -> None:
    if not FLOOR_VENV:
        pytest.skip("run through ./dev test, which makes the floor virtualenv (GATEWAY_OTEL_FLOOR_VENV)")
    floor = _floor_of((ROOT / "pyproject.toml").read_text())
    python = Path(FLOOR_VENV) / "bin" / "python"
    found = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('opentelemetry-sdk'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert found.split(".")[:2] == floor.split(".")[:2], (found, floor)


def test_the_core_tests_pass_on_the_floor_sdk(tmp_path: Path) -> None:
    if not FLOOR_VENV:
        pytest.skip("run through ./dev test, which makes the floor virtualenv (GATEWAY_OTEL_FLOOR_VENV)")
    python = Path(FLOOR_VENV) / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *CORE],
        cwd=ROOT,
        env={**os.environ, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_pipelines_tests_pass_on_the_public_path(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *THROUGH_THE_PIPELINE],
        cwd=ROOT,
        env={**os.environ, "GATEWAY_OTEL_LEAN_SPANS": "0", "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
