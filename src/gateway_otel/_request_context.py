"""``request_context``: a mapping scoped to the current request, backed by OTel Context.

FastAPI has no Flask-style ``g``; services build one with bare contextvars or starlette-context,
whose values do not follow the threads, pools and outgoing calls that OTel Context follows. The
context middleware puts one fresh dict in each request's Context, so that every copy of that
Context (asyncio tasks, ``ThreadCopyContext``, ``context_executor``, ``run_in_context``) shares it:
what the request sets is visible to the rest of the request, and gone with it. Plugins fill it
from the request's headers at its start (``gateway_otel.plugins``).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from opentelemetry import context as otel_context

__all__ = ["PROPAGATED_PREFIX", "RequestContext", "log_fields", "request_context", "store_of"]

#: The Context key of the request's dict.
STORE_KEY = otel_context.create_key("gateway_otel.request_context")
#: Baggage entries that carry a request context key to downstream services (``propagate=[...]``).
PROPAGATED_PREFIX = "gateway.context."
#: Keys that log records carry (``%(correlation_id)s``): every plugin's key; ``-`` outside a request.
log_fields: set[str] = set()


def store_of(ctx: otel_context.Context | None = None) -> dict[str, Any] | None:
    """The request's dict in ``ctx`` (the current Context by default), or ``None`` outside a request."""
    store = otel_context.get_value(STORE_KEY, ctx)
    return store if isinstance(store, dict) else None


class RequestContext(MutableMapping[str, Any]):
    """The current request's values, as starlette-context's ``context`` and Flask's ``g`` give them:
    ``request_context["user"] = ...``, ``request_context.get("correlation_id")``,
    ``request_context.data`` (a plain dict copy). ``RuntimeError`` outside a request."""

    def _store(self) -> dict[str, Any]:
        store = store_of()
        if store is None:
            raise RuntimeError(
                "gateway_otel.request_context is used outside a request: it is set by the context "
                "middleware (instrument_app) for each request, and follows the request's Context "
                "into tasks, ThreadCopyContext, context_executor and run_in_context"
            )
        return store

    def exists(self) -> bool:
        """Whether there is a request context here (inside a request)."""
        return store_of() is not None

    @property
    def data(self) -> dict[str, Any]:
        """A plain dict copy of the current request's values."""
        return dict(self._store())

    def __getitem__(self, key: str) -> Any:
        return self._store()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._store()[key] = value

    def __delitem__(self, key: str) -> None:
        del self._store()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._store()))

    def __len__(self) -> int:
        return len(self._store())

    def __repr__(self) -> str:
        store = store_of()
        return f"<request_context {store!r}>" if store is not None else "<request_context (outside a request)>"


request_context = RequestContext()
