"""Names of the span attributes the adapter writes; every one lives under ``gateway.*``."""

from __future__ import annotations

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
