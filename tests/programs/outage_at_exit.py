"""Records made while the gateway answers 503, delivered by exit once it is back: python outage_at_exit.py RID N.

It says ``idle`` once its first record is delivered and the sender found the spool empty, reads a
line (the gateway fails now), makes N operations, says ``spooled`` once all their records wait in
the spool, reads a line (the gateway is back) and exits.
"""

from __future__ import annotations

import sys

from gateway_otel import force_flush, operation_log, trace_id_context
from gateway_otel._pipeline import current_pipeline
from gateway_otel.testing import eventually

rid, n = sys.argv[1], int(sys.argv[2])


@operation_log(is_cost_log=True)
def bill(i: int) -> int:
    return i


trace_id_context.set(rid)
bill(-1)
assert force_flush(20)
delivery = current_pipeline().delivery
assert eventually(lambda: delivery.sender._spool_empty, timeout=20)  # the sender looked, and found nothing
print("idle", flush=True)
sys.stdin.readline()  # the gateway answers 503 now
for i in range(n):
    bill(i)
assert eventually(lambda: delivery.spool.counts()[0] == 2 * n, timeout=20)  # the next retry is seconds away
print("spooled", flush=True)
sys.stdin.readline()  # the gateway is back: exit now
