"""Without OPENAPI_HOST: one loud warning, every caller anonymous, records kept in the spool."""

from __future__ import annotations

from pathlib import Path

from conftest import run_program, run_script


def test_without_a_gateway_records_wait_in_the_spool_and_flush_returns(tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")
    result = run_program("no_gateway", spool, env={"OPENAPI_HOST": "", "GATEWAY_OTEL_SPOOL_DIR": spool})
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "True False anonymous"  # flushed: every record spooled, none waiting for a gateway
    assert second == "6"
    assert result.stderr.count("OPENAPI_HOST is not set") == 1


def test_require_gateway_makes_a_missing_host_a_startup_error(tmp_path: Path) -> None:
    result = run_script(
        "import gateway_otel; gateway_otel.configure()",
        env={"OPENAPI_HOST": "", "GATEWAY_OTEL_REQUIRE_GATEWAY": "1", "GATEWAY_OTEL_SPOOL_DIR": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "GATEWAY_OTEL_REQUIRE_GATEWAY" in result.stderr
    assert "ConfigurationError" in result.stderr
