"""The ``gateway_otel`` instrumentor: ``opentelemetry-instrument`` applies ``instrument_app`` to every FastAPI app.

Registered under the entry point group ``opentelemetry_instrumentor`` (name ``gateway_otel``), as the
contrib instrumentations are, so the command loads it with them and
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=gateway_otel`` leaves it out. Like the contrib FastAPI
instrumentor, it instruments each app as it is made: every ``fastapi.FastAPI`` made from then on
gets the context middleware (token checks, identity, request id, request records) with the
options of ``GATEWAY_OTEL_*`` and ``OPENAPI_HOST``. With the contrib FastAPI instrumentor loaded as
well, the request keeps that one's SERVER span, which ``instrument_app`` adopts.

Usable in code too: ``GatewayOtelInstrumentor().instrument()`` before the apps are made.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from ._errors import missing_extra

try:
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
except ImportError as exc:
    raise missing_extra("instrument", "gateway_otel.instrumentation", exc) from exc

__all__ = ["GatewayOtelInstrumentor"]

_INSTRUMENTS = ("fastapi >= 0.115",)


class GatewayOtelInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Applies ``gateway_otel.instrument_app`` to every FastAPI app made while it is on."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _INSTRUMENTS

    def _instrument(self, **kwargs: Any) -> None:
        from fastapi import applications

        original = applications.FastAPI.__init__
        if getattr(original, "_gateway_otel_original", None) is not None:
            return  # already on

        @functools.wraps(original)
        def init(app: Any, *args: Any, **init_kwargs: Any) -> None:
            original(app, *args, **init_kwargs)
            from ._instrument import instrument_app

            instrument_app(app)

        init._gateway_otel_original = original  # type: ignore[attr-defined]
        applications.FastAPI.__init__ = init  # type: ignore[method-assign,assignment]

    def _uninstrument(self, **kwargs: Any) -> None:
        from fastapi import applications

        original = getattr(applications.FastAPI.__init__, "_gateway_otel_original", None)
        if original is not None:
            applications.FastAPI.__init__ = original  # type: ignore[method-assign]
