"""Values JSON cannot hold never break the decorated function; the record holds a placeholder."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import logging
import socket
import threading
import uuid
from typing import Any

import pydantic
import pytest

from gateway_otel import operation_log
from gateway_otel._selflog import _last


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Model(pydantic.BaseModel):
    name: str
    tags: set[str]


class RaisingRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {"name": "loop"}
    value["self"] = value
    return value


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


class _Socket(socket.socket):
    """A real socket that closes itself when the test's value is dropped."""

    def __del__(self) -> None:
        self.close()


def _generator() -> Any:
    yield 1


CASES: dict[str, tuple[Any, Any]] = {
    # name: (argument, what the record's "value" holds, or a predicate on it)
    "set": ({3, 1, 2}, lambda v: sorted(v) == [1, 2, 3]),
    "bytes": (b"caf\xc3\xa9", "café"),
    "binary bytes": (b"\xff\x00", "base64:/wA="),
    "datetime": (datetime.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05"),
    "decimal": (decimal.Decimal("1.10"), "1.10"),
    "uuid": (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
    "enum": (Color.RED, "red"),
    "dataclass": (Point(1, 2), {"x": 1, "y": 2}),
    "pydantic": (Model(name="m", tags={"a"}), {"name": "m", "tags": ["a"]}),
    "raising repr": (RaisingRepr(), "<unrepresentable RaisingRepr>"),
    "cyclic": (_cyclic(), lambda v: v["name"] == "loop" and v["self"].startswith("<cycle")),
    "deep": (_deep(10_000), lambda v: "max depth" in str(v)),
    "lock": (threading.Lock(), lambda v: isinstance(v, str) and "lock" in v),
    "socket": (_Socket(), lambda v: isinstance(v, str) and "socket" in v.lower()),
    "generator": (_generator(), lambda v: isinstance(v, str) and "generator" in v),
}


@pytest.mark.parametrize("name", list(CASES))
def test_argument_that_json_cannot_hold(name: str, captured_records: Any) -> None:
    argument, expected = CASES[name]

    @operation_log
    def handle(value: Any) -> Any:
        return value

    assert handle(argument) is argument
    record = captured_records.records[0]
    held = record["request"]["value"]
    if callable(expected):
        assert expected(held), held
    else:
        assert held == expected


@pytest.mark.parametrize("name", ["cyclic", "raising repr", "deep", "set"])
def test_return_value_that_json_cannot_hold(name: str, captured_records: Any) -> None:
    value = CASES[name][0]

    @operation_log
    def produce() -> Any:
        return value

    assert produce() is value
    out = captured_records.records[1]
    assert out["opLogType"] == "out" and out["response"] is not None


def test_huge_value_is_capped_and_says_so(captured_records: Any) -> None:
    big = "x" * (10 * 1024 * 1024)

    @operation_log
    def upload(data: str) -> str:
        return data

    assert upload(big) is big
    record_in, record_out = captured_records.records
    for payload in (record_in["request"], record_out["response"]):
        assert payload["_truncated"] is True
        assert payload["_size"] > 10 * 1024 * 1024
        assert payload["_preview"].startswith('{"data":"xxx') or payload["_preview"].startswith('"xxx')
        assert len(payload["_preview"]) <= 1024


def test_internal_failure_is_logged_once_and_never_reaches_the_caller(
    captured_records: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway_otel import _decorator

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("adapter bug")

    monkeypatch.setattr(_decorator, "to_json", broken)
    _last.pop("decorator-start", None)

    @operation_log
    def work(x: int) -> int:
        return x * 2

    with caplog.at_level(logging.WARNING, logger="gateway_otel"):
        assert [work(i) for i in range(5)] == [0, 2, 4, 6, 8]
    messages = [r.getMessage() for r in caplog.records if "could not start" in r.getMessage()]
    assert len(messages) == 1
    assert "adapter bug" in messages[0]
