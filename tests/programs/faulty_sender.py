"""The sender's loop fails three times, then works: python faulty_sender.py RID."""

from __future__ import annotations

import sys

from gateway_otel import force_flush, submit_log
from gateway_otel._pipeline import current_pipeline
from gateway_otel._sender import Sender

rid = sys.argv[1]
faults = [3]
take_queue = Sender._take_queue


def failing_take_queue(self: Sender, now: float) -> float | None:
    if faults[0]:
        faults[0] -= 1
        raise RuntimeError("a fault in the sender")
    return take_queue(self, now)


Sender._take_queue = failing_take_queue  # type: ignore[method-assign]
base = {"requestId": rid, "callerId": "bob", "requestUrl": "/x", "opType": "faulty"}
for i in range(50):
    submit_log({**base, "uuid": f"faulty-{i}-{rid}"})
print("flushed" if force_flush(20) else "not flushed", flush=True)
delivery = current_pipeline().delivery
alive = delivery._running and delivery._thread is not None and delivery._thread.is_alive()
print("alive" if alive else "stopped", flush=True)
