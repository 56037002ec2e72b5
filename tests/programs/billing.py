"""N billed calls as alice under one request id: python billing.py RID N [flush] [wait] [log-info].

``flush``: flush before the end (it must succeed); ``wait``: print ``done``, then wait for a line
on stdin before exiting; ``log-info``: log at INFO to stderr (the adapter's INFO lines shown).
"""

from __future__ import annotations

import logging
import sys

import gateway_otel
from gateway_otel import caller_id_context, operation_log, trace_id_context

rid, n, options = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if "log-info" in options:
    logging.basicConfig(level=logging.INFO)


@operation_log(is_cost_log=True)
def bill(i: int) -> int:
    return i


trace_id_context.set(rid)
caller_id_context.set("alice")
for i in range(n):
    bill(i)
if "flush" in options:
    assert gateway_otel.force_flush(20)
if "wait" in options:
    print("done", flush=True)
    sys.stdin.readline()
