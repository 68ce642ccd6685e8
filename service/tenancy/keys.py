"""API keys: created once, stored only as a hash, bound to a tenant and a policy, with per-key limits.

A key reads ``sk-spa-<key_id>-<secret>``: ``key_id`` (12 hex digits) names the key in lists, logs and
audit records; the whole key is shown once by ``KeyStore.create`` and never stored. The database keeps
its SHA-256 (a 192-bit random secret needs no slow hash: there is nothing to brute-force).

Contract
--------
* ``create(tenant, policy, rpm, tpm)`` → ``(KeyRecord, key)``; the tenant is allowed the key's policy.
* ``lookup(key)`` → the ``KeyRecord`` (revoked ones too: the caller answers 403 for them, 401 for unknown
  keys), or None. Every call reads the database, so a ``spaguard keys revoke`` in another process takes
  effect on the next request.
* ``allow(tenant, policy)`` / ``allowed(tenant, policy)``: the policies a tenant may select per request.
* ``revoke(key_id)`` → False when no such key is live.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from service.tenancy.db import Database

KEY_PREFIX = "sk-spa-"
_KEY_RE = re.compile(r"^sk-spa-([0-9a-f]{12})-([A-Za-z0-9_-]{32})$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # tenant and policy names


@dataclass(frozen=True)
class KeyRecord:
    """One stored key (never the key itself)."""

    key_id: str
    tenant: str
    policy: str
    rpm: int | None  # requests per minute; None = unlimited
    tpm: int | None  # tokens per minute; None = unlimited
    created_at: float
    revoked_at: float | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_name(kind: str, name: str) -> str:
    """``name`` if it is a valid tenant/policy name, else ``ValueError`` saying what is allowed."""
    if not NAME_RE.match(name):
        raise ValueError(f"{kind} {name!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


class KeyStore:
    """Keys and tenant policy grants in a ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, tenant: str, policy: str, rpm: int | None = None, tpm: int | None = None) -> tuple[KeyRecord, str]:
        check_name("tenant", tenant)
        check_name("policy", policy)
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be at least 1 (leave it out for no limit)")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{key_id}-{secrets.token_urlsafe(24)}"
        now = time.time()
        self.db.execute(
            "INSERT INTO api_keys (key_id, key_hash, tenant, policy, rpm, tpm, created_at, revoked_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, NULL)", (key_id, hash_key(key), tenant, policy, rpm, tpm, now))
        self.allow(tenant, policy)
        return KeyRecord(key_id, tenant, policy, rpm, tpm, now, None), key

    def allow(self, tenant: str, policy: str) -> None:
        check_name("tenant", tenant)
        check_name("policy", policy)
        if not self.allowed(tenant, policy):
            self.db.execute("INSERT INTO tenant_policies (tenant, policy) VALUES (?, ?)", (tenant, policy))

    def allowed(self, tenant: str, policy: str) -> bool:
        rows = self.db.query("SELECT 1 AS ok FROM tenant_policies WHERE tenant = ? AND policy = ?", (tenant, policy))
        return bool(rows)

    def lookup(self, key: str) -> KeyRecord | None:
        match = _KEY_RE.match(key)
        if match is None:
            return None
        rows = self.db.query("SELECT * FROM api_keys WHERE key_id = ?", (match.group(1),))
        if not rows or not hmac.compare_digest(rows[0]["key_hash"], hash_key(key)):
            return None
        return _record(rows[0])

    def list(self, tenant: str | None = None) -> list[KeyRecord]:
        if tenant is None:
            rows = self.db.query("SELECT * FROM api_keys ORDER BY created_at")
        else:
            rows = self.db.query("SELECT * FROM api_keys WHERE tenant = ? ORDER BY created_at", (tenant,))
        return [_record(r) for r in rows]

    def revoke(self, key_id: str) -> bool:
        changed = self.db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                                  (time.time(), key_id))
        return changed > 0


def _record(row: dict) -> KeyRecord:
    def opt_int(v: object) -> int | None:
        return None if v is None else int(v)  # type: ignore[call-overload]

    return KeyRecord(str(row["key_id"]), str(row["tenant"]), str(row["policy"]), opt_int(row["rpm"]),
                     opt_int(row["tpm"]), float(row["created_at"]),
                     None if row["revoked_at"] is None else float(row["revoked_at"]))
