"""The reference gateway: FastAPI + SQLite, serving the whole gateway protocol on 127.0.0.1."""

from __future__ import annotations

from .._errors import missing_extra

try:
    from ._app import Record, create_app
    from ._server import run
    from ._store import DEMO_CALLERS, Store, read_config
except ImportError as exc:
    if exc.name is None or exc.name.startswith("gateway_otel"):
        raise
    raise missing_extra("gateway", "the reference gateway", exc) from exc

__all__ = ["DEMO_CALLERS", "Record", "Store", "create_app", "read_config", "run"]
