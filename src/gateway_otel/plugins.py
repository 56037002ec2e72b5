"""Plugins that fill ``request_context`` from each request, in the style of starlette-context's.

    instrument_app(app, context_plugins=[CorrelationIdPlugin(), UserAgentPlugin()], propagate=["correlation_id"])

A plugin is a small class: ``key`` (its entry in ``request_context`` and its field in log
records, ``%(correlation_id)s``), the request ``header`` it reads, ``process_request`` that gives
the value at the request's start, and ``enrich_response`` that may add headers to the response.
Text values go through the adapter's scrubber: no secret enters the context.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import Any

from ._context import sane_request_id

__all__ = ["CorrelationIdPlugin", "ForwardedForPlugin", "Plugin", "RequestTimePlugin", "UserAgentPlugin"]

#: Longest text value a plugin keeps from a header.
MAX_VALUE_CHARS = 512


class Plugin:
    """Gives ``request_context[key]`` at each request's start (the ``header``'s value by default)."""

    key: str = ""
    #: The request header it reads, lower case (``None``: none).
    header: str | None = None

    def process_request(self, headers: Mapping[str, str], scope: Mapping[str, Any]) -> Any:
        """The value for this request, or ``None`` for none (``headers``: the ones plugins read)."""
        return headers.get(self.header) if self.header else None

    def enrich_response(self, value: Any) -> list[tuple[bytes, bytes]]:
        """Headers to add to the response, given this request's value."""
        return []


class CorrelationIdPlugin(Plugin):
    """``correlation_id`` from ``X-Correlation-ID`` (checked like the request id: 1-128 of
    ``[A-Za-z0-9._:-]``), a new one when absent or unusable; returned on the response."""

    key = "correlation_id"
    header = "x-correlation-id"

    def process_request(self, headers: Mapping[str, str], scope: Mapping[str, Any]) -> Any:
        # A new one: 32 random hex digits, as the request id without a trace id.
        return sane_request_id(headers.get("x-correlation-id")) or os.urandom(16).hex()

    def enrich_response(self, value: Any) -> list[tuple[bytes, bytes]]:
        return [(b"x-correlation-id", str(value).encode("latin-1"))]


class UserAgentPlugin(Plugin):
    """``user_agent`` from ``User-Agent``."""

    key = "user_agent"
    header = "user-agent"

    def process_request(self, headers: Mapping[str, str], scope: Mapping[str, Any]) -> Any:
        agent = headers.get("user-agent")
        return agent[:MAX_VALUE_CHARS] if agent else None


class ForwardedForPlugin(Plugin):
    """``forwarded_for``: the client's address behind proxies (the first of ``X-Forwarded-For``),
    else the address the connection came from."""

    key = "forwarded_for"
    header = "x-forwarded-for"

    def process_request(self, headers: Mapping[str, str], scope: Mapping[str, Any]) -> Any:
        forwarded = headers.get("x-forwarded-for", "").split(",")[0].strip()
        if forwarded:
            return forwarded[:MAX_VALUE_CHARS]
        client = scope.get("client")
        return client[0] if client else None


class RequestTimePlugin(Plugin):
    """``request_time``: when the request arrived, ISO 8601 in UTC (milliseconds)."""

    key = "request_time"

    def process_request(self, headers: Mapping[str, str], scope: Mapping[str, Any]) -> Any:
        return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
