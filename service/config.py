"""What ``ServeSettings`` hands the guard and the batcher, and the guard's policy vocabulary.

``ServeSettings.guard_policy()`` builds ``GuardPolicy`` and ``ServeSettings.batcher_config()``
builds ``BatcherConfig``; the engine's counterpart, ``EngineConfig``, lives with the engine
contract in ``service.engines.base``. The settings hold every default, so these classes have
none: a component built by hand (tests) names each knob, and no default can drift from the one
``spaguard serve`` uses.

The ``Literal`` types are defined here once and imported by ``settings`` (flag choices),
``guard`` (the policy) and ``protocol`` (the ``safety`` field). This module imports nothing of
ours, so all three can use it without an import cycle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

GuardMode = Literal["block", "annotate", "shadow", "off"]
"""block: refuse flagged text; annotate: report the verdict; shadow: logs and metrics only; off: nothing is
scored (the same server measured without its guard; /v1/moderations still scores)."""
BlockStyle = Literal["refusal", "error"]
"""How a block answers: 200 with a refusal, or 400 with code content_filter."""
FailPolicy = Literal["open", "closed"]
"""What a guard failure (error, full queue, timeout) does: let the request pass, or refuse it."""
GuardRole = Literal["system", "user", "assistant"]
"""Message roles whose text the prompt check scores (a developer message is a system message)."""
ALL_GUARD_ROLES: tuple[GuardRole, ...] = ("system", "user", "assistant")
PromptCheck = Literal["before", "during"]
"""When the prompt is scored: before generation starts (a refused prompt never reaches the engine), or during it
(generation starts at once, nothing it makes leaves the server before the prompt's verdict, and a refused
prompt's generation is aborted and discarded: ``service.serving.early_start``)."""
Action = Literal["allow", "block", "annotate", "shadow", "fail_open", "off"]
"""What the guard did about one check; a flagged check takes the ``GuardMode`` as its action; ``off``: not
scored (guard mode off)."""


@dataclass(frozen=True)
class GuardPolicy:
    """The guard's knobs; each is documented on the ``ServeSettings`` field it comes from."""

    mode: GuardMode
    block_style: BlockStyle
    fail_policy: FailPolicy
    timeout_s: float
    stream_holdback_chars: int
    stream_first_release_chars: int  # used capped at stream_holdback_chars
    roles: tuple[GuardRole, ...]  # message roles the prompt check scores

    def for_moderation(self) -> GuardPolicy:
        """This policy as ``/v1/moderations`` needs it: a moderation answer reports its verdict
        (annotate) and never comes without one (fail closed)."""
        return dataclasses.replace(self, mode="annotate", fail_policy="closed")


@dataclass(frozen=True)
class BatcherConfig:
    """The classifier batcher's limits (``service.batching.DynamicBatcher``'s arguments)."""

    max_batch_size: int
    max_wait_s: float
    max_queue: int
    queue_timeout_s: float
    max_batch_cost: int  # the image budget of one batch
