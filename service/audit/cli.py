"""``spaguard audit``: read the audit log.

    spaguard audit export --since 24h [--until T] [--format jsonl|csv] [--tenant T] [--out FILE] [--db URL]
    spaguard audit report --since 7d [--policies deploy/policies] [--png shadow.png] [--json] [--db URL]

Times: ``30m``/``2h``/``7d`` ago, unix seconds, or ISO 8601 (UTC when no zone is given). ``report`` decides
every recorded check again under each policy of ``--policies`` (plus the built-in ``default``; validated
against ``--guard-artifact``'s taxonomy) and prints what each would have blocked per category
(``service.audit.report``). Exit status 2 on bad arguments or an unreachable database.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.audit.log import AuditLog, export, parse_time
from service.audit.report import format_report, save_chart, shadow_report
from service.tenancy.db import open_database
from service.tenancy.policies import load_policies, node_keys_of


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spaguard audit", description="Read the SPA-Guard audit log.")
    sub = parser.add_subparsers(dest="action", required=True)
    exp = sub.add_parser("export", help="the records of a window as JSON lines or CSV")
    exp.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    exp.add_argument("--tenant")
    exp.add_argument("--out", type=Path, help="write here instead of stdout")
    rep = sub.add_parser("report", help="the shadow report: what each policy would have blocked, per category")
    rep.add_argument("--policies", type=Path, help="policy YAML file or folder (default: only the built-in one)")
    rep.add_argument("--guard-artifact", type=Path, help="classifier artifact whose taxonomy the policies use")
    rep.add_argument("--base-mode", choices=("block", "annotate", "shadow"), default="block",
                     help="the server's --guard-mode, which the built-in default policy follows")
    rep.add_argument("--png", type=Path, help="also save the report as a PNG chart")
    rep.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    for p in (exp, rep):
        p.add_argument("--since", required=True, help="start of the window: 30m, 2h, 7d, unix seconds, ISO 8601")
        p.add_argument("--until", help="end of the window (default: now)")
        p.add_argument("--db", help="sqlite:///PATH or postgresql://... (default: $SPAGUARD_DATA/spaguard.db)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        since = parse_time(args.since)
        until = parse_time(args.until) if args.until else None
        policies = None
        if args.action == "report":
            policies = load_policies(args.policies, node_keys_of(args.guard_artifact))
        db = open_database(args.db)
    except (ValueError, FileNotFoundError) as exc:
        print(f"spaguard audit: {exc}", file=sys.stderr)
        return 2
    try:
        log = AuditLog(db)
        if args.action == "export":
            text = export(log.query(since, until, tenant=args.tenant), args.format)
            if args.out:
                args.out.write_text(text)
            else:
                sys.stdout.write(text)
            return 0
        assert policies is not None
        report = shadow_report(log.query(since, until), policies, args.base_mode)
        print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_report(report), end="")
        if args.png:
            try:
                print(f"chart: {save_chart(report, args.png)}", file=sys.stderr)
            except RuntimeError as exc:
                print(f"spaguard audit: {exc}", file=sys.stderr)
                return 2
        return 0
    finally:
        db.close()
