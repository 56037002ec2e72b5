"""The reference gateway's store: requests that arrive together share one transaction (group commit)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway_otel.gateway._app import GroupCommit
from gateway_otel.gateway._store import Store


def record(uuid: str, *, billed: bool = True, **changes: Any) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "requestId": "req-1",
        "callerId": "alice",
        "requestUrl": "http://svc/v1/chat",
        "opLogType": "out" if billed else "in",
        "opType": "chat",
        "isCostLog": True,
        "operationStatus": "success",
        "startTimeMillis": 1,
        "durationMillis": 2,
        "request": {},
        **changes,
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "gateway.db")
    store.add_caller("alice", balance=100.0)
    store.set_price("chat", 2.0)
    yield store
    store.close()


def _balance(store: Store) -> float:
    (alice,) = [entry for entry in store.stats()["billing"] if entry["callerId"] == "alice"]
    return float(alice["balance"])


def test_groups_in_one_transaction_keep_their_own_counts_and_bill_once(store: Store) -> None:
    store.add_records([record("held")], via="report/log")
    results = store.add_groups(
        [
            ([record("a"), record("b", billed=False)], "report/logs"),
            ([record("a")], "report/log"),  # the same uuid as the group before it
            ([record("held"), record("c")], "report/logs"),  # one already held
        ]
    )
    assert [(r.accepted, r.duplicates) for r in results] == [(2, 0), (0, 1), (1, 1)]
    stats = store.stats()
    assert stats["stored"] == 4 and stats["received"] == 6 and stats["duplicates"] == 2
    assert stats["transactions"] == 2
    assert _balance(store) == 100.0 - 3 * 2.0  # held, a, c: the "in" record and duplicates cost nothing


def test_a_group_that_fails_stores_nothing_of_its_transaction(store: Store) -> None:
    broken = record("broken")
    del broken["opType"]
    with pytest.raises(KeyError):
        store.add_groups([([record("fine")], "report/log"), ([broken], "report/log")])
    assert store.stats()["stored"] == 0
    assert _balance(store) == 100.0


def test_requests_handled_in_one_turn_share_one_commit(store: Store) -> None:
    async def main() -> list[tuple[int, int]]:
        writer = GroupCommit(store)
        results = await asyncio.gather(
            *(writer.add([record(f"r{i}")], "report/log") for i in range(40)),
            writer.add([record("r0")], "report/log"),  # a retry racing its original
        )
        later = await writer.add([record("r40")], "report/log")
        return [(r.accepted, r.duplicates) for r in [*results, later]]

    counts = asyncio.run(main())
    assert counts == [(1, 0)] * 40 + [(0, 1), (1, 0)]
    assert store.stats()["transactions"] == 2  # the 41 handled together, then the one after
    assert _balance(store) == 100.0 - 41 * 2.0


def test_records_that_cannot_be_stored_fail_their_own_request_alone(store: Store) -> None:
    broken = record("broken")
    del broken["opType"]

    async def main() -> list[Any]:
        writer = GroupCommit(store)
        return await asyncio.gather(
            writer.add([record("fine")], "report/log"), writer.add([broken], "report/log"), return_exceptions=True
        )

    fine, failed = asyncio.run(main())
    assert (fine.accepted, fine.duplicates) == (1, 0)
    assert isinstance(failed, KeyError)
    assert store.stats()["stored"] == 1
    assert store.stats()["transactions"] == 1  # the shared one rolled back; "fine" alone committed


def test_each_event_loop_commits_its_own_requests(store: Store) -> None:
    writer = GroupCommit(store)
    other: list[tuple[int, int]] = []

    async def in_other_loop() -> None:
        result = await writer.add([record("b")], "report/log")
        other.append((result.accepted, result.duplicates))

    async def main() -> tuple[int, int]:
        mine = asyncio.ensure_future(writer.add([record("a")], "report/log"))
        await asyncio.sleep(0)  # "a" waits for this loop's commit, due at the end of this turn
        thread = threading.Thread(target=asyncio.run, args=(in_other_loop(),), daemon=True)
        thread.start()
        thread.join(10)  # meanwhile this loop is blocked: the other must commit on its own
        assert not thread.is_alive()
        result = await mine
        return result.accepted, result.duplicates

    assert asyncio.run(main()) == (1, 0)
    assert other == [(1, 0)]
    assert store.stats()["stored"] == 2
