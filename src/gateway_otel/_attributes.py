"""Names of the span attributes the adapter writes; every one lives under ``gateway.*``."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import PurePath
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
#: The span id (16 hex digits) of the record a record span hangs under, when that is not its parent
#: span (a span that makes no record sits between: ``_record_tree``).
PARENT_RECORD: Final = "gateway.parent_record"

#: Baggage keys that carry the request's identity across services (the span attributes of it too).
BAGGAGE_KEYS: Final = (REQUEST_ID, CALLER_ID, REQUEST_URL)


def service_name(resource_attributes: Mapping[str, object] | None) -> str:
    """The ``service.name`` of a resource's attributes (the SDK's ``unknown_service`` without one)."""
    return str((resource_attributes or {}).get("service.name", "unknown_service"))


#: An ASGI/WSGI server's application argument (``app:app``, ``pkg.main:create_app``).
_APP_ARGUMENT = re.compile(r"([A-Za-z_][\w.]*):[A-Za-z_][\w.]*(?:\(\))?")


def guess_service_name(argv: Sequence[str] | None = None, main_module: str | None = None) -> tuple[str, str] | None:
    """A service name for a process that set none, and where it came from: the application module a
    server was given (``uvicorn app.main:app`` -> ``app.main``), the module run with ``python -m``,
    or the script's name; ``None`` for ``python -c`` and an interactive interpreter."""
    argv = sys.argv if argv is None else argv
    if main_module is None:
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        main_module = getattr(spec, "name", None)
    for argument in argv[1:]:
        match = _APP_ARGUMENT.fullmatch(argument)
        if match is not None:
            return match.group(1), f"the application argument {argument!r}"
    if main_module and main_module != "__main__":
        name = main_module.removesuffix(".__main__")
        return name, f"the module run ({main_module})"
    script = PurePath(argv[0]).stem if argv and argv[0] not in ("", "-c", "-") else ""
    if script:
        return script, f"the script's name ({argv[0]})"
    return None
