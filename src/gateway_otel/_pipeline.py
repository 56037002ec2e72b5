"""``configure()``: one pipeline per process, joined to the TracerProvider in force."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ._attributes import guess_service_name, service_name
from ._delivery import Delivery
from ._errors import ConfigurationError
from ._exporter import GatewaySpanExporter, _instances
from ._foreign import MirroringTracer, TwinIds
from ._metrics import SpoolGauges
from ._metrics import register as register_metrics
from ._processor import OperationSpanProcessor
from ._relay import SETTINGS_ENV as RELAY_SETTINGS_ENV
from ._sampling import BillingSafeSampler
from ._scrub import Scrubber
from ._settings import Settings, load_settings
from ._span import LeanTracer, lean_spans_work
from ._spool import SPOOL_FILE, Spool

logger = logging.getLogger("gateway_otel")

INSTRUMENTATION_NAME = "gateway_otel"


class Pipeline:
    """What ``configure()`` set up: everything the decorator and the middleware read on the hot path.

    Its span side (``provider``, ``lean_tracer``, ``service``) is joined to the TracerProvider in
    force by ``join()``: at once when one is set, or when OTLP export is asked for; else when the
    adapter starts its first span, the first time one of them is read. So a provider that the app
    sets up after ``configure()`` (``logfire.configure()``, its own ``set_tracer_provider``) is
    joined, not doubled; when none is set by then, the adapter sets the SDK's.
    """

    #: The SDK provider whose processors include the adapter's.
    provider: TracerProvider
    #: Starts the spans of operations and requests (the provider in force's tracer, leaner).
    lean_tracer: LeanTracer
    #: The service name of the records (the provider's resource).
    service: str

    def __init__(
        self, settings: Settings, processor: OperationSpanProcessor, delivery: Delivery, scrubber: Scrubber
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.delivery = delivery
        self.scrubber = scrubber

    def __getattr__(self, name: str) -> Any:
        # Called only for what is not set: the span side, before its first use.
        if name in _SPAN_SIDE:
            self.join()
            return self.__dict__[name]
        raise AttributeError(name)

    def join(self) -> None:
        """Join the TracerProvider in force (once)."""
        with _lock:
            if "provider" in self.__dict__:
                return
            provider, lean_tracer = _join(self.processor, self.settings)
            self.service = service_name(provider.resource.attributes)
            self.lean_tracer = lean_tracer
            self.provider = provider  # last: its presence says the join is done


_SPAN_SIDE = frozenset({"provider", "lean_tracer", "service"})
_state: Pipeline | None = None
_lock = threading.RLock()
_warned_no_host = False


def current_pipeline() -> Pipeline:
    """The process's pipeline, configured from the environment on first use."""
    state = _state
    if state is None:
        return configure()
    return state


def configure(**options: Any) -> Pipeline:
    """Set the adapter up (keyword options or ``GATEWAY_OTEL_*`` / ``OPENAPI_HOST`` / ``OTEL_*``).

    Joins the TracerProvider in force, or sets the SDK's (``Pipeline``). Calling it again with other
    options flushes the previous delivery pipeline and replaces it; with the same options it does
    nothing.
    """
    global _state
    settings = load_settings(options)
    with _lock:
        old = _state
        if old is not None and old.settings == settings:
            return old
        delivery = Delivery(settings, Spool(settings.spool_dir), relay=_relayed(settings))
        exporter = GatewaySpanExporter(delivery, in_records=False)
        scrubber = Scrubber(settings.redact_patterns, settings.redact_allow)
        requests = scrubber if settings.request_records else None
        for made_by_sdk in list(_instances):
            made_by_sdk.quiet()
        if old is not None:  # the processor stays where it joined, reporting through the new delivery
            processor = old.processor
            processor.use(exporter)
            processor.requests = requests
            old.delivery.shutdown()
        else:
            processor = OperationSpanProcessor(exporter, requests)
        _state = state = Pipeline(settings, processor, delivery, scrubber)
        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) or _otlp_wanted(settings):
            state.join()
    register_metrics(delivery.exported_counts, SpoolGauges(delivery.spool.stats))
    _warn_without_host(settings)
    if settings.handle_sigterm:
        _exit_on_sigterm()
    delivery.resume()
    return state


#: ASGI servers: a process that has loaded one serves requests.
SERVERS = ("uvicorn", "gunicorn", "hypercorn", "granian", "daphne")
_serves_requests = False


def configure_to_serve() -> Pipeline:
    """The pipeline of a process that serves requests (``instrument_app`` sets its app up): made
    with the relay by default when this call makes it."""
    global _serves_requests
    _serves_requests = True
    return current_pipeline()


def _relayed(settings: Settings) -> bool:
    """Whether a relay delivers: ``relay`` when set; left to the default, in a process that serves
    requests (an ASGI server is loaded, or ``instrument_app`` configured it), as the app's own
    threads and its request path would share one GIL (``benchmarks/README.md``); not in a script
    or a worker."""
    if settings.relay is not None:
        return settings.relay
    return _serves_requests or any(server in sys.modules for server in SERVERS)


_leftovers: Delivery | None = None


def deliver_leftovers() -> None:
    """At import: when an earlier process left records in the spool, deliver them from now on, not
    only once this process makes its first record (an idle worker may make none for hours). A
    delivery of the spool alone starts, in this process (no TracerProvider is set, no relay); it
    runs beside the pipeline's own, which ``configure()`` makes as usual (the spool's claims keep
    the two from sending a record twice), and ends at exit like it."""
    global _leftovers
    if _running_the_command() or os.environ.get(RELAY_SETTINGS_ENV):
        return  # the command looks at the spool and leaves it be; a relay delivers it itself
    try:
        settings = load_settings({})
    except ConfigurationError:
        return  # said by configure(), when the process configures
    if not settings.gateway_configured or not (Path(settings.spool_dir) / SPOOL_FILE).exists():
        return
    with _lock:
        if _state is None and _leftovers is None:
            _leftovers = Delivery(dataclasses.replace(settings, relay=False), Spool(settings.spool_dir))
            _leftovers.resume()


def _running_the_command() -> bool:
    """Whether this process is the ``gateway-otel`` command (its script, or ``python -m`` of it)."""
    if sys.argv and Path(sys.argv[0]).name == "gateway-otel":  # the console script
        return True
    # ``python -m gateway_otel.cli``: while the package is imported, ``sys.argv[0]`` is still "-m";
    # the interpreter's own arguments name the module.
    return any(
        flag == "-m" and (module == "gateway_otel" or module.startswith("gateway_otel."))
        for flag, module in itertools.pairwise(getattr(sys, "orig_argv", sys.argv))
    )


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` while its default disposition is in force (a script, a plain
    ``asyncio.run`` worker, an aio-pika consumer), so that exit delivers or spools what waits, as
    at a normal exit. The default kills the process on the spot, without ``atexit``; a handler of
    the process's own (uvicorn's, gunicorn's) is left alone. A second SIGTERM kills as before."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set signal handlers
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _sigterm_exit)
    except (ValueError, OSError, AttributeError):  # no SIGTERM here, or an embedded interpreter
        return


def _sigterm_exit(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise SystemExit(128 + signum)


def _join(processor: OperationSpanProcessor, settings: Settings) -> tuple[TracerProvider, LeanTracer]:
    """The SDK provider that ``processor`` joins (added to it, once) and the tracer of the spans.

    The provider in force is the SDK's; or one that wraps an SDK provider as its ``provider``
    (Logfire's proxy: its tracers wrap the SDK's spans, and its processors are the SDK provider's);
    or none yet: then the adapter sets the SDK's; or another kind (a vendor's own): then it starts
    the spans, and an SDK provider of the adapter's own makes the records (``_foreign``).
    """
    current = trace.get_tracer_provider()
    wrapped = getattr(current, "provider", None)
    lean = settings.lean_spans and lean_spans_work()
    created = False
    twin_ids: TwinIds | None = None
    if isinstance(current, TracerProvider):
        provider = current
    elif isinstance(wrapped, TracerProvider):
        provider = wrapped
    elif isinstance(current, trace.ProxyTracerProvider):  # none set yet
        provider = current = TracerProvider(resource=_resource())
        trace.set_tracer_provider(provider)
        created = True
    else:
        logger.info(
            "gateway-otel: the TracerProvider in force (%s) is not the OpenTelemetry SDK's: it starts the "
            "adapter's spans, and a provider of the adapter's own makes the records of their twins",
            type(current).__name__,
        )
        twin_ids = TwinIds()
        provider = TracerProvider(resource=_resource(), id_generator=twin_ids)
    _make_billing_safe(provider)  # before its tracers are made: each keeps the sampler it was made with
    # From the provider in force: one that wraps the SDK's (Logfire's) wraps the spans too.
    tracer = current.get_tracer(INSTRUMENTATION_NAME)
    lean_tracer = (
        LeanTracer(tracer, processor, lean=lean)
        if twin_ids is None
        else MirroringTracer(tracer, provider.get_tracer(INSTRUMENTATION_NAME), twin_ids, processor, lean=lean)
    )
    if processor.joined is not provider:
        provider.add_span_processor(processor)
        processor.joined = provider
    if created or settings.otlp:
        _add_otlp(provider, settings)
    return provider, lean_tracer


def _resource() -> Resource:
    """The SDK's resource from ``OTEL_*``; without a service name there, one guessed from what runs
    (said once at INFO), so that records do not all say ``unknown_service:python``."""
    resource = Resource.create()
    if not service_name(resource.attributes).startswith("unknown_service"):
        return resource
    guess = guess_service_name()
    if guess is None:
        return resource
    name, source = guess
    logger.info("gateway-otel: service name %r taken from %s; set OTEL_SERVICE_NAME to choose it", name, source)
    return resource.merge(Resource({"service.name": name}))


def _make_billing_safe(provider: TracerProvider) -> None:
    # ``sampler`` is a plain attribute of the SDK's provider, read by each tracer it makes later
    # (ours included); tracers made before keep the sampler they had.
    sampler = provider.sampler
    if not isinstance(sampler, BillingSafeSampler):
        provider.sampler = BillingSafeSampler(sampler)


def _otlp_wanted(settings: Settings) -> bool:
    """``otlp``, or when left to the default, whether an OTLP endpoint is set in the environment."""
    if settings.otlp is not None:
        return settings.otlp
    return any(os.environ.get(name) for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _add_otlp(provider: TracerProvider, settings: Settings) -> None:
    if not _otlp_wanted(settings):
        return
    processor: SpanProcessor | None = _otlp_processor()
    if processor is not None:
        provider.add_span_processor(processor)


def _otlp_processor() -> SpanProcessor | None:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            return BatchSpanProcessor(GrpcExporter())
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return BatchSpanProcessor(HttpExporter())
    except ImportError:
        logger.warning("gateway-otel: OTLP export asked for, but install gateway-otel[otlp] for it")
        return None


def _warn_without_host(settings: Settings) -> None:
    global _warned_no_host
    if settings.gateway_configured or _warned_no_host:
        return
    _warned_no_host = True
    logger.warning(
        "gateway-otel: OPENAPI_HOST is not set: every caller is accepted as 'anonymous' and operation "
        "records stay in the local spool (%s) until a gateway is configured",
        settings.spool_dir,
    )


def force_flush(timeout: float | None = None) -> bool:
    """Wait until every record so far is delivered to the gateway (or spooled)."""
    state = _state
    return True if state is None else state.delivery.force_flush(timeout)


def shutdown(timeout: float | None = None) -> None:
    """Deliver what can be delivered within ``timeout`` seconds and spool the rest."""
    state = _state
    if state is not None:
        state.delivery.shutdown(timeout)
