"""The relay: records built and delivered by a helper process, so that the app's core serves requests.

Why: a FastAPI app that keeps its core busy and reports one record per POST (the protocol every
gateway speaks) makes thousands of requests to the gateway a second, and a delivery thread in its
own process competes with the request path for one GIL. With ``relay`` on, the app only hands the
records' span data over, one line per hand-over, and a process of its own builds and sends the
records on another core, with an ordinary ``Delivery`` (the same retries, spool and exit drain).
The app's side of the hand-over is ``_handover.RelayHandOver`` (on an event loop's thread, the
loop hands over itself).

The wire (``_relay_wire``) is newline-delimited JSON, versioned: an app refuses a relay that speaks
another version, and delivers in its own process.

What the relay has read and not yet delivered or spooled lives in its memory, as a record does in
the app's without a relay: the relay spools it after ``SPILL_AFTER`` seconds, and at the end of its
input (the app exited, or was killed) it delivers and spools everything before it exits. While a
new relay comes up (seconds, on a loaded machine), the app spools what has waited longer than
``SPILL_AFTER``, and the relay delivers the spool. When the relay dies, the app logs an error and
delivers in its own process from then on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

import orjson

from . import _relay_wire as wire
from ._selflog import log_once
from ._settings import Settings

__all__ = ["Relay", "main"]

SETTINGS_ENV = "GATEWAY_OTEL_RELAY_SETTINGS"
PATH_ENV = "GATEWAY_OTEL_RELAY_PATH"
_ENTRY = (
    f"import json, os, sys; sys.path[:0] = json.loads(os.environ[{PATH_ENV!r}]); "
    "from gateway_otel._relay import main; main()"
)
#: Bytes the pipe to the relay holds (what the app hands over in about a second at full load).
PIPE_SIZE = 1 << 20
#: Seconds the app waits for a new relay to say it is ready.
START_TIMEOUT = 15.0
#: Seconds between two calls of ``Relay.start``'s ``waiting`` while a new relay comes up.
START_STEP = 0.1

logger = logging.getLogger(__name__)


class Relay:
    """The app's side: the relay process, its pipes and the flush requests waiting for an answer."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._stdin: IO[bytes] = process.stdin  # type: ignore[assignment]
        self._lock = threading.Lock()
        self._waiting: dict[int, Callable[[bool], None]] = {}
        self._next_flush = 0
        self._ready = threading.Event()
        self._gone = False
        self._rest: tuple[memoryview, list[tuple[Any, Any, float]]] | None = None
        #: What became of the records the relay took, by outcome, as it last reported.
        self.exported: dict[str, int] = {}
        # Non-blocking, so that an event loop's thread can hand records over without waiting for
        # the relay (``send(wait=False)``); a larger pipe holds a burst (Linux: up to 1 MiB).
        os.set_blocking(self._stdin.fileno(), False)
        with contextlib.suppress(AttributeError, OSError):
            fcntl.fcntl(self._stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        from ._exporter import in_record, out_record  # the exporter imports delivery: import at use

        self._builders = (in_record, out_record)  # by kind: wire.IN, wire.OUT
        self._kinds: dict[Any, int] = {builder: kind for kind, builder in enumerate(self._builders)}
        self._reader = threading.Thread(target=self._read, name="gateway-otel-relay-reader", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, settings: Settings, waiting: Callable[[], object] = lambda: None) -> Relay | None:
        """Start a relay delivering with ``settings``; ``None`` (logged) when it does not come up.
        ``waiting`` is called every ``START_STEP`` seconds until it is up (the caller spools what
        waits too long meanwhile: on a loaded machine a new interpreter takes seconds to start)."""
        relay_settings = dataclasses.replace(settings, relay=False)
        env = {
            **os.environ,
            SETTINGS_ENV: orjson.dumps(dataclasses.asdict(relay_settings)).decode(),
            PATH_ENV: orjson.dumps([entry for entry in sys.path if isinstance(entry, str)]).decode(),
        }
        try:
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and code
                # Isolated (-I): no sitecustomize or PYTHON* variables (an auto-instrumentation
                # wrapper's) act in the relay; it imports gateway_otel from the app's path.
                [sys.executable, "-I", "-c", _ENTRY],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                bufsize=0,
                start_new_session=True,  # a Ctrl-C meant for the app must not cut the relay's drain short
            )
        except OSError as exc:
            log_once(
                "relay", "gateway-otel: could not start the relay, delivering in-process: %r", exc, level=logging.ERROR
            )
            return None
        relay = cls(process)
        deadline = time.monotonic() + START_TIMEOUT
        while not relay._ready.wait(START_STEP) and not relay._gone and time.monotonic() < deadline:
            waiting()
        if not relay._ready.is_set() or relay._gone:
            log_once("relay", "gateway-otel: the relay did not start, delivering in-process", level=logging.ERROR)
            relay.abandon()
            process.kill()
            return None
        return relay

    def alive(self) -> bool:
        return not self._gone and self.process.poll() is None

    def send(
        self,
        entries: list[tuple[Any, Any, float]],
        build: Callable[[Any, Any], tuple[str, bytes] | None],
        *,
        build_here: bool = False,
        wait: bool = True,
    ) -> bool:
        """Write queued records (``(builder, item, queued at)``) as one line. ``build`` makes a
        record in the app: for builders the relay does not know, and for all with ``build_here``.

        ``wait``: until it is written whole (``OSError`` when the relay is gone). Without, what the
        pipe does not take now is kept, and ``False`` returned: ``drain`` writes it before any other
        line, ``take_back`` returns its records when the relay is gone.
        """
        if not entries:
            return True
        kinds = {} if build_here else self._kinds
        rows: list[Any] = []
        # Where an operation's in record waits in ``rows`` (by span id) for its out record, which
        # most often follows in the same line: then one row makes both, as building rows is most
        # of the hand-over, paid on the event loop for every record.
        opened: dict[int, int] = {}
        paired = False
        for builder, item, _ in entries:
            kind = kinds.get(builder)
            if kind is None:
                rows.append(self._built(build, builder, item))
            elif kind == wire.IN:
                opened[item[1]] = len(rows)
                rows.append(item)  # made a row below when its out record does not follow
            else:
                at = opened.get(item[1])
                if at is not None and rows[at][0] == item[0]:  # the same trace's span too
                    del opened[item[1]]
                    rows[at] = None
                    kind, paired = wire.BOTH, True
                rows.append(wire.span_row(kind, item))
        for at in opened.values():
            rows[at] = wire.span_row(wire.IN, rows[at])
        if paired:
            rows = [row for row in rows if row is not None]
        # One call encodes the whole line (a call per row would be most of the hand-over's cost); a
        # value JSON cannot hold as it is (an int past 64 bits) has its records built here.
        try:
            line = orjson.dumps(rows)
        except TypeError:
            line = b"[" + b",".join(self._one(row, build) for row in rows) + b"]"
        return self._write(line + b"\n", entries, wait)

    @staticmethod
    def _built(build: Callable[[Any, Any], tuple[str, bytes] | None], builder: Any, item: Any) -> orjson.Fragment:
        record = build(builder, item)
        return wire.built_row(record[1] if record is not None else None)

    def _one(self, row: Any, build: Callable[[Any, Any], tuple[str, bytes] | None]) -> bytes:
        try:
            return orjson.dumps(row)
        except TypeError:  # a span's row (one built here already encodes): its records built here
            kind, data = row[0], wire.row_data(row)
        return b",".join(orjson.dumps(self._built(build, self._builders[each], data)) for each in wire.kinds(kind))

    def drain(self, wait: bool) -> bool:
        """Write what an earlier ``send`` left unwritten; ``True`` when nothing is left."""
        if self._rest is None:
            return True
        rest, entries = self._rest
        self._rest = None
        return self._write(rest, entries, wait)

    def take_back(self) -> list[tuple[Any, Any, float]]:
        """The records of a line left unwritten (the relay is gone: they are delivered elsewhere)."""
        entries = self._rest[1] if self._rest is not None else []
        self._rest = None
        return entries

    def flush(self, timeout: float, done: Callable[[bool], None]) -> None:
        """Ask the relay to deliver what it has read; ``done(flushed)`` is called with its answer."""
        with self._lock:
            self._next_flush += 1
            flush_id = self._next_flush
            self._waiting[flush_id] = done
        self._write(wire.flush_request(flush_id, timeout), [], wait=True)

    def close(self, timeout: float) -> None:
        """End the relay's input and wait up to ``timeout`` seconds for it to deliver and exit."""
        self._gone = True
        self._stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            log_once("relay-exit", "gateway-otel: the relay is still delivering; it exits by itself when done")
        self._answer_all(False)

    def abandon(self) -> None:
        """Let go of the relay without a word (in a forked child: the parent's relay is not its own)."""
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        self._gone = True

    def _write(self, data: bytes | memoryview, entries: list[tuple[Any, Any, float]], wait: bool) -> bool:
        if self._stdin.closed:
            raise BrokenPipeError("the relay's input is closed")
        view = memoryview(data)
        while view:
            written = self._stdin.write(view)  # non-blocking: None when the pipe is full
            if written:
                view = view[written:]
                continue
            if not wait:
                self._rest = (view, entries)
                return False
            select.select([], [self._stdin], [], 1.0)
        return True

    def _read(self) -> None:
        stdout = self.process.stdout
        if stdout is None:  # started without a pipe for its answers: nothing to read
            self._gone = True
            self._ready.set()
            return
        try:
            for line in stdout:
                message = wire.read_relay_line(line)
                if isinstance(message, wire.Ready):
                    if message.version != wire.VERSION:
                        log_once(
                            "relay-version",
                            "gateway-otel: the relay speaks wire version %d, not %d; delivering in-process",
                            message.version,
                            wire.VERSION,
                            level=logging.ERROR,
                        )
                        break
                    self._ready.set()
                elif isinstance(message, wire.Counts):
                    self.exported = message.exported
                else:
                    with self._lock:
                        done = self._waiting.pop(message.flush_id, None)
                    if done is not None:
                        done(message.flushed)
        except (OSError, ValueError) as exc:
            if not self._gone:
                log_once("relay-read", "gateway-otel: lost the relay's answers: %r", exc, level=logging.ERROR)
        finally:
            self._gone = True
            self._ready.set()
            self._answer_all(False)
            stdout.close()  # this thread is the pipe's only reader

    def _answer_all(self, flushed: bool) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for done in waiting.values():
            done(flushed)


#: Seconds between two reports of the relay's counts to the app (when they changed).
COUNTS_EVERY = 1.0


def _settings_from_env() -> Settings:
    values = orjson.loads(os.environ[SETTINGS_ENV])
    for name in ("redact_patterns", "redact_allow"):
        values[name] = tuple(values.get(name) or ())
    return Settings(**values)


def main() -> None:
    """The relay process: read records from stdin until its end, deliver them, then exit."""
    from ._delivery import Delivery
    from ._exporter import in_record, out_record

    logging.basicConfig(format="gateway-otel relay %(process)d: %(levelname)s %(message)s", level=logging.WARNING)
    # The relay's life is its input's: a Ctrl-C or a SIGTERM meant for the app (a terminal's, a
    # service manager's) must not end it while the app still hands records over. The app's exit,
    # or its death, ends the input; then the relay delivers and spools what it read, and exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    delivery = Delivery(_settings_from_env())
    delivery.resume()
    answers = threading.Lock()

    def answer(line: bytes) -> None:
        with answers, contextlib.suppress(OSError):  # the app is gone: nobody waits for the answer
            os.write(1, line)

    def flush(request: wire.Flush) -> None:
        flushed = delivery.force_flush(request.timeout)
        answer(wire.counts(dict(delivery.exported)))  # a flush's caller reads counts that include it
        answer(wire.flush_answer(request.flush_id, flushed))

    def report_counts() -> None:
        reported: dict[str, int] = {}
        while True:
            time.sleep(COUNTS_EVERY)
            exported = dict(delivery.exported)
            if exported != reported:
                answer(wire.counts(exported))
                reported = exported

    builders = (in_record, out_record)  # by kind: wire.IN, wire.OUT
    submit = delivery.submit
    answer(wire.ready())
    threading.Thread(target=report_counts, name="gateway-otel-relay-counts", daemon=True).start()
    try:
        for line in sys.stdin.buffer:
            try:
                message = wire.read_app_line(line)
            except orjson.JSONDecodeError:  # cut short by a write the app could not finish
                log_once("relay-line", "gateway-otel: the relay skipped an incomplete line", level=logging.ERROR)
                continue
            if isinstance(message, wire.Flush):
                threading.Thread(target=flush, args=(message,), daemon=True).start()
                continue
            for row in message:
                if row[0] == wire.BUILT:
                    if row[1] is not None:  # None: it could not be built (logged in the app)
                        submit(_built, row[1])
                else:
                    data = wire.row_data(row)
                    for kind in wire.kinds(row[0]):
                        submit(builders[kind], data)
    finally:
        delivery.shutdown()
        answer(wire.counts(dict(delivery.exported)))  # the last word, for an app still reading


def _built(payload: dict[str, Any]) -> dict[str, Any]:
    return payload
