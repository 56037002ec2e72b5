"""Forks children while a thread of the parent writes to the spool; each child must use the spool.

python fork_spool.py SPOOL_DIR: exits 0 when every child could, 1 when one hung or failed.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from gateway_otel._delivery import Delivery
from gateway_otel._settings import load_settings

delivery = Delivery(load_settings({"spool_dir": sys.argv[1]}, environ={}))
stop = threading.Event()


def write() -> None:
    i = 0
    while not stop.is_set():
        delivery.spool.put([(f"parent-{i}", b"{}")])
        delivery.spool.counts()
        i += 1


writer = threading.Thread(target=write, daemon=True)
writer.start()
failed = 0
for child in range(30):
    time.sleep(0.01)
    pid = os.fork()
    if pid == 0:
        delivery.spool.put([(f"child-{child}", b"{}")])
        os._exit(0 if delivery.spool.counts()[0] > 0 else 1)
    deadline = time.monotonic() + 10
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            failed += os.waitstatus_to_exitcode(status) != 0
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            failed += 1
            break
        time.sleep(0.01)
stop.set()
writer.join(10)
print(f"{failed} of 30 children could not use the spool")
sys.exit(1 if failed else 0)
