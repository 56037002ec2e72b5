"""``submit_log``: a record made by hand goes through the same delivery pipeline."""

from __future__ import annotations

import time
import uuid as uuid_module
from collections.abc import Mapping
from typing import Any

import orjson

from . import _attributes as attrs
from ._context import baggage_of
from ._pipeline import current_pipeline
from ._records import ANONYMOUS, OperationLog
from ._serialize import to_json


def submit_log(record: OperationLog | Mapping[str, Any]) -> None:
    """Queue a record (an ``OperationLog`` or a dict of the protocol's fields) for delivery; never blocks.

    Fields left out are filled from the current context (request id, caller id, request URL) and
    defaults; ``request`` and ``response`` are serialized, scrubbed and capped like the decorator's.
    """
    payload = record.to_payload() if isinstance(record, OperationLog) else dict(record)
    bag = baggage_of()
    payload.setdefault("requestId", bag.get(attrs.REQUEST_ID) or uuid_module.uuid4().hex)
    payload.setdefault("callerId", bag.get(attrs.CALLER_ID) or ANONYMOUS)
    payload.setdefault("requestUrl", bag.get(attrs.REQUEST_URL) or "")
    payload.setdefault("startTimeMillis", time.time_ns() // 1_000_000)
    current_pipeline().processor.submit(_prepare, payload)


def _prepare(payload: dict[str, Any]) -> dict[str, Any]:
    pipeline = current_pipeline()
    cap = pipeline.settings.max_payload_bytes
    payload.setdefault("uuid", str(uuid_module.uuid4()))
    payload.setdefault("opLogType", "out")
    payload.setdefault("opType", "submit_log")
    payload.setdefault("isCostLog", False)
    payload.setdefault("operationStatus", "success")
    payload.setdefault("durationMillis", 0)
    payload.setdefault("request", {})
    for key in ("request", "response"):
        if payload.get(key) is not None:
            payload[key] = orjson.Fragment(to_json(payload[key], cap, pipeline.scrubber))
    extra = payload.get("extraInfo")
    payload["extraInfo"] = {"service": pipeline.service, **(extra if isinstance(extra, Mapping) else {})}
    return payload
