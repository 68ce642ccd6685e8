"""Guard policies from YAML: per taxonomy node a threshold and an action, validated at start, reloaded live.

One YAML file per policy (``deploy/policies/*.yaml``; ``--policies`` names a file or a folder)::

    name: strict                     # what keys are bound to and x-spaguard-policy selects
    version: "2026-12-01"            # optional label; the audit log records it with the file's hash
    default: {action: block}         # the classifier's own flag (its calibration) -> this action;
                                     # {threshold: 0.4} instead compares the overall unsafe probability
    nodes:                           # SPA-VL taxonomy node keys: domain, domain/category, .../subcategory
      "Malicious Use/Illegal activities": {threshold: 0.2, action: block}
      "Misinformation Harms": {threshold: 0.5, action: annotate}
    roles: [system, user, assistant] # message roles the prompt check scores (default: --guard-roles)
    refusal: "Blocked by policy $policy ($categories)."   # string.Template: $policy, $task, $categories
    timeout_s: 5                     # guard timeout
    fail_policy: closed              # open | closed
    block_style: refusal             # refusal | error
    record_content: false            # true: the audit log keeps the raw text, not only its hash

Decision (``TenantPolicy.decide``): every rule whose test fires contributes its action, and the most
severe wins (block > annotate > shadow); none fires -> allow. A node rule fires when the verdict's score
for that node is at least its threshold; ``default`` fires on the classifier's own flag (or on
``unsafe_prob >= default.threshold``). So ``default: {action: shadow}`` with node rules that block
enforces only those nodes and merely records the rest.

``PolicySet`` holds the loaded policies; ``reload()`` re-reads the files when one changed and swaps the
whole set at once (a request keeps the policy object it started with, so no request is dropped or sees a
half-loaded set); a broken file at reload keeps the old set and logs the error. The policy ``default``
always exists: the server's flags (``--guard-mode``, ...) with no node rule, unless a file defines it.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.backends import Verdict, resolve_artifact
from service.config import BlockStyle, FailPolicy, GuardPolicy, GuardRole
from service.tenancy.keys import check_name

log = logging.getLogger("spaguard.policies")

PolicyAction = Literal["block", "annotate", "shadow"]
SEVERITY: dict[str, int] = {"allow": 0, "shadow": 1, "annotate": 2, "block": 3}
DEFAULT_POLICY = "default"
TEMPLATE_FIELDS = frozenset({"policy", "task", "categories"})


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(ge=0.0, le=1.0)
    action: PolicyAction


class _Default(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    action: PolicyAction = "block"


class _PolicyFile(BaseModel):
    """The YAML schema (unknown keys are errors: a typo must not silently become a default)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    version: str | None = None
    default: _Default = _Default()
    nodes: dict[str, _Rule] = {}
    roles: tuple[GuardRole, ...] | None = Field(None, min_length=1)  # None: the server's --guard-roles
    refusal: str | None = None
    timeout_s: float | None = Field(None, gt=0)
    fail_policy: FailPolicy | None = None
    block_style: BlockStyle | None = None
    record_content: bool = False


@dataclass(frozen=True)
class NodeRule:
    threshold: float
    action: PolicyAction


@dataclass(frozen=True)
class Decision:
    """What a policy decided about one verdict: the action and the rules that fired (node -> score)."""

    action: str  # allow | shadow | annotate | block
    fired: dict[str, float] = field(default_factory=dict)  # node key (or "default") -> its score


@dataclass(frozen=True)
class TenantPolicy:
    """One loaded policy. ``None`` knobs take the server's flag (``apply``)."""

    name: str
    version: str  # label + content hash, e.g. "2026-12-01+3f2a9c1b0d4e"
    default_action: PolicyAction | None  # None: the server's --guard-mode (the built-in default policy)
    default_threshold: float | None
    nodes: Mapping[str, NodeRule]
    roles: tuple[GuardRole, ...] | None = None
    refusal: str | None = None
    timeout_s: float | None = None
    fail_policy: FailPolicy | None = None
    block_style: BlockStyle | None = None
    record_content: bool = False

    def apply(self, base: GuardPolicy) -> GuardPolicy:
        """``base`` (the server's flags) with this policy's knobs. The mode is the most severe action any
        rule can take, so a stream is held back whenever this policy may block it."""
        if self.default_action is None and not self.nodes:
            mode = base.mode
        else:
            actions = [r.action for r in self.nodes.values()] + [self.default_action or base.mode]
            mode = max(actions, key=lambda a: SEVERITY.get(a, 0))  # type: ignore[assignment]
        return dataclasses.replace(
            base, mode=mode, roles=self.roles or base.roles,
            timeout_s=self.timeout_s or base.timeout_s, fail_policy=self.fail_policy or base.fail_policy,
            block_style=self.block_style or base.block_style,
        )

    def decide(self, verdict: Verdict, base_mode: str) -> Decision:
        """The action for ``verdict`` under this policy (module docstring); ``base_mode`` is the server's
        --guard-mode, the default rule's action when this policy names none."""
        fired: dict[str, float] = {}
        actions: list[str] = []
        default_fires = (verdict.flagged if self.default_threshold is None
                         else verdict.unsafe_prob >= self.default_threshold)
        if default_fires:
            fired["default"] = verdict.unsafe_prob
            actions.append(self.default_action or base_mode)
        for key, rule in self.nodes.items():
            score = verdict.scores.get(key)
            if score is not None and score >= rule.threshold:
                fired[key] = score
                actions.append(rule.action)
        if not actions:
            return Decision("allow")
        return Decision(max(actions, key=lambda a: SEVERITY.get(a, 0)), fired)

    def refusal_text(self, task: str, categories: Iterable[str]) -> str | None:
        if self.refusal is None:
            return None
        names = ", ".join(sorted(categories)) or "unsafe content"
        return string.Template(self.refusal).safe_substitute(policy=self.name, task=task, categories=names)


def builtin_default() -> TenantPolicy:
    """The policy ``default``: the server's flags, no node rule."""
    return TenantPolicy(DEFAULT_POLICY, "flags", None, None, {})


def node_keys_of(artifact: str | Path | None) -> tuple[str, ...]:
    """The taxonomy node keys the classifier artifact scores (its ``config.json``)."""
    config = json.loads((resolve_artifact(artifact) / "config.json").read_text())
    return tuple(config["node_keys"])


def parse_policy(text: str, source: str, node_keys: Iterable[str]) -> TenantPolicy:
    """One policy from YAML ``text``; ``ValueError`` naming ``source`` and the field on any mistake."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping (name, default, nodes, ...)")
    try:
        spec = _PolicyFile(**{str(k): v for k, v in data.items()})
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ValueError(f"{source}: {where}") from None
    try:
        check_name("policy", spec.name)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
    known = set(node_keys)
    for key in spec.nodes:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ValueError(f"{source}: nodes: {key!r} is not a node of the classifier's taxonomy{hint}")
    if spec.refusal is not None:
        try:
            used = {m.group("named") or m.group("braced")
                    for m in string.Template.pattern.finditer(spec.refusal) if m.group("invalid") is None}
        except ValueError as exc:
            raise ValueError(f"{source}: refusal: {exc}") from None
        unknown = used - TEMPLATE_FIELDS - {None}
        if unknown:
            raise ValueError(f"{source}: refusal: unknown field(s) {sorted(unknown)} "
                             f"(use {', '.join('$' + f for f in sorted(TEMPLATE_FIELDS))})")
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    version = f"{spec.version}+{digest}" if spec.version else digest
    rules = {k: NodeRule(r.threshold, r.action) for k, r in spec.nodes.items()}
    return TenantPolicy(spec.name, version, spec.default.action, spec.default.threshold, rules, tuple(spec.roles) if spec.roles else None,
                        spec.refusal, spec.timeout_s, spec.fail_policy, spec.block_style, spec.record_content)


def policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    if path.is_file():
        return [path]
    raise ValueError(f"--policies {path} does not exist")


def load_policies(path: Path | None, node_keys: Iterable[str]) -> dict[str, TenantPolicy]:
    """Every policy under ``path`` (a file or a folder of ``*.yaml``) plus the built-in ``default``."""
    keys = tuple(node_keys)
    policies = {DEFAULT_POLICY: builtin_default()}
    if path is None:
        return policies
    files = policy_files(path)
    if not files:
        raise ValueError(f"--policies {path}: no *.yaml file in it")
    seen: dict[str, Path] = {}
    for file in files:
        try:
            text = file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{file}: cannot read: {exc}") from None
        policy = parse_policy(text, str(file), keys)
        if policy.name in seen:
            raise ValueError(f"{file}: policy {policy.name!r} is also defined in {seen[policy.name]}")
        seen[policy.name] = file
        policies[policy.name] = policy
    return policies


class PolicySet:
    """The live policies: ``get(name)``, and ``reload()`` when a file changed (or on SIGHUP)."""

    def __init__(self, path: Path | None, node_keys: Iterable[str]) -> None:
        self.path = path
        self.node_keys = tuple(node_keys)
        self._policies = load_policies(path, self.node_keys)  # raises: a bad file stops the start
        self._stamp = self._fingerprint()
        self.reloads = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._policies))

    def get(self, name: str) -> TenantPolicy | None:
        return self._policies.get(name)

    def all(self) -> dict[str, TenantPolicy]:
        return dict(self._policies)

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        if self.path is None:
            return ()
        try:
            return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in policy_files(self.path))
        except (OSError, ValueError):
            return (("missing", 0, 0),)

    def changed(self) -> bool:
        return self._fingerprint() != self._stamp

    def reload(self, force: bool = False) -> bool:
        """Re-read the files if they changed (or ``force``); True when a new set is live. A broken file
        keeps the old set (logged), so a typo saved mid-edit never takes the guard down."""
        if self.path is None or not (force or self.changed()):
            return False
        stamp = self._fingerprint()
        try:
            fresh = load_policies(self.path, self.node_keys)
        except ValueError as exc:
            log.error("policy reload failed, keeping the previous policies: %s", exc)
            self._stamp = stamp  # do not retry the same broken files every poll
            return False
        self._policies, self._stamp = fresh, stamp  # one assignment: readers see the old or the new set
        self.reloads += 1
        log.info("policies reloaded: %s", ", ".join(f"{p.name}@{p.version}" for p in fresh.values()))
        return True
