"""Tenancy units: policy parsing and decisions, reload, rate limits, the concurrency share, keys and their CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from models.backends import Verdict
from service.config import GuardPolicy
from service.tenancy import cli as keys_cli
from service.tenancy.db import open_database
from service.tenancy.keys import KeyStore
from service.tenancy.limits import ConcurrencyShare, RateLimiter
from service.tenancy.policies import PolicySet, builtin_default, load_policies, node_keys_of, parse_policy

KEYS = node_keys_of(None)
DANGER = "Information & Safety Harms/Dangerous Information"
FRAUD = "Malicious Use/Fraud or deceptive action"
BASE = GuardPolicy(mode="block", block_style="refusal", fail_policy="closed", timeout_s=10.0,
                   stream_holdback_chars=64, stream_first_release_chars=16, roles=("system", "user", "assistant"))


def verdict(flagged: bool = False, prob: float = 0.1, **scores: float) -> Verdict:
    named = {DANGER: scores.get("danger", 0.0), FRAUD: scores.get("fraud", 0.0)}
    return Verdict(task="prompt", unsafe_prob=prob, flagged=flagged, categories={}, scores=named)


def policy(text: str):
    return parse_policy(text, "p.yaml", KEYS)


@pytest.mark.parametrize("text, expected", [
    ("name: x\nnodes: {\"Dangerous Information\": {threshold: 0.2, action: block}}",
     "'Dangerous Information' is not a node of the classifier's taxonomy; did you mean"),
    ("name: x\ndefault: {action: refuse}", "default.action"),
    ("name: x\nthreshold: 0.3", "threshold: Extra inputs are not permitted"),
    (f"name: x\nnodes: {{\"{FRAUD}\": {{threshold: 1.5, action: block}}}}", "less than or equal to 1"),
    ("name: x\nrefusal: 'no $reason'", "unknown field(s) ['reason']"),
    ("name: 'bad name!'", "policy 'bad name!'"),
    ("- a list", "expected a mapping"),
    ("name: [unclosed", "not valid YAML"),
])
def test_bad_policies_are_refused_with_the_field(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match="p.yaml") as err:
        policy(text)
    assert expected in str(err.value)


def test_decisions_per_node_and_the_most_severe_action_wins() -> None:
    p = policy(f"""name: x
default: {{action: shadow}}
nodes:
  "{DANGER}": {{threshold: 0.5, action: block}}
  "{FRAUD}": {{threshold: 0.3, action: annotate}}
""")
    assert p.decide(verdict(), "block").action == "allow"
    assert p.decide(verdict(flagged=True, prob=0.9), "block").action == "shadow"  # default rule only
    assert p.decide(verdict(fraud=0.3), "block").action == "annotate"  # at the threshold fires
    assert p.decide(verdict(fraud=0.29), "block").action == "allow"
    got = p.decide(verdict(flagged=True, prob=0.9, fraud=0.4, danger=0.6), "block")
    assert got.action == "block" and got.fired == {"default": 0.9, FRAUD: 0.4, DANGER: 0.6}
    # a default threshold compares the overall probability, not the classifier's flag
    q = policy("name: y\ndefault: {threshold: 0.5, action: block}")
    assert q.decide(verdict(flagged=True, prob=0.4), "block").action == "allow"
    assert q.decide(verdict(prob=0.5), "block").action == "block"
    # the built-in default follows the server's mode
    assert builtin_default().decide(verdict(flagged=True), "annotate").action == "annotate"
    assert builtin_default().apply(BASE) == BASE
    assert policy("name: z\ndefault: {action: block}").apply(BASE).roles == BASE.roles  # no roles: the server's
    with pytest.raises(ValueError, match="roles"):
        policy("name: z\nroles: []")


def test_apply_takes_the_policy_knobs_and_the_most_severe_mode() -> None:
    p = policy(f"""name: x
default: {{action: shadow}}
nodes: {{"{FRAUD}": {{threshold: 0.3, action: annotate}}}}
roles: [user]
timeout_s: 2
fail_policy: open
block_style: error
refusal: "No ($policy, $task): $categories"
""")
    applied = p.apply(BASE)
    assert (applied.mode, applied.roles, applied.timeout_s, applied.fail_policy, applied.block_style) == (
        "annotate", ("user",), 2.0, "open", "error")
    assert p.refusal_text("prompt", {FRAUD: 0.4}) == f"No (x, prompt): {FRAUD}"
    # the version is the file's hash (plus the label when given): any edit makes a new version
    assert policy("name: x").version == hashlib.sha256(b"name: x").hexdigest()[:12]
    assert policy("name: x\nversion: '3'").version.startswith("3+")


def test_reload_swaps_on_change_and_keeps_the_old_set_on_a_broken_file(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("name: a\ndefault: {action: block}\n")
    live = PolicySet(tmp_path, KEYS)
    assert live.names == ("a", "default") and not live.reload()
    old = live.get("a")
    f.write_text("name: a\ndefault: {action: shadow}\n# v2\n")
    assert live.reload() and live.get("a").default_action == "shadow" and live.get("a").version != old.version
    f.write_text("name: a\ndefault: {action: nonsense}\n")
    assert not live.reload() and live.get("a").default_action == "shadow"  # the typo did not take over
    f.write_text("name: a\n")
    (tmp_path / "b.yaml").write_text("name: a\n")
    with pytest.raises(ValueError, match="also defined"):
        load_policies(tmp_path, KEYS)
    with pytest.raises(ValueError, match="does not exist"):
        load_policies(tmp_path / "missing", KEYS)


def test_rate_limiter_requests_tokens_and_retry_after() -> None:
    now = [1000.0]
    rl = RateLimiter(clock=lambda: now[0])
    assert rl.check("k", 2, None).allowed
    now[0] += 10
    d = rl.check("k", 2, None)
    assert d.allowed and d.remaining_requests == 0
    now[0] += 5
    refused = rl.check("k", 2, None)
    assert not refused.allowed and refused.reason == "requests"
    assert refused.retry_after_s == pytest.approx(45.0)  # the first request leaves the window at t=1060
    assert refused.headers()["retry-after"] == "45" and refused.headers()["x-ratelimit-limit-requests"] == "2"
    now[0] += 45.01
    assert rl.check("k", 2, None).allowed
    # tokens: charged after the fact, refused once the window holds the limit
    assert rl.check("t", None, 100).allowed
    rl.charge("t", 60)
    assert rl.check("t", None, 100).allowed
    rl.charge("t", 50)
    over = rl.check("t", None, 100)
    assert not over.allowed and over.reason == "tokens" and over.remaining_tokens == 0
    now[0] += 60.01
    assert rl.check("t", None, 100).allowed
    assert rl.check("other", None, None).headers() == {}


def test_concurrency_share() -> None:
    share = ConcurrencyShare(capacity=10, share=0.3)
    assert share.per_tenant == 3
    assert [share.acquire("a") for _ in range(4)] == [True, True, True, False]
    assert share.acquire("b")
    share.release("a")
    assert share.acquire("a") and share.inflight("a") == 3
    with pytest.raises(ValueError):
        ConcurrencyShare(0, 0.5)


def test_keys_store_only_hashes_and_revoke(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "k.db"))
    store = KeyStore(db)
    record, key = store.create("acme", "strict", rpm=5)
    assert key.startswith("sk-spa-" + record.key_id)
    dump = (tmp_path / "k.db").read_bytes() + (tmp_path / "k.db-wal").read_bytes()
    # The secret is everything after "sk-spa-<key_id>-" (it may itself hold "-": split("-")[-1] can be a one-
    # letter fragment that any SQLite page holds by chance, which made this assertion flaky).
    secret = key[len("sk-spa-" + record.key_id + "-"):]
    assert len(secret) == 32 and key.encode() not in dump and secret.encode() not in dump
    assert store.lookup(key) == record and store.lookup(key[:-1] + "A") is None and store.lookup("junk") is None
    assert store.allowed("acme", "strict") and not store.allowed("acme", "lenient")
    assert store.revoke(record.key_id) and not store.revoke(record.key_id)
    assert store.lookup(key).revoked
    with pytest.raises(ValueError, match="rpm"):
        store.create("acme", "strict", rpm=0)
    db.close()
    with pytest.raises(ValueError, match="unsupported scheme"):
        open_database("mysql://x/y")


def test_keys_cli_prints_the_key_last_and_lists_ids(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert keys_cli.main(["create", "--tenant", "acme", "--policy", "strict", "--tpm", "1000", "--db", url]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("sk-spa-")
    key_id = key.split("-")[2]
    assert keys_cli.main(["list", "--db", url]) == 0
    listing = capsys.readouterr().out
    assert key_id in listing and "acme" in listing and key not in listing
    assert keys_cli.main(["revoke", key_id, "--db", url]) == 0
    assert keys_cli.main(["revoke", key_id, "--db", url]) == 1
    assert keys_cli.main(["create", "--tenant", "a b", "--policy", "p", "--db", url]) == 2
    assert "tenant 'a b'" in capsys.readouterr().err
