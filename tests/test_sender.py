"""The sender alone: a fake clock and a fake transport in place of time and the network.

Each test runs a real ``Delivery`` (its queue, sender thread, spool) against a transport that
answers as the test says, and a clock that moves only when the test moves it; the sender's own
ticks still pass in real time (a quarter second), so the waits below are for those.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from gateway_otel._delivery import Delivery
from gateway_otel._sender import BATCH_PATH, FIRST_BACKOFF, Outage
from gateway_otel._settings import Settings
from gateway_otel._spool import Spool
from gateway_otel._transport import HttpResponse
from gateway_otel.testing import eventually


class FakeClock:
    """Moves when the test moves it; ``run()`` lets it follow real time (for the sender's exit)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._since: float | None = None

    def __call__(self) -> float:
        return self.now if self._since is None else self.now + time.monotonic() - self._since

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def run(self) -> None:
        self._since = time.monotonic()


Answer = Callable[[str, list[dict[str, str]]], int]


class FakeTransport:
    """Answers each post with the status ``answer(path, records)`` gives; keeps what it took."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.taken: list[str] = []  # uuids of the records answered with a 2xx, in order
        self.posts = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.hold = threading.Event()  # cleared: every post waits until it is set
        self.hold.set()

    async def post(self, path: str, body: bytes) -> HttpResponse:
        self.posts += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            while not self.hold.is_set():  # noqa: ASYNC110 - set from the test's thread, not the loop's
                await asyncio.sleep(0.01)
            records = orjson.loads(body)
            records = records if path == BATCH_PATH else [records]
            status = self.answer(path, records)
            if 200 <= status < 300:
                self.taken.extend(record["uuid"] for record in records)
            return HttpResponse(status, {}, b"" if status == 204 else b'{"code": 0}')
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        pass


def _record(uuid: str) -> dict[str, str]:
    return {"uuid": uuid, "opType": "bad" if uuid.startswith("bad") else "op"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(tmp_path: Path, clock: FakeClock) -> Iterator[Callable[..., tuple[Delivery, FakeTransport]]]:
    made: list[Delivery] = []

    def make(answer: Answer, **options: object) -> tuple[Delivery, FakeTransport]:
        values: dict[str, object] = {"max_backoff": 0.5, "shutdown_timeout": 2.0, **options}
        settings = Settings(
            openapi_host="http://gateway.test",
            spool_dir=str(tmp_path / "spool"),
            relay=False,
            **values,  # type: ignore[arg-type]
        )
        transport = FakeTransport(answer)
        delivery = Delivery(settings, Spool(settings.spool_dir), transport=lambda _: transport, clock=clock)
        made.append(delivery)
        return delivery, transport

    yield make
    clock.run()  # exit's deadlines pass in real time
    for delivery in made:
        delivery.shutdown(1.0)


def _submit(delivery: Delivery, uuids: list[str]) -> None:
    for uuid in uuids:
        delivery.submit(_record, uuid)


# -- the outage's bookkeeping ----------------------------------------------------------------


def test_requests_that_fail_together_count_as_one_attempt(clock: FakeClock) -> None:
    outage = Outage(max_backoff=4.0, clock=clock)
    sent = clock.now
    clock.advance(0.1)
    delays = [outage.failed(sent) for _ in range(16)]  # sixteen in flight, all refused
    assert outage.attempts == 1
    assert all(delay <= FIRST_BACKOFF * 2 for delay in delays)
    assert outage.slots(16) == 1  # from now on one request at a time probes the gateway
    clock.advance(1.0)
    outage.failed(clock.now)  # the probe, sent after the failure: a second attempt
    assert outage.attempts == 2


def test_the_backoff_never_exceeds_its_ceiling_and_retry_after_may_ask_for_more(clock: FakeClock) -> None:
    outage = Outage(max_backoff=4.0, clock=clock)
    for _ in range(50):  # a long outage
        clock.advance(5.0)
        assert outage.failed(clock.now) <= 4.0
    assert outage.attempts == 50
    assert not outage.ready(clock.now)
    clock.advance(4.0)
    assert outage.ready(clock.now)  # asked again within max_backoff, however long the outage
    clock.advance(1.0)
    assert outage.failed(clock.now, after=30.0) == 30.0
    clock.advance(29.0)
    assert not outage.ready(clock.now)
    clock.advance(1.0)
    assert outage.ready(clock.now)


def test_a_flapping_gateway_keeps_the_backoff_short(clock: FakeClock) -> None:
    outage = Outage(max_backoff=4.0, clock=clock)
    for _ in range(20):
        clock.advance(1.0)
        assert outage.failed(clock.now) <= FIRST_BACKOFF * 2
        outage.recovered()
        assert outage.ready(clock.now) and outage.slots(16) == 16


# -- the sender with a fake transport --------------------------------------------------------


def test_an_outage_spools_and_delivery_resumes_when_the_clock_passes_the_backoff(
    make: Callable[..., tuple[Delivery, FakeTransport]], clock: FakeClock
) -> None:
    down = True
    delivery, transport = make(lambda path, records: 503 if down else 200)
    uuids = [f"r-{i}" for i in range(50)]
    _submit(delivery, uuids)
    assert eventually(lambda: delivery.sender.outage.attempts >= 1 and delivery.spool.counts()[0] == 50, timeout=5)
    assert transport.most_in_flight <= 16
    posts = transport.posts
    down = False
    # The clock stands still: the sender waits out its backoff and sends nothing.
    assert not eventually(lambda: transport.posts > posts, timeout=1.0)
    clock.advance(1.0)  # past max_backoff: the probe goes, succeeds, and the spool drains
    assert eventually(lambda: sorted(transport.taken) == sorted(uuids), timeout=10)
    clock.advance(1.0)  # the acknowledgements are written at least every tick
    assert eventually(lambda: delivery.spool.counts() == (0, 0), timeout=5)
    assert delivery.exported["delivered"] == 50 and delivery.exported["dead_letter"] == 0


def test_during_an_outage_one_request_at_a_time_probes_the_gateway(
    make: Callable[..., tuple[Delivery, FakeTransport]], clock: FakeClock
) -> None:
    delivery, transport = make(lambda path, records: 503)
    _submit(delivery, [f"p-{i}" for i in range(40)])
    assert eventually(lambda: delivery.sender.outage.attempts >= 1, timeout=5)
    transport.most_in_flight = 0
    for _ in range(5):
        posts = transport.posts
        clock.advance(1.0)
        assert eventually(lambda posts=posts: transport.posts > posts, timeout=5)  # type: ignore[misc]
    assert transport.most_in_flight == 1
    assert delivery.sender.outage.attempts >= 5


def test_a_flapping_gateway_gets_every_record_once(
    make: Callable[..., tuple[Delivery, FakeTransport]], clock: FakeClock
) -> None:
    answers = iter([503, 200] * 1000)
    delivery, transport = make(lambda path, records: next(answers))
    uuids = [f"f-{i}" for i in range(60)]
    _submit(delivery, uuids)

    def all_taken() -> bool:
        clock.advance(1.0)  # each look moves the clock past any backoff
        return sorted(transport.taken) == sorted(uuids)

    assert eventually(all_taken, timeout=20)
    assert len(transport.taken) == len(set(transport.taken))


def test_204_no_content_is_delivered(make: Callable[..., tuple[Delivery, FakeTransport]]) -> None:
    delivery, transport = make(lambda path, records: 204)
    _submit(delivery, ["n-1", "n-2", "n-3"])
    assert delivery.force_flush(5)
    assert sorted(transport.taken) == ["n-1", "n-2", "n-3"]
    assert delivery.spool.counts() == (0, 0)


def test_a_batch_with_one_bad_record_delivers_the_rest_and_dead_letters_that_one(
    make: Callable[..., tuple[Delivery, FakeTransport]],
) -> None:
    def answer(path: str, records: list[dict[str, str]]) -> int:
        return 400 if any(record["opType"] == "bad" for record in records) else 200

    delivery, transport = make(answer, batch=True, batch_size=50)
    uuids = [f"b-{i}" for i in range(19)] + ["bad-1"]
    _submit(delivery, uuids)
    assert delivery.force_flush(5)
    assert sorted(transport.taken) == sorted(uuids[:-1])
    assert [record.uuid for record in delivery.spool.dead_letters()] == ["bad-1"]
    assert delivery.exported["dead_letter"] == 1 and delivery.exported["delivered"] == 19


def test_a_slow_gateway_has_what_it_holds_written_ahead_then_acknowledged(
    make: Callable[..., tuple[Delivery, FakeTransport]], clock: FakeClock
) -> None:
    delivery, transport = make(lambda path, records: 200)
    transport.hold.clear()  # every request hangs
    uuids = [f"s-{i}" for i in range(10)]
    _submit(delivery, uuids)
    assert eventually(lambda: transport.in_flight == 10, timeout=5)
    assert delivery.spool.counts()[0] == 0  # in flight for no time yet, by the clock
    clock.advance(1.0)  # in flight longer than SPILL_AFTER: a kill -9 now must lose nothing
    assert eventually(lambda: delivery.spool.counts()[0] == 10, timeout=5)
    transport.hold.set()
    assert eventually(lambda: sorted(transport.taken) == sorted(uuids), timeout=5)
    clock.advance(1.0)  # the acknowledgements are written at least every tick
    assert eventually(lambda: delivery.spool.counts() == (0, 0), timeout=5)
    assert delivery.exported["delivered"] == 10


def test_exit_asks_the_gateway_once_more_at_once(
    make: Callable[..., tuple[Delivery, FakeTransport]], clock: FakeClock
) -> None:
    down = True
    delivery, transport = make(lambda path, records: 503 if down else 200, max_backoff=60.0)
    uuids = [f"e-{i}" for i in range(5)]
    _submit(delivery, uuids)
    assert eventually(lambda: delivery.sender.outage.attempts >= 1 and delivery.spool.counts()[0] == 5, timeout=5)
    down = False  # back, but the backoff would wait up to a minute by the clock
    delivery.shutdown(3.0)
    assert sorted(transport.taken) == sorted(uuids)
