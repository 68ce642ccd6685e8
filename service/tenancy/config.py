"""``TenancyConfig``: what ``ServeSettings.tenancy_config()`` hands ``service.tenancy.middleware.Tenancy``.

Imports nothing of ours, so ``service.settings`` can build it without an import cycle; each knob is
documented once, on the ``ServeSettings`` field it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

AuthMode = Literal["off", "required"]
OPERATOR_KEYS_ENV = "SPAGUARD_OPERATOR_KEYS"  # operator keys, comma- or space-separated


@dataclass(frozen=True)
class TenancyConfig:
    auth: AuthMode
    db_url: str | None  # None: no database (no keys, no audit)
    policies: Path | None
    default_policy: str
    audit: bool
    max_inflight: int
    tenant_share: float
    operator_keys: tuple[str, ...]
    protect_operator: bool
    policy_reload_s: float
