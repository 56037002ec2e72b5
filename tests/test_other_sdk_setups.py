"""The core tests on the other setups users run: the oldest OpenTelemetry SDK that pyproject.toml
admits, the other Pythons it admits, and the public path (the SDK's own ``Tracer.start_span``, no
lean spans).

``./dev test`` makes ``.venv-floor`` with that SDK (``GATEWAY_OTEL_FLOOR_VENV``) and a virtualenv
for each other Python it finds (``GATEWAY_OTEL_OTHER_PYTHONS``); these run the tests of spans,
operations, context, records and delivery there, each in a pytest of its own (with the other
Pythons, the FastAPI and coexistence tests too; with the newest, the whole suite), and the tests
that go through the pipeline with ``GATEWAY_OTEL_LEAN_SPANS=0``.
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
#: The virtualenvs ``./dev test`` made with the other Pythons it found (``.venv-py3.X``, by ``:``).
OTHER_PYTHONS = [Path(venv) for venv in os.environ.get("GATEWAY_OTEL_OTHER_PYTHONS", "").split(":") if venv]
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
#: On the other Pythons besides the core: the middleware, and the user's OpenTelemetry beside it.
ON_EACH_PYTHON = ["tests/test_fastapi.py", "tests/test_coexistence.py"]
#: On the newest Python, the whole suite but for these: this module and the benchmarks' smoke run
#: (the suite's own set-ups), and the collector's test (the collector's wheel for a Python links
#: that Python's shared library, which an interpreter built without one, as pyenv builds, lacks).
NEWEST = "3.13"
NOT_ON_THE_NEWEST = [
    "--ignore=tests/test_other_sdk_setups.py",
    "--ignore=tests/test_benchmarks.py",
    "--deselect=tests/test_otlp.py::test_spans_through_a_real_collector_give_the_same_records_and_no_double_billing",
]
#: The tests whose spans start through the pipeline (run again on the public path).
THROUGH_THE_PIPELINE = [
    "tests/test_operation_log.py",
    "tests/test_context.py",
    "tests/test_request_context.py",
    "tests/test_fastapi.py",
    "tests/test_coexistence.py",
]


def assert_tests_pass(python: Path | str, tests: list[str], tmp_path: Path, timeout: float = 600, **env: str) -> None:
    """Run ``tests`` in a pytest of ``python``'s own (a spool of its own, ``env`` added)."""
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env={**os.environ, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool"), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def printed_by(python: Path, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def _floor_of(requirement: str) -> str:
    found = re.search(r"opentelemetry-sdk>=([\d.]+)", requirement)
    assert found is not None
    return found.group(1)


def test_the_floor_venv_has_the_lowest_sdk_pyproject_admits() -> None:
    if not FLOOR_VENV:
        pytest.skip("run through ./dev test, which makes the floor virtualenv (GATEWAY_OTEL_FLOOR_VENV)")
    floor = _floor_of((ROOT / "pyproject.toml").read_text())
    python = Path(FLOOR_VENV) / "bin" / "python"
    found = printed_by(python, "from importlib.metadata import version; print(version('opentelemetry-sdk'))")
    assert found.split(".")[:2] == floor.split(".")[:2], (found, floor)


def test_the_core_tests_pass_on_the_floor_sdk(tmp_path: Path) -> None:
    if not FLOOR_VENV:
        pytest.skip("run through ./dev test, which makes the floor virtualenv (GATEWAY_OTEL_FLOOR_VENV)")
    assert_tests_pass(Path(FLOOR_VENV) / "bin" / "python", CORE, tmp_path)


@pytest.mark.timeout(900)  # the whole suite, on the newest
@pytest.mark.parametrize("version", ["3.10", "3.12", NEWEST])
def test_the_tests_pass_on_each_python_admitted(version: str, tmp_path: Path) -> None:
    venv = next((venv for venv in OTHER_PYTHONS if venv.name == f".venv-py{version}"), None)
    if venv is None:
        pytest.skip(f"no Python {version} here: ./dev test makes .venv-py{version} where it finds one")
    python = venv / "bin" / "python"
    assert printed_by(python, "import sys; print('%d.%d' % sys.version_info[:2])") == version
    if version == NEWEST:
        assert_tests_pass(python, NOT_ON_THE_NEWEST, tmp_path, timeout=850)
    else:
        assert_tests_pass(python, [*CORE, *ON_EACH_PYTHON], tmp_path)


def test_the_pipelines_tests_pass_on_the_public_path(tmp_path: Path) -> None:
    assert_tests_pass(sys.executable, THROUGH_THE_PIPELINE, tmp_path, GATEWAY_OTEL_LEAN_SPANS="0")
