"""The install boundary: a base install (no extra) imports and delivers; extras hold what the README says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import PROGRAMS, Gateway

BASE_VENV = os.environ.get("GATEWAY_OTEL_BASE_VENV")

needs_base_venv = pytest.mark.skipif(
    not BASE_VENV, reason="run through ./dev test, which makes the virtualenv with no extra (GATEWAY_OTEL_BASE_VENV)"
)


def extras() -> dict[str, set[str]]:
    """The installed distribution's extras: the names of the packages each one brings."""
    found: dict[str, set[str]] = {}
    for line in requires("gateway-otel") or ():
        requirement = Requirement(line)
        for extra in ("fastapi", "gunicorn", "amqp", "otlp", "instrument", "cli", "gateway", "demo"):
            if requirement.marker is not None and requirement.marker.evaluate({"extra": extra}):
                found.setdefault(extra, set()).add(requirement.name)
    return found


@needs_base_venv
def test_a_base_install_imports_serves_asgi_and_delivers(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"base-{uuid.uuid4().hex}"
    result = subprocess.run(
        [f"{BASE_VENV}/bin/python", str(PROGRAMS / "base_install.py"), rid],
        env={**os.environ, "OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "delivered"
    records = healthy_gateway.wait_records(rid, 10)
    assert len(records) == 10
    assert {r["callerId"] for r in records} == {"alice"}


@needs_base_venv
@pytest.mark.parametrize("command", [["spool", "show"], ["logs", "x"], ["check"]])
def test_the_command_without_its_extra_names_the_extra(command: list[str]) -> None:
    result = subprocess.run(
        [f"{BASE_VENV}/bin/gateway-otel", *command], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "pip install 'gateway-otel[cli]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_each_extra_brings_what_its_users_import() -> None:
    found = extras()
    assert {"fastapi", "uvicorn"} <= found["fastapi"]  # the README's FastAPI example, served
    assert {"gunicorn", "uvicorn-worker", "uvicorn"} <= found["gunicorn"]
    assert found["amqp"] == {"aio-pika"}
    assert found["instrument"] == {"opentelemetry-distro"}  # the opentelemetry-instrument command
    assert found["cli"] == {"typer", "rich"}  # light: spool, logs and check need no web framework
    assert {"fastapi", "uvicorn", "pydantic", "opentelemetry-proto"} <= found["gateway"]
    assert "opentelemetry-instrumentation-httpx" in found["demo"]
    # Nothing in an extra that no module of the package imports.
    assert not any(name.startswith("opentelemetry-instrumentation-") for name in found["fastapi"])


def test_the_license_file_is_shipped() -> None:
    root = Path(__file__).resolve().parent.parent
    assert (root / "LICENSE").read_text().startswith("MIT License")
    assert 'license-files = ["LICENSE"]' in (root / "pyproject.toml").read_text()


def test_a_script_without_a_service_name_reports_under_its_own_name(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"named-{uuid.uuid4().hex}"
    script = tmp_path / "billing_worker.py"
    shutil.copy(PROGRAMS / "billing.py", script)
    env = {k: v for k, v in os.environ.items() if k not in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES")}
    env |= {"OPENAPI_HOST": healthy_gateway.url, "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path / "spool")}
    result = subprocess.run(
        [sys.executable, str(script), rid, "2", "log-info"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    records = healthy_gateway.wait_records(rid, 4)
    assert {r["extraInfo"]["service"] for r in records} == {"billing_worker"}
    assert "service name 'billing_worker' taken from" in result.stderr


@pytest.mark.parametrize("relay", ["0", "1"])
def test_no_resource_warning_under_python_dev_mode(healthy_gateway: Gateway, tmp_path: Path, relay: str) -> None:
    rid = f"devmode-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "OPENAPI_HOST": healthy_gateway.url,
        "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path),
        "GATEWAY_OTEL_RELAY": relay,
    }
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "always::ResourceWarning", str(PROGRAMS / "billing.py"), rid, "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ResourceWarning" not in result.stderr, result.stderr
    assert len(healthy_gateway.wait_records(rid, 20)) == 20
