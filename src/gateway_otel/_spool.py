"""The durable spool: records that cannot be delivered now wait in SQLite (WAL) on disk.

Several processes may share one spool file: a record is claimed by one sender at a time, and a
claim left by a process that died expires, so the next process delivers it. The gateway
deduplicates by uuid, so a record delivered by a process that died before it could delete it
is acknowledged, not stored twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sqlite3
import threading
import time
import uuid as uuid_module
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

SPOOL_FILE = "spool.sqlite3"
LOCK_FILE = "spool.lock"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    uuid TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0, -- when the sender that failed meant to try again (shown, not enforced)
    claimed_by TEXT,
    claimed_until REAL NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS records_by_age ON records (created);
CREATE TABLE IF NOT EXISTS dead_letters (
    uuid TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    reason TEXT NOT NULL
);
"""


@dataclasses.dataclass(frozen=True)
class SpooledRecord:
    uuid: str
    body: bytes
    created: float
    attempts: int
    last_error: str | None = None


def _owner_id() -> str:
    """Who holds a claim: this process (pid and host, to tell whether it still runs) and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid_module.uuid4().hex[:8]}"


def _alive(owner: str) -> bool:
    host, _, rest = owner.rpartition(":")[0].partition(":")
    if host != socket.gethostname() or not rest.isdigit():
        return True  # another host's process: only its claim's expiry frees its records
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _setting_up(directory: Path) -> Iterator[None]:
    """Processes opening one spool set it up one at a time (a lock file beside it).

    Why: gunicorn's workers open the spool together right after the fork. Switching a new
    file to WAL needs it to themselves, and with several at it at once SQLite answered "database is
    locked" at once, or kept one worker waiting past gunicorn's graceful timeout.
    """
    if fcntl is None:  # not POSIX: no advisory locks; SQLite's busy timeout is all there is
        yield
        return
    descriptor = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # A POSIX record lock, not flock(): it belongs to this process alone, so a child forked
        # while a thread here holds it (gunicorn forks its workers so) does not hold it too.
        fcntl.lockf(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _close_if_opened_here(conn: sqlite3.Connection, pid: int) -> None:
    if os.getpid() == pid:  # a forked child only drops what it inherited
        conn.close()


class Spool:
    """Records waiting on disk, oldest first."""

    def __init__(self, directory: str | os.PathLike[str], *, claim_seconds: float = 60.0) -> None:
        self.directory = Path(directory)
        self.path = self.directory / SPOOL_FILE
        self._claim_seconds = claim_seconds
        self._owner = _owner_id()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            with _setting_up(self.directory):
                # Made 0600 before SQLite opens it: SQLite gives its -wal and -shm files the mode
                # of the database file.
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
                conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
                # WAL is a property of the file: the first process to open it sets it.
                if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
                for path in (str(self.path), f"{self.path}-wal", f"{self.path}-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.chmod(path, 0o600)  # a spool made by an older version or another umask
            self._conn, self._pid = conn, os.getpid()
            self._owner = _owner_id()
            # A spool dropped without close() (a command's look at it) closes its connection
            # too, rather than leaving it to the garbage collector (a ResourceWarning since 3.13);
            # not at exit, where delivery's own exit may still use the spool.
            weakref.finalize(self, _close_if_opened_here, conn, self._pid).atexit = False
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (the caller holds ``_lock``): a statement run for many rows commits
        once, not once per row (far cheaper per row than autocommit)."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def put(
        self,
        records: Iterable[tuple[str, bytes]],
        *,
        error: str | None = None,
        delay: float = 0.0,
        claimed: bool = False,
    ) -> int:
        """Store records (uuid, body); a uuid already there is kept once. Returns how many were new.

        ``claimed``: this process is still sending them (written ahead, in case it dies), so no
        sender takes them before the claim expires.
        """
        now = time.time()
        owner, until = (self._owner, now + self._claim_seconds) if claimed else (None, 0.0)
        rows = [(uuid, body, now, now + delay, error, owner, until) for uuid, body in records]
        if not rows:
            return 0
        with self._lock, self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO records (uuid, body, created, not_before, last_error, claimed_by, claimed_until)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return conn.total_changes - before

    def claim(self, limit: int) -> list[SpooledRecord]:
        """Take up to ``limit`` due records, oldest first, for this process to send."""
        now = time.time()
        with self._lock, self._transaction() as conn:
            rows = conn.execute(
                "SELECT uuid, body, created, attempts, last_error FROM records"
                " WHERE claimed_by IS NULL OR claimed_until < ?"
                " ORDER BY created LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE records SET claimed_by = ?, claimed_until = ? WHERE uuid = ?",
                [(self._owner, now + self._claim_seconds, row[0]) for row in rows],
            )
        return [SpooledRecord(*row) for row in rows]

    def release_dead_owners(self) -> int:
        """Free the claims of processes on this host that no longer run (killed while sending)."""
        with self._lock:
            conn = self._connection()
            owners = [
                row[0] for row in conn.execute("SELECT DISTINCT claimed_by FROM records WHERE claimed_by IS NOT NULL")
            ]
            dead = [owner for owner in owners if owner != self._owner and not _alive(owner)]
            released = 0
            for owner in dead:
                released += conn.execute(
                    "UPDATE records SET claimed_by = NULL, claimed_until = 0 WHERE claimed_by = ?", (owner,)
                ).rowcount
        return released

    def delivered(self, uuids: Iterable[str]) -> None:
        with self._lock, self._transaction() as conn:
            conn.executemany("DELETE FROM records WHERE uuid = ?", [(uuid,) for uuid in uuids])

    def release(self, uuids: Iterable[str], *, error: str, delay: float) -> None:
        """Give claimed records back, to be tried again after ``delay`` seconds."""
        not_before = time.time() + delay
        with self._lock, self._transaction() as conn:
            conn.executemany(
                "UPDATE records SET claimed_by = NULL, claimed_until = 0, attempts = attempts + 1,"
                " not_before = ?, last_error = ? WHERE uuid = ?",
                [(not_before, error, uuid) for uuid in uuids],
            )

    def dead_letter(self, uuid: str, body: bytes, reason: str) -> None:
        """Set a record aside that the gateway refused; it is kept with the reason, not retried."""
        with self._lock, self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters (uuid, body, created, reason) VALUES (?, ?, ?, ?)",
                (uuid, body, time.time(), reason),
            )
            conn.execute("DELETE FROM records WHERE uuid = ?", (uuid,))

    def pending(self) -> list[SpooledRecord]:
        with self._lock:
            rows = (
                self._connection()
                .execute("SELECT uuid, body, created, attempts, last_error FROM records ORDER BY created")
                .fetchall()
            )
        return [SpooledRecord(*row) for row in rows]

    def dead_letters(self) -> list[SpooledRecord]:
        with self._lock:
            rows = (
                self._connection()
                .execute("SELECT uuid, body, created, 0, reason FROM dead_letters ORDER BY created")
                .fetchall()
            )
        return [SpooledRecord(*row) for row in rows]

    def counts(self) -> tuple[int, int]:
        """(records waiting, dead letters)."""
        with self._lock:
            conn = self._connection()
            waiting = conn.execute("SELECT count(*) FROM records").fetchone()[0]
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        return int(waiting), int(dead)

    def stats(self) -> tuple[int, int, float | None]:
        """(records waiting, dead letters, when the oldest waiting record was written, or ``None``)."""
        with self._lock:
            conn = self._connection()
            waiting, oldest = conn.execute("SELECT count(*), min(created) FROM records").fetchone()
            dead = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        return int(waiting), int(dead), None if oldest is None else float(oldest)

    def requeue_dead_letters(self) -> int:
        """Move dead letters back to be delivered again (after the cause was fixed)."""
        with self._lock, self._transaction() as conn:
            moved = conn.execute(
                "INSERT OR IGNORE INTO records (uuid, body, created) SELECT uuid, body, created FROM dead_letters"
            ).rowcount
            conn.execute("DELETE FROM dead_letters")
        return int(moved)

    def purge(self, *, dead_only: bool = False) -> int:
        with self._lock:
            conn = self._connection()
            removed = conn.execute("DELETE FROM dead_letters").rowcount
            if not dead_only:
                removed += conn.execute("DELETE FROM records").rowcount
        return int(removed)

    def hold_for_fork(self) -> None:
        """Before ``fork()``: wait for any thread inside the spool, keep the others out, and close the
        connection. SQLite's lock state for a file is per process and a child inherits a copy of it:
        a connection open in the parent at the fork left gunicorn's workers waiting on locks that
        nobody held. The parent reopens the connection at its next use."""
        self._lock.acquire()
        self._close_connection()

    def release_after_fork(self) -> None:
        """After ``fork()``, in the parent (the child makes a spool of its own)."""
        self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._close_connection()

    def _close_connection(self) -> None:
        """Close this process's connection (the caller holds ``_lock``); one inherited is only dropped."""
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None
