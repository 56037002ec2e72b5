"""Names of the span attributes the adapter writes; every one lives under ``gateway.*``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

OP_TYPE: Final = "gateway.op_type"
IS_COST_LOG: Final = "gateway.is_cost_log"
CALLER_ID: Final = "gateway.caller_id"
REQUEST_ID: Final = "gateway.request_id"
REQUEST_URL: Final = "gateway.request_url"
REQUEST: Final = "gateway.request"
RESPONSE: Final = "gateway.response"
ERROR: Final = "gateway.error"
EXTRA: Final = "gateway.extra"

#: Baggage keys that carry the request's identity across services.
BAGGAGE_KEYS: Final = (REQUEST_ID, CALLER_ID, REQUEST_URL)


def service_name(resource_attributes: Mapping[str, object] | None) -> str:
    """The ``service.name`` of a resource's attributes (the SDK's ``unknown_service`` without one)."""
    return str((resource_attributes or {}).get("service.name", "unknown_service"))
