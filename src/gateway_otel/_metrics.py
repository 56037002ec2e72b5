"""The adapter's own metrics, through the OpenTelemetry metrics API.

What becomes of records (``gateway_otel.records.exported`` by ``outcome``), what waits in the spool
(``gateway_otel.spool.records``, ``.oldest_age``, ``.dead_letters``) and the token cache's look-ups
(``gateway_otel.token_cache.lookups`` by ``result``) go to whatever MeterProvider the process sets,
whenever it sets it (the API's proxy meter binds late). Every instrument is observable: the sender
and the token cache only add to plain integers, and the callbacks read them when the provider
collects, so with no MeterProvider set nothing runs at all.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["EXPORT_OUTCOMES", "LOOKUP_RESULTS", "SpoolGauges", "add_token_cache", "register"]

#: ``outcome`` of ``gateway_otel.records.exported``.
EXPORT_OUTCOMES = ("delivered", "spooled", "dead_letter", "dropped")
#: ``result`` of ``gateway_otel.token_cache.lookups``.
LOOKUP_RESULTS = ("hit", "miss", "rejected")
#: The spool's gauges, in the order of ``SpoolGauges.reading()``.
SPOOL_GAUGES = (
    ("gateway_otel.spool.records", "{record}", "Records waiting in the spool (dead letters not counted)"),
    ("gateway_otel.spool.dead_letters", "{record}", "Dead letters kept in the spool"),
    ("gateway_otel.spool.oldest_age", "s", "Age of the oldest record waiting in the spool (0 when none)"),
)
#: Seconds one reading of the spool serves the three spool gauges of one collection.
SPOOL_READING_TTL = 1.0

#: Where the counts come from: the process's delivery (its own counts and its relay's) and every
#: token cache, read at collection.
_exported: Callable[[], dict[str, int]] | None = None
_lookup_sources: weakref.WeakSet[Any] = weakref.WeakSet()
_spool: SpoolGauges | None = None
_lock = threading.Lock()
_registered = False


class SpoolGauges:
    """One reading of the spool (waiting, dead letters, oldest age) for the three gauges."""

    def __init__(self, read: Callable[[], tuple[int, int, float | None]]) -> None:
        self._read = read
        self._reading: tuple[int, int, float] = (0, 0, 0.0)
        self._read_at = -SPOOL_READING_TTL

    def reading(self) -> tuple[int, int, float]:
        now = time.monotonic()
        if now - self._read_at >= SPOOL_READING_TTL:
            try:
                waiting, dead, oldest = self._read()
            except Exception:  # a spool that cannot be read now: the last reading stands
                return self._reading
            self._reading = (waiting, dead, max(0.0, time.time() - oldest) if oldest is not None else 0.0)
            self._read_at = now
        return self._reading


def register(exported: Callable[[], dict[str, int]], spool: SpoolGauges) -> None:
    """Report these from now on (the process's pipeline calls it at ``configure()``; a new pipeline
    replaces the sources of the previous one). The instruments are made once per process."""
    global _exported, _spool, _registered
    with _lock:
        _exported = exported
        _spool = spool
        if _registered:
            return
        _registered = True
    meter = metrics.get_meter("gateway_otel")
    meter.create_observable_counter(
        "gateway_otel.records.exported",
        callbacks=[_observe_exported],
        unit="{record}",
        description="Records by what became of them: delivered, spooled, dead_letter, dropped",
    )
    for index, (name, unit, description) in enumerate(SPOOL_GAUGES):  # one spool reading serves the three
        meter.create_observable_gauge(
            name, callbacks=[functools.partial(_observe_spool, index)], unit=unit, description=description
        )
    meter.create_observable_counter(
        "gateway_otel.token_cache.lookups",
        callbacks=[_observe_lookups],
        unit="{lookup}",
        description="The context middleware's token look-ups: hit, miss (a gateway call), rejected",
    )


def add_token_cache(cache: Any) -> None:
    """Count this token cache's look-ups too (each ``GatewayClient`` adds itself)."""
    _lookup_sources.add(cache)


def _observe_exported(options: CallbackOptions) -> Iterable[Observation]:
    exported = _exported
    totals = {**dict.fromkeys(EXPORT_OUTCOMES, 0), **(exported() if exported is not None else {})}
    return [Observation(count, {"outcome": outcome}) for outcome, count in totals.items()]


def _observe_spool(index: int, options: CallbackOptions) -> Iterable[Observation]:
    spool = _spool
    if spool is None:
        return []
    return [Observation(spool.reading()[index])]


def _observe_lookups(options: CallbackOptions) -> Iterable[Observation]:
    totals = dict.fromkeys(LOOKUP_RESULTS, 0)
    for cache in list(_lookup_sources):
        for result, count in cache.lookups.items():
            totals[result] += count
    return [Observation(count, {"result": result}) for result, count in totals.items()]
