"""Log lines with the request fields in their format, before and after set-up, outside any request."""

from __future__ import annotations

import logging
import sys

import gateway_otel

handler = logging.StreamHandler(sys.stdout)
handler.setFormatter(logging.Formatter("%(levelname)s [%(request_id)s] [%(trace_id)s] [%(caller_id)s] %(message)s"))
logging.basicConfig(level=logging.INFO, handlers=[handler])
logging.getLogger("app").info("before set-up")
gateway_otel.configure()  # warns that OPENAPI_HOST is not set, through the same format
logging.getLogger("app").info("after set-up")
