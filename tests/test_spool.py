"""The spool on disk: processes that open it together (gunicorn's workers after the fork) all get in."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gateway_otel._spool import Spool

from conftest import PROGRAMS


def _open_at_once(directory: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        Spool(directory).release_dead_owners()  # what each worker does first
        results.put("in")
    except Exception as exc:
        results.put(repr(exc))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_processes_opening_a_new_spool_together_all_get_in() -> None:
    context = multiprocessing.get_context("fork")
    for _ in range(15):  # the race is lost now and then, not every time
        directory = tempfile.mkdtemp()
        barrier, results = context.Barrier(6), context.Queue()
        processes = [context.Process(target=_open_at_once, args=(directory, barrier, results)) for _ in range(6)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(40)
        outcomes = [results.get(timeout=5) for _ in processes]
        assert outcomes == ["in"] * 6, outcomes  # none refused ("database is locked")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_children_forked_while_the_parent_writes_to_the_spool_can_use_it(tmp_path: Path) -> None:
    # gunicorn --preload forks its workers from a master whose delivery thread may be in the spool.
    result = subprocess.run(
        [sys.executable, str(PROGRAMS / "fork_spool.py"), str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
