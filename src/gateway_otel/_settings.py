"""Settings: every option is a keyword of ``configure()`` and an environment variable.

Code arguments take precedence over the environment, as in the OpenTelemetry SDK.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError
from ._transport import HttpConfig

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _default_spool_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "gateway-otel")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved configuration of the adapter."""

    #: Gateway base URL (``OPENAPI_HOST``). ``None``: no gateway, records stay in the spool.
    openapi_host: str | None = None
    #: Refuse to start without ``openapi_host``.
    require_gateway: bool = False
    #: Directory of the SQLite spool of undelivered records.
    spool_dir: str = dataclasses.field(default_factory=_default_spool_dir)
    #: Cap of each of ``request`` and ``response`` in a record, in bytes of JSON.
    max_payload_bytes: int = 64 * 1024
    #: Records held in memory before they spill to the spool.
    queue_size: int = 20_000
    #: Concurrent requests to the gateway, one record each.
    max_in_flight: int = 16
    #: Concurrent batch requests (with ``batch``).
    batch_in_flight: int = 4
    #: Use the reference gateway's batch endpoint ``/v1/openapi/report/logs``.
    batch: bool = False
    #: Records per batch request.
    batch_size: int = 500
    #: Build and send records in a helper process of their own (the relay), so that the
    #: app's threads only hand them over. ``None``: in a process that serves requests (an ASGI
    #: server is loaded when ``configure()`` runs, or ``instrument_app`` configures); else not.
    relay: bool | None = None
    #: Seconds a record may wait for others to fill its batch (with ``batch``), as the SDK's
    #: ``BatchSpanProcessor`` schedules its exports: fewer, fuller requests under load.
    batch_linger: float = 0.05
    #: Seconds before a request to the gateway times out.
    timeout: float = 5.0
    #: Seconds ``shutdown()`` and exit wait for the gateway to take a record before spooling the rest.
    shutdown_timeout: float = 5.0
    #: Longest time exit keeps delivering while the gateway keeps taking records, in seconds.
    drain_on_exit: float = 60.0
    #: Longest pause between two attempts while the gateway does not take records, in seconds: the
    #: gateway is asked again (one request, the probe) at least this often, so delivery resumes
    #: within this time of the gateway answering again. ``Retry-After`` may ask for longer.
    max_backoff: float = 4.0
    #: Seconds a validated token stays cached.
    token_ttl: float = 300.0
    #: Seconds a rejected token stays cached.
    token_failure_ttl: float = 5.0
    #: Turn SIGTERM into a normal exit (delivering or spooling what waits) while its default
    #: disposition is in force; a handler of the process's own is never replaced.
    handle_sigterm: bool = True
    #: Report each request (SERVER span) and each handled message (CONSUMER span) as an ``in``/``out``
    #: record pair too, never billed: a request's records then form one tree across services.
    request_records: bool = True
    #: Start the adapter's spans as lean spans (the SDK's span semantics at less than half its cost;
    #: checked against the installed SDK once per process). ``False``: the SDK's ``Tracer.start_span``.
    lean_spans: bool = True
    #: Trust ``gateway.*`` entries of incoming W3C baggage (an internal service behind the gateway).
    trust_upstream: bool = False
    #: Also export spans over OTLP (``None``: when ``OTEL_EXPORTER_OTLP_*ENDPOINT`` is set).
    otlp: bool | None = None
    #: Sent as ``Authorization: Bearer <token>`` with every report, for a gateway that guards its
    #: writes (the reference gateway's ``--report-token``).
    report_token: str | None = None
    #: A PEM file of the certificate authorities to trust for the gateway (else the system's, and
    #: ``SSL_CERT_FILE`` when set); delivery and token checks alike.
    ca_bundle: str | None = None
    #: A client certificate (PEM) for mutual TLS with the gateway, and its key when not in the same file.
    client_cert: str | None = None
    client_key: str | None = None
    #: Extra patterns (regular expressions) of names whose values are secrets.
    redact_patterns: tuple[str, ...] = ()
    #: Names never redacted even when they match a secret pattern.
    redact_allow: tuple[str, ...] = ()

    @property
    def gateway_configured(self) -> bool:
        return bool(self.openapi_host)

    @property
    def http(self) -> HttpConfig:
        """How to reach the gateway (TLS), for delivery and token checks alike."""
        return HttpConfig(self.ca_bundle, self.client_cert, self.client_key)


_ENV_NAMES = {
    "openapi_host": "OPENAPI_HOST",
}


def env_name(option: str) -> str:
    """The environment variable that sets ``option``."""
    return _ENV_NAMES.get(option, f"GATEWAY_OTEL_{option.upper()}")


def _convert(field: dataclasses.Field[Any], option: str, raw: Any) -> Any:
    kind = str(field.type)
    try:
        if kind.startswith("bool"):
            if isinstance(raw, bool) or raw is None:
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text == "" and kind != "bool":
                return None  # set but empty: the default decides
            if text in _FALSE:
                return False
            raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
        if kind == "int":
            value: Any = int(raw)
            if value <= 0:
                raise ValueError("must be positive")
            return value
        if kind == "float":
            value = float(raw)
            if value <= 0:
                raise ValueError("must be positive")
            return value
        if kind.startswith("tuple"):
            if isinstance(raw, str):
                return tuple(part.strip() for part in raw.split(",") if part.strip())
            return tuple(str(part) for part in raw)
        if kind.startswith("str | None"):
            text = str(raw).strip() if raw is not None else ""
            return (text.rstrip("/") if option == "openapi_host" else text) or None
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"invalid value {raw!r} for {option} ({env_name(option)}): {exc}") from None


def load_settings(options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve settings from keyword ``options`` over the environment over defaults."""
    environ = os.environ if environ is None else environ
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ConfigurationError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name in options:
            values[name] = _convert(field, name, options[name])
        elif env_name(name) in environ:
            values[name] = _convert(field, name, environ[env_name(name)])
    settings = Settings(**values)
    if settings.require_gateway and not settings.gateway_configured:
        raise ConfigurationError("OPENAPI_HOST is not set and GATEWAY_OTEL_REQUIRE_GATEWAY=1 requires a gateway")
    return settings
