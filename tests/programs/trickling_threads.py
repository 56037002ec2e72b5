"""Four threads append records and flush markers as fast as threads swap: python trickling_threads.py RID PER_THREAD."""

from __future__ import annotations

import sys
import threading
import time

from gateway_otel import force_flush, submit_log
from gateway_otel._pipeline import current_pipeline

rid, per_thread = sys.argv[1], int(sys.argv[2])
sys.setswitchinterval(1e-6)  # threads swap as often as they can: the sender scans a queue others append to
base = {"requestId": rid, "callerId": "bob", "requestUrl": "/x", "opType": "trickled"}


def trickle(t: int) -> None:
    for i in range(per_thread):
        submit_log({**base, "uuid": f"t{t}-{i}-{rid}"})
        if i % 50 == 0:
            force_flush(0)  # a flush marker among the records now and then
        time.sleep(0.0002)


threads = [threading.Thread(target=trickle, args=(t,)) for t in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
delivery = current_pipeline().delivery
alive = delivery._running and delivery._thread is not None and delivery._thread.is_alive()
print("alive" if alive else "stopped", flush=True)
print("flushed" if force_flush(30) else "not flushed", flush=True)
