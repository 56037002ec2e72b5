"""The adapter's own failures: logged, never raised into user code, at most once a minute per kind."""

from __future__ import annotations

import logging
import time

logger = logging.getLogger("gateway_otel")

#: Seconds between two log lines of the same kind.
INTERVAL = 60.0
_last: dict[str, float] = {}


def log_once(kind: str, message: str, *args: object, level: int = logging.WARNING) -> bool:
    """Log ``message`` unless a message of ``kind`` was logged in the last minute; ``True`` when logged."""
    now = time.monotonic()
    last = _last.get(kind)
    if last is not None and now - last < INTERVAL:
        return False
    _last[kind] = now
    logger.log(level, message, *args)
    return True
