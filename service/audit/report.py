"""The shadow report: what each policy would have blocked, per category, over a window of audit records.

Every recorded check that kept its scores is decided again under each policy (``TenantPolicy.decide``,
exactly as the guard decides live), so a policy run in shadow mode, or one never deployed, can be judged
on real traffic before it blocks anything. A request counts once per category even if several of its
checks (a stream's windows) fired it. Categories are the taxonomy's second level (``domain/category``);
a block by the ``default`` rule alone (the overall score, no node fired) counts under ``(overall)``.

    report = shadow_report(records, policies, base_mode="block")
    print(format_report(report)); save_chart(report, "shadow.png")   # matplotlib, Agg backend
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from models.backends import Verdict
from service.tenancy.policies import TenantPolicy

OVERALL = "(overall)"


def category_of(node: str) -> str:
    """``domain/category`` of a node key (a domain stays itself)."""
    return "/".join(node.split("/")[:2])


def _verdict(check: Mapping[str, Any]) -> Verdict | None:
    if check.get("unsafe_prob") is None or not check.get("scores"):
        return None
    return Verdict(task=check["task"], unsafe_prob=float(check["unsafe_prob"]), flagged=bool(check["flagged"]),
                   categories=dict(check.get("categories") or {}), scores=dict(check["scores"]))


def _blocked_categories(policy: TenantPolicy, verdict: Verdict, base_mode: str) -> set[str] | None:
    decision = policy.decide(verdict, base_mode)
    if decision.action != "block":
        return None
    nodes = [k for k in decision.fired if k != "default"]
    if "default" in decision.fired:
        nodes += list(verdict.categories)
    return {category_of(n) for n in nodes} or {OVERALL}


def shadow_report(records: Sequence[Mapping[str, Any]], policies: Mapping[str, TenantPolicy],
                  base_mode: str = "block") -> dict[str, Any]:
    """``{"requests", "checks", "actual": {action: n}, "since", "until", "policies": {name: {"version",
    "would_block": n requests, "by_category": {category: n requests}}}}``."""
    actual = Counter(str(r["action"]) for r in records)
    out: dict[str, Any] = {"requests": len(records), "checks": 0, "actual": dict(sorted(actual.items())),
                           "since": min((r["ts"] for r in records), default=None),
                           "until": max((r["ts"] for r in records), default=None), "policies": {}}
    verdicts = [[v for c in r["checks"] if (v := _verdict(c)) is not None] for r in records]
    out["checks"] = sum(map(len, verdicts))
    for name, policy in sorted(policies.items()):
        blocked, by_category = 0, Counter[str]()
        for checks in verdicts:
            cats: set[str] = set()
            hit = False
            for verdict in checks:
                found = _blocked_categories(policy, verdict, base_mode)
                if found is not None:
                    hit = True
                    cats |= found
            blocked += hit
            by_category.update(cats)
        out["policies"][name] = {"version": policy.version, "would_block": blocked,
                                 "by_category": dict(sorted(by_category.items()))}
    return out


def format_report(report: Mapping[str, Any]) -> str:
    """The report as a plain-text table (one row per category, one column per policy)."""
    names = list(report["policies"])
    cats = sorted({c for p in report["policies"].values() for c in p["by_category"]})
    lines = [f"shadow report: {report['requests']} requests, {report['checks']} scored checks",
             "actual actions: " + (", ".join(f"{a}={n}" for a, n in report["actual"].items()) or "none")]
    width = max([len(c) for c in cats] + [len("would block (requests)")]) + 2
    lines.append(f"{'category':<{width}}" + "".join(f"{n:>14}" for n in names))
    lines.append(f"{'would block (requests)':<{width}}"
                 + "".join(f"{report['policies'][n]['would_block']:>14}" for n in names))
    for c in cats:
        lines.append(f"{c:<{width}}" + "".join(f"{report['policies'][n]['by_category'].get(c, 0):>14}" for n in names))
    return "\n".join(lines) + "\n"


def chart_png(report: Mapping[str, Any]) -> bytes:
    """A grouped horizontal bar chart (categories × policies) as PNG bytes; needs matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("the PNG chart needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")  # headless: no display on a server
    import matplotlib.pyplot as plt

    names = list(report["policies"])
    cats = sorted({c for p in report["policies"].values() for c in p["by_category"]}) or ["(none)"]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(cats) * max(1, len(names)) + 1.5))
    height = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        counts = [report["policies"][name]["by_category"].get(c, 0) for c in cats]
        ax.barh([y + i * height for y in range(len(cats))], counts, height=height,
                label=f"{name} ({report['policies'][name]['would_block']} requests)")
    ax.set_yticks([y + height * (len(names) - 1) / 2 for y in range(len(cats))], [c.split("/")[-1] for c in cats])
    ax.xaxis.get_major_locator().set_params(integer=True)  # counts of requests
    ax.set_xlabel("requests it would block")
    ax.set_title(f"Shadow report: {report['requests']} requests")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def save_chart(report: Mapping[str, Any], path: str | Path) -> Path:
    """``chart_png(report)`` written to ``path`` (folders created)."""
    out = Path(path)
    data = chart_png(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    return out
