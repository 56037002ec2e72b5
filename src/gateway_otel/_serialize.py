"""The one place values become JSON: never raises, never drops a value silently, caps the size.

orjson holds dataclasses, datetimes, UUIDs, enums and numpy values natively; ``_default`` converts
what it cannot (pydantic models, sets, bytes, Decimal, paths) and falls back to ``repr``. Cyclic
or too deeply nested values are rebuilt by ``_sanitize`` with placeholders before a second try.
"""

from __future__ import annotations

import base64
import dataclasses
import decimal
import enum
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import orjson

from ._scrub import Scrubber, default_scrubber
from ._selflog import log_once

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
#: Depth at which ``_sanitize`` stops descending (orjson itself stops at 254).
MAX_DEPTH = 64
#: Characters of a capped value kept as its preview.
PREVIEW_CHARS = 1024


def safe_repr(value: object) -> str:
    """``repr(value)``, or a placeholder when its ``__repr__`` raises."""
    try:
        text = repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "..."


def _default(value: Any) -> Any:
    model_dump = getattr(value, "model_dump", None)
    if model_dump is not None and callable(model_dump):
        try:
            return model_dump(mode="json")
        except Exception:
            return safe_repr(value)
    if isinstance(value, Mapping):  # headers objects, query parameters: scrubbed as mappings
        try:
            return {key if isinstance(key, str) else safe_str(key): item for key, item in value.items()}
        except Exception:
            return safe_repr(value)
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {safe_str(value)}"
    if isinstance(value, tuple):  # namedtuple subclasses orjson refuses
        return list(value)
    tolist = getattr(value, "tolist", None)  # numpy values orjson does not take (object arrays, float128)
    if tolist is not None and callable(tolist):
        try:
            return tolist()
        except Exception:
            return safe_repr(value)
    return safe_repr(value)


def safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return safe_repr(value)


#: Characters of an error message kept in ``errMsg``.
MAX_ERROR_CHARS = 4096


def error_message(exc: BaseException, scrubber: Scrubber) -> str:
    """A record's ``errMsg`` for ``exc``: its type and message, secrets scrubbed, capped."""
    return scrubber.scrub_text(f"{type(exc).__name__}: {safe_str(exc)}")[:MAX_ERROR_CHARS]


def _sanitize(value: Any, depth: int, path: set[int]) -> Any:
    """A JSON-safe copy: placeholders for cycles, depth beyond ``MAX_DEPTH`` and what cannot convert."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= MAX_DEPTH:
        return f"<max depth {MAX_DEPTH} reached: {type(value).__qualname__}>"
    if id(value) in path:
        return f"<cycle: {type(value).__qualname__}>"
    if isinstance(value, enum.Enum):
        return _sanitize(value.value, depth + 1, path)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            value = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
        except Exception:
            return safe_repr(value)
    elif not isinstance(value, (Mapping, list, tuple, set, frozenset)):
        value = _default(value)
        if not isinstance(value, (dict, list)):
            return value
    path.add(id(value))
    try:
        if isinstance(value, Mapping):
            return {
                key if isinstance(key, str) else safe_str(key): _sanitize(item, depth + 1, path)
                for key, item in value.items()
            }
        return [_sanitize(item, depth + 1, path) for item in value]
    except Exception:
        return safe_repr(value)
    finally:
        path.discard(id(value))


def _dumps_carefully(value: Any) -> bytes:
    """JSON bytes of a value orjson does not take as it is (cycles, nesting beyond its limit, a
    container mutated meanwhile); never raises."""
    try:
        return orjson.dumps(_sanitize(value, 0, set()), default=_default, option=_OPTIONS)
    except Exception as exc:  # pragma: no cover - _sanitize returns only JSON types
        log_once("serialize", "could not serialize a %s: %r", type(value).__qualname__, exc)
        return orjson.dumps(f"<unserializable {type(value).__qualname__}>")


def capped(data: bytes, cap: int) -> bytes:
    """``data`` when it fits in ``cap`` bytes, else a small object that says it was capped."""
    if len(data) <= cap:
        return data
    preview = data[: min(cap, PREVIEW_CHARS)].decode("utf-8", errors="ignore")
    return orjson.dumps({"_truncated": True, "_size": len(data), "_preview": preview})


def to_json(value: Any, cap: int, scrubber: Scrubber | None = None) -> str:
    """The scrubbed, capped JSON text of ``value``, as it goes into a span attribute and a record."""
    try:  # a try statement, not contextlib.suppress: this is the decorator's hot path
        data = orjson.dumps(value, default=_default, option=_OPTIONS)
    except Exception:
        data = _dumps_carefully(value)
    text = data.decode("utf-8")  # orjson writes UTF-8; the look for secrets reads the text
    scrubbed = (scrubber or default_scrubber).scrub_json(data, text)
    if scrubbed is data and len(data) <= cap:
        return text  # most payloads: no secret, within the cap, decoded once
    data = scrubbed
    if len(data) > cap:
        data = capped(data, cap)
    return data.decode("utf-8")
