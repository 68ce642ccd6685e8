"""Escalation to a judge model: the student's uncertain verdicts go to a guard LLM the user serves.

Contract
--------
* ``JudgeClient(config)`` talks to any OpenAI-compatible server (``POST {url}/chat/completions``), e.g. Llama
  Guard 3 or Qwen3Guard served by vLLM: the conversation goes as chat messages (the guard model's own chat
  template wraps them in its instructions), ``temperature=0``, a few output tokens.
* ``JudgeClient.judge(task, prompt, response)`` returns a ``JudgeVerdict`` or raises ``JudgeError`` (HTTP
  error, timeout, an answer it cannot parse, no free slot within the timeout). At most ``max_concurrency``
  calls run at once; waiting for a slot counts against the same ``timeout_s``.
* ``parse_judge_output(text)`` reads Llama Guard's ``safe`` / ``unsafe\\nS1,S10``, Qwen3Guard's
  ``Safety: Unsafe\\nCategories: Violent``, and a bare leading ``safe`` / ``unsafe`` (a first line naming both,
  "safe or unsafe", is a parse error). MLCommons hazard codes
  (S1-S14) map onto SPA-VL taxonomy nodes through the taxonomy's projection (``models.backends``).
* ``in_band(p)``: whether a calibrated student probability is uncertain enough to escalate
  (``band_low <= p <= band_high``).

The guard (``service.guard``) decides what to do with it: the judge's answer overrides the student; on any
``JudgeError`` the student's verdict stands and the failure is counted. Nothing here sees more of a request
than the text the student scored for that check.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import httpx

from models.backends import nodes_for_target

JUDGE_MAX_TOKENS = 24  # "unsafe\nS1,S9,S10" or "Safety: Unsafe\nCategories: ..." fit with room to spare
_QWEN_SAFETY = re.compile(r"safety\s*:\s*(safe|unsafe|controversial)", re.IGNORECASE)
_QWEN_CATEGORIES = re.compile(r"categories\s*:\s*(.+)", re.IGNORECASE)
_HAZARD_CODE = re.compile(r"\bS(1[0-4]|[1-9])\b")


class JudgeError(Exception):
    """The judge gave no usable answer; ``kind`` is the metric label: timeout (a slot wait too), http, parse."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class JudgeConfig:
    """Where the judge is and how much of it we may use; each knob is documented on ``ServeSettings``."""

    url: str
    model: str
    timeout_s: float
    max_concurrency: int
    band_low: float
    band_high: float
    api_key: str | None = None
    # Qwen3Guard answers "Controversial" for borderline cases: unsafe unless the user says otherwise.
    controversial_is_unsafe: bool = True


@dataclass(frozen=True)
class JudgeVerdict:
    """What the judge said: ``unsafe``, its raw category labels, and the taxonomy nodes they map to."""

    unsafe: bool
    labels: tuple[str, ...] = ()
    nodes: tuple[str, ...] = field(default=())


def parse_judge_output(text: str, controversial_is_unsafe: bool = True) -> JudgeVerdict:
    """A ``JudgeVerdict`` from a guard model's answer; ``JudgeError("parse")`` when it says neither."""
    stripped = text.strip()
    qwen = _QWEN_SAFETY.search(stripped)
    if qwen:
        word = qwen.group(1).lower()
        unsafe = word == "unsafe" or (word == "controversial" and controversial_is_unsafe)
        cats = _QWEN_CATEGORIES.search(stripped)
        labels = tuple(c.strip() for c in cats.group(1).split(",") if c.strip() and c.strip().lower() != "none") \
            if cats else ()
        return JudgeVerdict(unsafe, labels if unsafe else ())
    first = stripped.split(None, 1)[0].lower().strip(".:,") if stripped else ""
    if first not in ("safe", "unsafe"):
        raise JudgeError("parse", f"the judge's answer is neither safe nor unsafe: {stripped[:60]!r}")
    # A first line that names both verdicts ("safe or unsafe.") decides nothing: a model that is not a guard
    # model, or a broken chat template, answers like that (seen with a small instruct model behind vLLM).
    first_line = {w.strip(".:,;!?") for w in stripped.splitlines()[0].lower().split()}
    if {"safe", "unsafe"} <= first_line:
        raise JudgeError("parse", f"the judge's answer names both verdicts: {stripped[:60]!r}")
    if first == "safe":
        return JudgeVerdict(False)
    codes = tuple(f"S{c}" for c in _HAZARD_CODE.findall(stripped))
    nodes = tuple(dict.fromkeys(n for code in codes for n in nodes_for_target(code, "mlcommons")))
    return JudgeVerdict(True, codes, nodes)


class JudgeClient:
    """An OpenAI-compatible guard model behind a concurrency budget (see the module docstring)."""

    def __init__(self, config: JudgeConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not 0.0 <= config.band_low <= config.band_high <= 1.0:
            raise ValueError("the judge band needs 0 <= band_low <= band_high <= 1")
        if config.max_concurrency < 1 or config.timeout_s <= 0:
            raise ValueError("the judge needs max_concurrency >= 1 and timeout_s > 0")
        self.config = config
        headers = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._client = httpx.AsyncClient(base_url=config.url.rstrip("/"), headers=headers,
                                         timeout=config.timeout_s, transport=transport)
        self._slots = asyncio.Semaphore(config.max_concurrency)

    def in_band(self, unsafe_prob: float) -> bool:
        return self.config.band_low <= unsafe_prob <= self.config.band_high

    async def judge(self, task: str, prompt: str, response: str | None = None) -> JudgeVerdict:
        messages = [{"role": "user", "content": prompt or " "}]
        if task == "response":
            messages.append({"role": "assistant", "content": response or " "})
        body = {"model": self.config.model, "messages": messages, "temperature": 0,
                "max_tokens": JUDGE_MAX_TOKENS}
        try:
            async with asyncio.timeout(self.config.timeout_s):
                async with self._slots:
                    r = await self._client.post("/chat/completions", json=body)
        except TimeoutError as exc:
            raise JudgeError("timeout", f"the judge did not answer within {self.config.timeout_s} s") from exc
        except httpx.HTTPError as exc:
            raise JudgeError("http", f"the judge is unreachable: {type(exc).__name__}") from exc
        if r.status_code != 200:
            raise JudgeError("http", f"the judge answered HTTP {r.status_code}")
        try:
            text = r.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise JudgeError("parse", "the judge's reply is not a chat completion") from exc
        return parse_judge_output(text, self.config.controversial_is_unsafe)

    async def aclose(self) -> None:
        await self._client.aclose()
