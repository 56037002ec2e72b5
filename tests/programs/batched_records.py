"""Submit one record the gateway refuses and N good ones: python batched_records.py RID BAD N."""

from __future__ import annotations

import sys

from gateway_otel import force_flush, submit_log

rid, bad, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = {"requestId": rid, "callerId": "bob", "requestUrl": "/x", "opType": "batched"}
submit_log({**base, "uuid": bad})
for i in range(n):
    submit_log({**base, "uuid": f"good-{i}-{rid}"})
print("flushed" if force_flush(20) else "not flushed", flush=True)
