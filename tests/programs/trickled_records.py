"""Ten records 10 ms apart, then a flush: python trickled_records.py RID."""

from __future__ import annotations

import sys
import time

from gateway_otel import force_flush, submit_log

rid = sys.argv[1]
base = {"requestId": rid, "callerId": "bob", "requestUrl": "/x", "opType": "trickled"}
for i in range(10):
    submit_log({**base, "uuid": f"trickle-{i}-{rid}"})
    time.sleep(0.01)
print("flushed" if force_flush(20) else "not flushed", flush=True)
