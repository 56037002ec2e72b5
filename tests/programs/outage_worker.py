"""A script that bills through a gateway outage, staged over stdin/stdout by the test.

Usage: python outage_worker.py REQUEST_ID CALLS. Prints ``idle`` (one record delivered), then on
a line from stdin makes CALLS billed calls on 16 threads (the gateway is down then), prints
``waiting`` once they are made and the sender has failed for a while, and exits normally on the
next line.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

from gateway_otel import caller_id_context, force_flush, operation_log, run_in_context, trace_id_context


@operation_log(is_cost_log=True)
def bill(i: int) -> int:
    return i


trace_id_context.set(sys.argv[1])
caller_id_context.set("alice")
calls = int(sys.argv[2])
bill(-1)
assert force_flush(20)
print("idle", flush=True)
sys.stdin.readline()
with ThreadPoolExecutor(16) as pool:
    list(pool.map(run_in_context(bill), range(calls)))
time.sleep(3)  # the sender keeps failing meanwhile: each failure would push the next retry out
print("waiting", flush=True)
sys.stdin.readline()
