"""Three billed calls with no OPENAPI_HOST: python no_gateway.py SPOOL_DIR."""

from __future__ import annotations

import sys

import gateway_otel
from gateway_otel import check_configuration, operation_log, validate_token
from gateway_otel._spool import Spool


@operation_log(is_cost_log=True)
def bill(i: int) -> int:
    return i


for i in range(3):
    bill(i)
print(gateway_otel.force_flush(20), check_configuration(), validate_token("anything"))
print(Spool(sys.argv[1]).counts()[0])
