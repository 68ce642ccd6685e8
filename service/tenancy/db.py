"""The one database of API keys and audit records: SQLite (WAL) or PostgreSQL, chosen by URL.

    open_database("sqlite:///var/lib/spaguard/spaguard.db")   # or a bare path
    open_database("postgresql://user@host:5432/spaguard")     # psycopg 3 (the ``postgres`` extra)

Contract
--------
* ``Database.execute(sql, params)`` runs one statement in its own transaction and commits before it
  returns: once it returns, the row survives a ``kill -9`` of this process (SQLite runs with
  ``synchronous=FULL`` in WAL mode; PostgreSQL commits with its default ``synchronous_commit=on``).
* ``Database.query(sql, params)`` returns the rows as dicts. SQL is written with ``?`` placeholders;
  the PostgreSQL driver's ``%s`` is substituted here, so callers write one dialect.
* One connection per ``Database``, guarded by a lock: the calls are blocking and thread-safe, so the
  server runs them in a worker thread (``asyncio.to_thread``), never on the event loop.
* ``SCHEMA`` is created on open (idempotent), so ``spaguard keys create`` and ``spaguard serve`` can
  each be first.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

DATA_DIR_ENV = "SPAGUARD_DATA"  # the data directory; default ~/.local/share/spaguard
DB_FILE = "spaguard.db"

# Types common to both dialects: TEXT, BIGINT, DOUBLE PRECISION (SQLite reads them as TEXT/INTEGER/REAL).
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS api_keys (
        key_id TEXT PRIMARY KEY,
        key_hash TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        policy TEXT NOT NULL,
        rpm BIGINT,
        tpm BIGINT,
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    )""",
    """CREATE TABLE IF NOT EXISTS tenant_policies (
        tenant TEXT NOT NULL,
        policy TEXT NOT NULL,
        PRIMARY KEY (tenant, policy)
    )""",
    """CREATE TABLE IF NOT EXISTS audit_log (
        request_id TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        tenant TEXT,
        key_id TEXT,
        policy TEXT,
        policy_version TEXT,
        path TEXT NOT NULL,
        status BIGINT NOT NULL,
        action TEXT NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        record TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS audit_log_ts ON audit_log (ts)",
)


def data_dir() -> Path:
    """``$SPAGUARD_DATA`` or ``~/.local/share/spaguard`` (read on every call, so tests may set it)."""
    return Path(os.environ.get(DATA_DIR_ENV) or Path.home() / ".local" / "share" / "spaguard")


def default_url() -> str:
    """The SQLite file under the data directory."""
    return f"sqlite:///{data_dir() / DB_FILE}"


class Database:
    """One connection to SQLite or PostgreSQL; see the module docstring for the contract."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.kind, self._conn = _connect(url)
        self._lock = threading.Lock()
        for statement in SCHEMA:
            self.execute(statement)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run and commit one statement; the number of rows it changed."""
        with self._lock:
            try:
                cur = self._conn.execute(self._sql(sql), tuple(params))
                count = cur.rowcount
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
            return int(count)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """The rows of one SELECT, as dicts keyed by column name."""
        with self._lock:
            try:
                cur = self._conn.execute(self._sql(sql), tuple(params))
                names = [d[0] for d in cur.description or ()]
                rows = [dict(zip(names, row)) for row in cur.fetchall()]
            finally:
                self._conn.rollback()  # end the read transaction (PostgreSQL opens one per SELECT)
            return rows

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def open_database(url: str | None = None) -> Database:
    """The database at ``url`` (None: ``default_url()``). Raises ``ValueError`` with the fix on a bad URL."""
    return Database(url or default_url())


def _connect(url: str) -> tuple[str, Any]:
    parsed = urlparse(url)
    if parsed.scheme in ("postgresql", "postgres"):
        try:
            import psycopg  # the ``postgres`` extra; only a PostgreSQL URL needs it
        except ImportError:
            raise ValueError("a postgresql:// --db needs psycopg: pip install 'psycopg[binary]==3.3.9' "
                             "(the postgres extra)") from None
        try:
            return "postgresql", psycopg.connect(url, connect_timeout=10)
        except psycopg.Error as exc:
            raise ValueError(f"cannot connect to the PostgreSQL --db: {exc}".strip()) from None
    if parsed.scheme in ("sqlite", ""):
        path = Path(parsed.path if parsed.scheme else url)
        if parsed.scheme and parsed.netloc:  # sqlite://relative/path is a typo for sqlite:///
            raise ValueError(f"--db {url}: write sqlite:///ABSOLUTE/PATH or a plain file path")
        if not str(path) or str(path) == "/":
            raise ValueError(f"--db {url}: no database file named")
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: calls come from worker threads, serialised by Database._lock.
        conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level="DEFERRED")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed row is on disk before execute() returns (WAL's NORMAL may lose the last
        # commits on power loss; the audit log promises durability before the response).
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")  # the CLI and the server share the file
        return "sqlite", conn
    raise ValueError(f"--db {url}: unsupported scheme {parsed.scheme!r} (use sqlite:///PATH or postgresql://...)")
