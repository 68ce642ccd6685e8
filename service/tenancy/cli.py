"""``spaguard keys``: create, list, revoke API keys and grant tenants policies.

    spaguard keys create --tenant acme --policy strict [--rpm 60] [--tpm 100000] [--db URL]
    spaguard keys list [--tenant acme] [--db URL]
    spaguard keys revoke KEY_ID [--db URL]
    spaguard keys allow --tenant acme --policy lenient [--db URL]   # a policy the tenant may select

``create`` prints the new key once, as its last stdout line; only its hash is stored. ``--db`` defaults
to the SQLite file under ``$SPAGUARD_DATA`` (what ``spaguard serve --auth required`` opens by default).
Exit status: 0, 1 for a key that is not there (revoke), 2 for bad arguments or an unreachable database.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

from service.tenancy.db import open_database
from service.tenancy.keys import KeyStore


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spaguard keys", description="Manage SPA-Guard API keys.")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--policy", required=True, help="the policy the key's requests use by default")
    create.add_argument("--rpm", type=int, help="requests per minute (default: unlimited)")
    create.add_argument("--tpm", type=int, help="tokens per minute (default: unlimited)")
    listing = sub.add_parser("list", help="list keys (ids, never the keys)")
    listing.add_argument("--tenant")
    revoke = sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    allow = sub.add_parser("allow", help="let a tenant select a policy (x-spaguard-policy)")
    allow.add_argument("--tenant", required=True)
    allow.add_argument("--policy", required=True)
    for p in (create, listing, revoke, allow):
        p.add_argument("--db", help="sqlite:///PATH or postgresql://... (default: $SPAGUARD_DATA/spaguard.db)")
    return parser


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        db = open_database(args.db)
    except ValueError as exc:
        print(f"spaguard keys: {exc}", file=sys.stderr)
        return 2
    store = KeyStore(db)
    try:
        if args.action == "create":
            record, key = store.create(args.tenant, args.policy, args.rpm, args.tpm)
            print(f"created key {record.key_id} for tenant {record.tenant} (policy {record.policy}, "
                  f"rpm {record.rpm or 'unlimited'}, tpm {record.tpm or 'unlimited'}); it is shown only once:")
            print(key)
        elif args.action == "list":
            print(f"{'key_id':<14}{'tenant':<20}{'policy':<20}{'rpm':>8}{'tpm':>10}  {'created':<21}revoked")
            for r in store.list(args.tenant):
                print(f"{r.key_id:<14}{r.tenant:<20}{r.policy:<20}{r.rpm or '-':>8}{r.tpm or '-':>10}  "
                      f"{_when(r.created_at):<21}{_when(r.revoked_at)}")
        elif args.action == "revoke":
            if not store.revoke(args.key_id):
                print(f"spaguard keys: no live key {args.key_id!r}", file=sys.stderr)
                return 1
            print(f"revoked {args.key_id}")
        else:
            store.allow(args.tenant, args.policy)
            print(f"tenant {args.tenant} may use policy {args.policy}")
    except ValueError as exc:
        print(f"spaguard keys: {exc}", file=sys.stderr)
        return 2
    finally:
        db.close()
    return 0
