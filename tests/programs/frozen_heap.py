"""What the first request froze: python frozen_heap.py [no-freeze]."""

from __future__ import annotations

import gc
import sys

from fastapi import FastAPI
from fastapi.testclient import TestClient

from gateway_otel import instrument_app

freeze_gc = "no-freeze" not in sys.argv[1:]
app = FastAPI()


@app.get("/frozen")
def frozen() -> dict[str, int]:
    return {"frozen": gc.get_freeze_count()}


instrument_app(app, freeze_gc=freeze_gc)
with TestClient(app) as client:
    print(gc.get_freeze_count(), client.get("/frozen").json()["frozen"])

later = FastAPI()  # another app in the same process (a test suite makes many): not frozen again
later.get("/frozen")(frozen)
instrument_app(later, freeze_gc=freeze_gc)
kept: list[list[int]] = [[] for _ in range(5000)]  # tracked objects made after the first request
with TestClient(later) as client:
    print(client.get("/frozen").json()["frozen"])
