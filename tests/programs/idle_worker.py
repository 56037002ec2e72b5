"""A worker that starts and has nothing to do yet: it only imports gateway_otel.

Prints ``ready``, then exits on a line from stdin.
"""

from __future__ import annotations

import sys

import gateway_otel  # noqa: F401 - importing it is all this worker does

print("ready", flush=True)
sys.stdin.readline()
