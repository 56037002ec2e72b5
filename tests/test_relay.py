"""The relay: with ``relay`` on, a helper process builds and delivers the app's records.

Each scenario runs in a process of its own (the relay is that process's child), against the
session's reference gateway.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from gateway_otel.testing import eventually

from conftest import PROGRAMS, Gateway, Script, run_program


def _env(gateway: Gateway, spool: Path, **extra: str) -> dict[str, str]:
    return {
        "OPENAPI_HOST": gateway.url,
        "GATEWAY_OTEL_SPOOL_DIR": str(spool),
        "GATEWAY_OTEL_RELAY": "1",
        "GATEWAY_OTEL_MAX_BACKOFF": "0.5",
        **extra,
    }


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_relay_process_delivers_the_records_and_flush_waits_for_it(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"relay-{uuid.uuid4().hex}"
    scenario = ("delivers", rid)
    done = run_program("relay_scenarios", *scenario, env=_env(healthy_gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    app_pid, relay_pid, no_http_here = done.stdout.split()
    assert relay_pid not in ("None", app_pid)
    assert no_http_here == "True"  # the app itself never sent a request to the gateway
    records = healthy_gateway.records(rid)
    assert len(records) == 601  # counted when flush returned: it waited for the relay
    assert len({record["uuid"] for record in records}) == 601
    assert sum(record["opType"] == "by-hand" for record in records) == 1
    assert eventually(lambda: _gone(int(relay_pid)), timeout=20)  # its input ended with the app


def test_records_built_for_listeners_are_built_in_the_app_and_delivered_by_the_relay(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-listen-{uuid.uuid4().hex}"
    scenario = ("listeners", rid)
    done = run_program("relay_scenarios", *scenario, env=_env(healthy_gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["100", "True"]
    assert healthy_gateway.count(rid) == 100


def test_the_relay_delivers_what_the_app_handed_over_after_the_app_exits(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-exit-{uuid.uuid4().hex}"
    scenario = ("exits_without_flush", rid)
    done = run_program("relay_scenarios", *scenario, env=_env(healthy_gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    assert eventually(lambda: healthy_gateway.count(rid) >= 400, timeout=30)
    assert healthy_gateway.count(rid) == 400


def test_records_handed_to_the_relay_survive_the_app_being_killed(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"relay-kill-{uuid.uuid4().hex}"
    scenario = ("killed_after_hand_over", rid)
    healthy_gateway.faults(report_delay=0.3)  # the records are still on their way when the app dies
    script = Script.of_program(PROGRAMS / "relay_scenarios.py", *scenario, env=_env(healthy_gateway, tmp_path))
    try:
        assert script.process.stdout is not None
        word, relay_pid = script.process.stdout.readline().split()
        assert word == "handed"
        assert healthy_gateway.count(rid) < 200
        script.process.send_signal(signal.SIGKILL)
        script.wait(10)
    finally:
        script.close()
    healthy_gateway.faults()
    assert eventually(lambda: healthy_gateway.count(rid) >= 200, timeout=30)
    records = healthy_gateway.records(rid)
    assert len({record["uuid"] for record in records}) == len(records) == 200
    assert eventually(lambda: _gone(int(relay_pid)), timeout=30)


def test_records_waiting_for_a_relay_slow_to_start_survive_the_app_being_killed(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-slow-{uuid.uuid4().hex}"
    slow = tmp_path / "slow-python"  # the relay's interpreter takes 3 s to come up (a loaded machine)
    slow.write_text(f'#!/bin/sh\nsleep 3\nexec "{sys.executable}" "$@"\n')
    slow.chmod(0o755)
    scenario = ("killed_while_the_relay_starts", rid, str(slow))
    script = Script.of_program(
        PROGRAMS / "relay_scenarios.py", *scenario, env=_env(healthy_gateway, tmp_path / "spool")
    )
    try:
        script.expect("waited None")  # killed while the relay still comes up
        script.process.send_signal(signal.SIGKILL)
        script.wait(10)
    finally:
        script.close()
    # Older than a second at the kill: in the spool, which the relay delivers once it is up.
    assert eventually(lambda: healthy_gateway.count(rid) >= 100, timeout=30)
    records = healthy_gateway.records(rid)
    assert len({record["uuid"] for record in records}) == len(records) == 100


@pytest.mark.parametrize(
    ("setting", "how", "relayed"),
    [
        ("", "serve", True),
        ("0", "serve", False),
        ("", "call", False),
        ("1", "call", True),
        ("", "server loaded", True),
    ],
)
def test_by_default_a_process_that_serves_requests_delivers_through_a_relay(
    setting: str, how: str, relayed: bool, healthy_gateway: Gateway, tmp_path: Path
) -> None:
    """Decided once, at configuration: a process that serves requests (``instrument_app`` made the
    configuration, or an ASGI server is loaded) delivers through a relay; a script does not."""
    rid = f"relay-default-{uuid.uuid4().hex}"
    done = run_program("serving_or_not", rid, how, env=_env(healthy_gateway, tmp_path, GATEWAY_OTEL_RELAY=setting))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(relayed)]
    assert len(healthy_gateway.records(rid)) == (4 if how == "serve" else 2)  # a request's records, served


def test_when_the_relay_dies_the_app_delivers_in_its_own_process(healthy_gateway: Gateway, tmp_path: Path) -> None:
    rid = f"relay-dies-{uuid.uuid4().hex}"
    scenario = ("relay_dies", rid)
    done = run_program("relay_scenarios", *scenario, env=_env(healthy_gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
    assert "the relay stopped; delivering in this process" in done.stderr
    out = {record["uuid"]: record for record in healthy_gateway.records(rid) if record["opLogType"] == "out"}
    # Every call after the relay was gone is delivered by the app; those before, by the relay.
    assert set(range(20)) | set(range(100, 130)) <= {record["response"] for record in out.values()}


def test_a_forked_child_starts_a_relay_of_its_own_and_leaves_the_parents_alone(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-fork-{uuid.uuid4().hex}"
    scenario = ("forked", rid)
    done = run_program("relay_scenarios", *scenario, env=_env(healthy_gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    parent_relay, child, inherited, child_relay = done.stdout.split()
    try:
        assert inherited == "None"  # the child let go of the parent's relay
        assert child_relay not in ("None", parent_relay)
        assert healthy_gateway.count(rid) == 40
        # The parent exited: its relay's input ended, though the child (which forked with the
        # pipe open) still lives.
        assert eventually(lambda: _gone(int(parent_relay)), timeout=20)
        assert not _gone(int(child))
    finally:
        if not _gone(int(child)):
            os.kill(int(child), signal.SIGKILL)


def _on_a_loop(gateway: Gateway, tmp_path: Path, rid: str, scenario: str) -> list[str]:
    """Run an event loop's ``scenario`` in a process of its own; its output's words."""
    done = run_program("relay_scenarios", scenario, rid, env=_env(gateway, tmp_path))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_on_an_event_loop_records_are_handed_to_the_relay_from_the_loop_itself(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-loop-{uuid.uuid4().hex}"
    words = _on_a_loop(
        healthy_gateway,
        tmp_path,
        rid,
        "loop_hands_over",
    )
    assert words == ["MainThread"]  # the sender thread handed nothing over
    records = healthy_gateway.records(rid)
    assert len(records) == len({record["uuid"] for record in records}) == 602


def test_a_relay_that_stops_reading_never_blocks_the_event_loop_and_loses_nothing(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-stalled-{uuid.uuid4().hex}"
    words = _on_a_loop(
        healthy_gateway,
        tmp_path,
        rid,
        "relay_stalled",
    )
    (calls,) = words
    # Far more than the pipe holds: a write that waited for the relay would have held the loop,
    # and every call after it, until SIGCONT.
    assert int(calls) > 100
    records = healthy_gateway.records(rid)
    assert len(records) == len({record["uuid"] for record in records}) == 2 * int(calls) + 2


def test_when_the_event_loop_is_blocked_the_sender_thread_hands_its_records_over(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-blocked-{uuid.uuid4().hex}"
    words = _on_a_loop(
        healthy_gateway,
        tmp_path,
        rid,
        "loop_blocked",
    )
    assert words == ["0", "gateway-otel-delivery"]
    assert healthy_gateway.count(rid) == 4


def test_an_operation_that_ended_before_the_hand_over_sends_one_row_for_both_its_records(
    healthy_gateway: Gateway, tmp_path: Path
) -> None:
    rid = f"relay-both-{uuid.uuid4().hex}"
    words = _on_a_loop(
        healthy_gateway,
        tmp_path,
        rid,
        "one_row_for_both",
    )
    # One row for each short operation's two records; both records built in the app for one whose
    # span holds what JSON cannot.
    assert words == ["3"] * 50 + ["0", "1", "2", "2"]
    records = healthy_gateway.records(rid)
    assert len(records) == len({record["uuid"] for record in records}) == 106
    by_type: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        by_type.setdefault((record["opType"], record["opLogType"]), []).append(record)
    for kind in ("in", "out"):
        assert len(by_type["abill", kind]) == 50
    outs = {record["request"]["i"]: record for record in by_type["abill", "out"]}
    for record in by_type["abill", "in"]:  # built from the ended span: the in record all the same
        out = outs[record["request"]["i"]]
        assert record["request"] == out["request"] == {"i": record["request"]["i"], "payload": "p"}
        assert record["operationStatus"] == "success"
        assert record["durationMillis"] == 0
        assert "response" not in record
        for field in ("requestId", "callerId", "requestUrl", "isCostLog", "startTimeMillis", "extraInfo"):
            assert record[field] == out[field], field
        assert out["response"] == record["request"]["i"]
    assert [record.get("response") for record in by_type["slow", "out"]] == ["done"]
    assert len(by_type["big", "in"]) == len(by_type["big", "out"]) == 1
