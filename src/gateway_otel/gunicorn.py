"""A gunicorn worker for ASGI apps with gateway-otel's log correlation and post-fork set-up.

    gunicorn app:app --preload -w 4 -k gateway_otel.gunicorn.GatewayOtelWorker

uvicorn's access lines show the request id and the time the request took (``AccessFormatter``),
every log record carries request id, trace id, span id and caller id, and the delivery pipeline
starts afresh in each worker (threads, locks and connections are never inherited across fork:
``os.register_at_fork`` resets them, the worker re-checks the spool once it runs).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from ._errors import missing_extra
from ._pipeline import current_pipeline
from .logging import AccessFormatter, install

try:
    from uvicorn_worker import UvicornWorker
except ImportError as exc:
    raise missing_extra("gunicorn", "gateway_otel.gunicorn", exc) from exc

__all__ = ["GatewayOtelWorker"]


class GatewayOtelWorker(UvicornWorker):  # type: ignore[misc]  # uvicorn_worker ships no types
    """``uvicorn_worker.UvicornWorker`` with request ids in access and application logs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        access = logging.getLogger("uvicorn.access")
        if not access.handlers:  # gunicorn's access log is off: uvicorn's goes to stderr
            access.addHandler(logging.StreamHandler(sys.stderr))
            access.setLevel(logging.INFO)
        for handler in access.handlers:
            handler.setFormatter(AccessFormatter())

    def init_process(self) -> None:
        install()
        current_pipeline().delivery.resume()
        super().init_process()
