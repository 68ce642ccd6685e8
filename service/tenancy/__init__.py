"""Tenancy: who is calling, which policy applies, how much they may send (issue 16).

* ``db``: the one database of keys and audit records (SQLite in WAL mode, or PostgreSQL).
* ``keys``: API keys stored as hashes, bound to a tenant and a policy, with per-key limits.
* ``policies``: the YAML guard policies (per taxonomy node thresholds and actions), reloaded live.
* ``limits``: requests / tokens per minute per key, and each tenant's share of the in-flight requests.
* ``scope``: the per-request context (tenant, key, policy, the guard's decisions) carried by a contextvar.
* ``middleware``: the ASGI middleware that authenticates, limits, selects the policy and audits.
* ``cli``: ``spaguard keys create|list|revoke|allow``.
"""
