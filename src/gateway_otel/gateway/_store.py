"""The reference gateway's storage: callers, records and billing in one SQLite database (WAL)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS callers (
    caller_id TEXT PRIMARY KEY,
    balance REAL NOT NULL DEFAULT 0,
    models TEXT NOT NULL DEFAULT '["*"]'
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    caller_id TEXT NOT NULL REFERENCES callers (caller_id)
);
CREATE TABLE IF NOT EXISTS records (
    uuid TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    caller_id TEXT NOT NULL,
    op_type TEXT NOT NULL,
    op_log_type TEXT NOT NULL,
    is_cost_log INTEGER NOT NULL,
    status TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    charge REAL NOT NULL DEFAULT 0,
    received REAL NOT NULL,
    via TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_request ON records (request_id, start_ms);
CREATE TABLE IF NOT EXISTS prices (
    op_type TEXT PRIMARY KEY,
    price REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

DEFAULT_PRICE = 1.0
DEMO_CALLERS = {"alice": "demo-alice", "bob": "demo-bob"}
DEMO_BALANCE = 100.0


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Caller:
    caller_id: str
    balance: float
    models: tuple[str, ...]

    def supports(self, model: str) -> bool:
        return "*" in self.models or model in self.models


@dataclasses.dataclass(frozen=True)
class StoreResult:
    accepted: int
    duplicates: int


class Store:
    """Thread-safe access to the gateway's database."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        #: Transactions that stored records (several requests' records share one under load).
        self.transactions = 0
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        # Copy the log into the database (and sync both) every 40 MB rather than 4 MB: the records'
        # random keys dirty index pages all over, and a page written by many commits is copied once.
        self._conn.execute("PRAGMA wal_autocheckpoint=10000")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- configuration --------------------------------------------------------------------

    def add_caller(
        self, caller_id: str, *, tokens: Iterable[str] = (), balance: float = 0.0, models: Iterable[str] = ("*",)
    ) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO callers (caller_id, balance, models) VALUES (?, ?, ?)"
                " ON CONFLICT (caller_id) DO UPDATE SET balance = excluded.balance, models = excluded.models",
                (caller_id, float(balance), json.dumps(list(models))),
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO tokens (token_hash, caller_id) VALUES (?, ?)",
                [(token_hash(token), caller_id) for token in tokens],
            )

    def set_price(self, op_type: str, price: float) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO prices (op_type, price) VALUES (?, ?)", (op_type, float(price)))

    def load_config(self, config: Mapping[str, Any]) -> None:
        """Callers, tokens, models, balances and prices from a parsed config file."""
        for caller_id, entry in dict(config.get("callers", {})).items():
            self.add_caller(
                str(caller_id),
                tokens=[str(token) for token in entry.get("tokens", [])],
                balance=float(entry.get("balance", 0.0)),
                models=[str(model) for model in entry.get("models", ["*"])],
            )
        for op_type, price in dict(config.get("prices", {})).items():
            self.set_price(str(op_type), float(price))

    def load_demo(self) -> None:
        for caller_id, token in DEMO_CALLERS.items():
            self.add_caller(caller_id, tokens=[token], balance=DEMO_BALANCE)

    # -- authentication and billing checks ---------------------------------------------------

    def caller_for_token(self, token: str) -> Caller | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT c.caller_id, c.balance, c.models FROM tokens t JOIN callers c USING (caller_id)"
                " WHERE t.token_hash = ?",
                (token_hash(token),),
            ).fetchone()
        if row is None:
            return None
        return Caller(row[0], float(row[1]), tuple(json.loads(row[2])))

    # -- records ---------------------------------------------------------------------------

    def add_records(self, records: Iterable[Mapping[str, Any]], *, via: str) -> StoreResult:
        """Store records; a uuid already held is acknowledged and not stored (or billed) again."""
        return self.add_groups([(records, via)])[0]

    def add_groups(self, groups: Sequence[tuple[Iterable[Mapping[str, Any]], str]]) -> list[StoreResult]:
        """Store several requests' records, each group with the endpoint it came by, in one transaction.

        Each group gets its own counts; a uuid already held (or earlier in this call) is acknowledged
        and not stored or billed again. Nothing is stored unless everything is.
        """
        now = time.time()
        results: list[StoreResult] = []
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                prices = dict(conn.execute("SELECT op_type, price FROM prices").fetchall())
                default = float(prices.get("default", DEFAULT_PRICE))
                # Rows stored from here on have larger rowids: the callers are charged for those.
                last = conn.execute("SELECT coalesce(max(rowid), 0) FROM records").fetchone()[0]
                for records, via in groups:
                    rows = [_row(record, via, now, prices, default) for record in records]
                    before = conn.total_changes
                    conn.executemany(_INSERT, rows)
                    accepted = conn.total_changes - before
                    results.append(StoreResult(accepted, len(rows) - accepted))
                conn.execute(_CHARGE, (last,))
                received = sum(result.accepted + result.duplicates for result in results)
                duplicated = sum(result.duplicates for result in results)
                for name, value in (("received", received), ("duplicates", duplicated)):
                    conn.execute(
                        "INSERT INTO counters (name, value) VALUES (?, ?)"
                        " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                        (name, value),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self.transactions += 1
        return results

    def records_of(self, request_id: str) -> list[dict[str, Any]]:
        """A request's records, ordered by start time, ``in`` before ``out``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT payload FROM records WHERE request_id = ? ORDER BY start_ms, op_log_type = 'out', received",
                (request_id,),
            ).fetchall()
        return [_loads(row[0]) for row in rows]

    def request_ids(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent requests with their record counts."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT request_id, caller_id, min(start_ms), count(*), sum(charge) FROM records"
                " GROUP BY request_id ORDER BY min(start_ms) DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            {"requestId": r[0], "callerId": r[1], "startTimeMillis": r[2], "records": r[3], "charged": r[4]}
            for r in rows
        ]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            conn = self._conn
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            stored = conn.execute("SELECT count(*) FROM records").fetchone()[0]
            billing = conn.execute(
                "SELECT c.caller_id, c.balance, count(r.uuid), coalesce(sum(r.charge), 0) FROM callers c"
                " LEFT JOIN records r ON r.caller_id = c.caller_id AND r.charge > 0 GROUP BY c.caller_id"
                " ORDER BY c.caller_id"
            ).fetchall()
        return {
            "stored": int(stored),
            "transactions": self.transactions,
            "received": int(counters.get("received", 0)),
            "duplicates": int(counters.get("duplicates", 0)),
            "billing": [
                {"callerId": b[0], "balance": float(b[1]), "billedRecords": int(b[2]), "charged": float(b[3])}
                for b in billing
            ],
        }


_INSERT = (
    "INSERT OR IGNORE INTO records (uuid, request_id, caller_id, op_type, op_log_type, is_cost_log,"
    " status, start_ms, duration_ms, charge, received, via, payload)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Each caller pays for its records stored since rowid ``?``, in one statement.
_CHARGE = (
    "UPDATE callers SET balance = balance - stored.charged"
    " FROM (SELECT caller_id, sum(charge) AS charged FROM records WHERE rowid > ? AND charge != 0"
    " GROUP BY caller_id) AS stored WHERE callers.caller_id = stored.caller_id"
)


def _row(record: Mapping[str, Any], via: str, now: float, prices: Mapping[str, Any], default: float) -> tuple[Any, ...]:
    """A record's row; a billing record charges its operation's price, a failed operation nothing.

    Rows for ``executemany`` and one charge per caller: one ``execute`` per record (and one more per
    charge) is markedly slower for a batch.
    """
    billed = record["opLogType"] == "out" and bool(record["isCostLog"]) and record["operationStatus"] == "success"
    return (
        _text(record["uuid"]),
        _text(record["requestId"]),
        _text(record["callerId"]),
        _text(record["opType"]),
        record["opLogType"],
        int(bool(record["isCostLog"])),
        record["operationStatus"],
        int(record["startTimeMillis"]),
        int(record["durationMillis"]),
        float(prices.get(record["opType"], default)) if billed else 0.0,
        now,
        via,
        _dumps(record),
    )


def _text(value: str) -> str:
    """Text SQLite can store: a lone surrogate (valid JSON escape, not Unicode) becomes U+FFFD."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def _dumps(record: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # integers beyond 64 bits, lone surrogates: the stdlib escapes both
        return json.dumps(record).encode("ascii")


def _loads(blob: bytes) -> Any:
    try:
        return orjson.loads(blob)
    except orjson.JSONDecodeError:
        return json.loads(blob)


def read_config(path: str | Path) -> dict[str, Any]:
    """A JSON config file: ``{"callers": {ID: {"tokens": [...], "models": [...], "balance": N}}, "prices": {...}}``."""
    loaded: Any = json.loads(Path(path).read_bytes())
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: the config must be a JSON object")
    return loaded
