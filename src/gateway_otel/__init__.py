"""gateway-otel: operation logs, billing records and traces for FastAPI services, through OpenTelemetry."""

from __future__ import annotations

from typing import Any

from ._client import (
    GatewayClient,
    account_balance_enough,
    check_configuration,
    support_model,
    validate_token,
)
from ._context import (
    ThreadCopyContext,
    caller_id_context,
    context_executor,
    current_caller_id,
    current_request_id,
    request_url_context,
    run_in_context,
    trace_id_context,
)
from ._decorator import operation_log
from ._errors import AuthorizationException, ConfigurationError, GatewayOtelError, GatewayUnavailableError
from ._exporter import GatewaySpanExporter
from ._instrument import instrument_app
from ._pipeline import configure as _configure
from ._pipeline import deliver_leftovers as _deliver_leftovers
from ._pipeline import force_flush, shutdown
from ._processor import OperationSpanProcessor
from ._records import OperationLog
from ._request_context import request_context
from ._sampling import BillingSafeSampler
from ._submit import submit_log

__version__ = "0.1.0"


def configure(**options: Any) -> None:
    """Set the adapter up once per process; every option also reads ``GATEWAY_OTEL_<OPTION>``.

    Optional: the first decorated call configures from the environment. See ``Settings`` for
    the options (``openapi_host``, ``spool_dir``, ``max_payload_bytes``, ``batch``, ...).
    """
    _configure(**options)


__all__ = [
    "AuthorizationException",
    "BillingSafeSampler",
    "ConfigurationError",
    "GatewayClient",
    "GatewayOtelError",
    "GatewaySpanExporter",
    "GatewayUnavailableError",
    "OperationLog",
    "OperationSpanProcessor",
    "ThreadCopyContext",
    "__version__",
    "account_balance_enough",
    "caller_id_context",
    "check_configuration",
    "configure",
    "context_executor",
    "current_caller_id",
    "current_request_id",
    "force_flush",
    "instrument_app",
    "operation_log",
    "request_context",
    "request_url_context",
    "run_in_context",
    "shutdown",
    "submit_log",
    "support_model",
    "trace_id_context",
    "validate_token",
]

_deliver_leftovers()  # records an earlier process left in the spool go out from start-up
