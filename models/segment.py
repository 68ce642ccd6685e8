"""What the classifier scores of one text, so that nothing is cut off and nothing is diluted.

Contract
--------
``segments(text, window_chars)`` returns the pieces of ``text`` to score; the most unsafe piece decides:

* empty or whitespace-only text → ``[]``: there is nothing to score, and nothing is harmful;
* text of at most ``window_chars`` characters → ``[text]``, unchanged;
* longer text → overlapping windows of ``window_chars`` (overlap ``window_chars // 4``) that cover every
  character, **and** sentence chunks: consecutive sentences packed up to ``chunk_chars`` (default
  ``window_chars // 3``); a sentence longer than that is cut into windows of its own. Windows keep harm that is
  spread over several sentences; chunks keep one harmful sentence from being drowned by the benign text around
  it, however long that text is.

``window_chars`` is sized by the caller from the classifier's token budget (``window_chars_for``), so the
classifier's own truncation never drops text: the default artifact reads 128 tokens, about 380 characters of
English at the conservative 3 characters a token used here.

``Segmenter`` applies this to a whole prompt (with ``models.decode``'s hidden encodings and its images) and
to a response; ``combine`` merges the verdicts of one input's items. Pure Python, no I/O: the service (through
``models.backends``) and ``spaguard eval-guard`` use the same ``Segmenter``, so evaluation scores exactly what
the server scores.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

from models.contract import GuardInput, Verdict
from models.decode import decoded_variants

# A sentence ends at . ! ? (or a run of them, with closing quotes/brackets) followed by white space, or at a
# line break. Abbreviations split too: harmless, a split only adds a chunk.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+|\n+")
_WORD = re.compile(r"[A-Za-z]+")  # ASCII words, looked up in Segmenter.vocabulary (Segmenter.readable)
CHARS_PER_TOKEN = 3  # English WordPiece averages ~4; 3 leaves room for the special tokens and odd text


def window_chars_for(max_tokens: int, reserved_tokens: int = 0) -> int:
    """Characters that fit in ``max_tokens - reserved_tokens`` tokens with a margin (at least 64)."""
    return max(64, (max_tokens - reserved_tokens) * CHARS_PER_TOKEN)


def split_sentences(text: str) -> list[str]:
    """The non-empty sentences of ``text``, stripped, in order."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def windows(text: str, size: int, overlap: int) -> list[str]:
    """Windows of ``size`` chars stepping ``size - overlap``; the last one ends at the end of ``text``."""
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError("windows need size > 0 and 0 <= overlap < size")
    if len(text) <= size:
        return [text]
    step = size - overlap
    out = [text[pos:pos + size] for pos in range(0, len(text) - size, step)]
    return out + [text[len(text) - size:]]


def sentence_chunks(text: str, chunk_chars: int) -> list[str]:
    """Consecutive sentences packed greedily up to ``chunk_chars``; longer sentences become windows."""
    chunks: list[str] = []
    current = ""
    for sentence in split_sentences(text):
        if len(sentence) > chunk_chars:
            if current:
                chunks.append(current)
                current = ""
            chunks.extend(windows(sentence, chunk_chars, chunk_chars // 4))
        elif current and len(current) + 1 + len(sentence) > chunk_chars:
            chunks.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        chunks.append(current)
    return chunks


def segment_pieces(text: str, window_chars: int, chunk_chars: int | None = None) -> list[tuple[str, bool]]:
    """``(piece, is_chunk)`` for every piece of ``text`` to score (see the module docstring): windows (and a
    text that fits one) have ``is_chunk`` False, sentence chunks True. Duplicates dropped (a window wins),
    order kept."""
    if not text.strip():
        return []
    if len(text) <= window_chars:
        return [(text, False)]
    chunk = chunk_chars or max(32, window_chars // 3)
    out: dict[str, bool] = dict.fromkeys(windows(text, window_chars, window_chars // 4), False)
    for piece in sentence_chunks(text, chunk):
        out.setdefault(piece, True)
    return list(out.items())


def segments(text: str, window_chars: int, chunk_chars: int | None = None) -> list[str]:
    """The pieces of ``text`` to score, windows and chunks alike (``segment_pieces`` without the flags)."""
    return [piece for piece, _ in segment_pieces(text, window_chars, chunk_chars)]


# ---- the guard's items ---------------------------------------------------------------------------
# Responses are scored as the shipped response head was trained (training/guard/response_data.py imports
# these): the prompt's last RESPONSE_CONTEXT_CHARS characters (+ the OCR text of its images) as context,
# and windows of RESPONSE_SEGMENT_CHARS overlapping by SEGMENT_OVERLAP_CHARS.
RESPONSE_SEGMENT_CHARS = 600
RESPONSE_CONTEXT_CHARS = 400
SEGMENT_OVERLAP_CHARS = 150


def response_windows(text: str, size: int = RESPONSE_SEGMENT_CHARS, start: int = 0) -> list[str]:
    """Overlapping windows of ``size`` chars covering ``text[start:]``; the first starts up to
    ``SEGMENT_OVERLAP_CHARS`` before ``start`` and the last ends at the end of ``text``."""
    begin = max(0, start - SEGMENT_OVERLAP_CHARS)
    if len(text) - begin <= size:
        return [text[max(0, len(text) - size):]]
    step = size - SEGMENT_OVERLAP_CHARS
    out = [text[pos:pos + size] for pos in range(begin, len(text) - size, step)]
    return out + [text[len(text) - size:]]


def response_context(prompt_text: str, ocr_text: str = "") -> str:
    """What of the prompt goes along with a response: its tail, with the OCR text of its images."""
    return (f"{prompt_text}\n{ocr_text}" if ocr_text else prompt_text)[-RESPONSE_CONTEXT_CHARS:]


ImageReading = Literal["joined", "separate"]  # how a prompt's images reach the classifier: Segmenter.image_reading
IMAGE_READINGS: tuple[str, ...] = get_args(ImageReading)


@dataclass(frozen=True)
class Piece:
    """One item to score; ``chunk``: a sentence chunk, which flags only at ``Segmenter.chunk_threshold``;
    ``image_only``: the prompt's images with no typed text (``image_reading="separate"``), whose verdict
    counts only when their OCR text is ``Segmenter.readable``, or when the artifact reads pixels
    (``Segmenter.reads_pixels``)."""

    item: GuardInput
    chunk: bool = False
    image_only: bool = False


@dataclass(frozen=True)
class Segmenter:
    """Turns one prompt or response into the items the classifier scores; ``combine`` merges their verdicts.

    * ``prompt_pieces(prompt)``: ``segment_pieces`` of the text, plus those of every ``decoded_variants`` of
      each piece (a base64 blob, rot13, leetspeak, OCR-style fragments); ``merge`` turns their verdicts into
      one, holding sentence chunks to ``chunk_threshold``. Images, by ``image_reading``:
      ``"joined"`` (default): they ride on one item with the whole text when it fits one window (the carrier
      + OCR form the classifier was trained on), else with the text's last third of a window (the question
      about the picture is usually at the end), so the OCR text keeps token room.
      ``"separate"``: the text found in the images is evidence of its own: one item holds the images and no
      typed text (the classifier reads their OCR text alone), and the typed text is scored without it, so the
      carrier prompt neither hides nor condemns what the image says; an image in which OCR finds nothing
      ``readable`` adds nothing (unless ``reads_pixels``).
      Text with no letter of any script ("?", "😀", "123"; checked after decoding) and no images: no items
      (nothing to score is safe).
    * ``ocr_items(prompt_text, ocr_text)``: once the prompt's images are read, the decoded variants of the
      OCR text (text cut across image pieces comes back as fragments: "cre ate a vi rus"), after the carrier
      (``"joined"``) or alone (``"separate"``).
    * ``response_items(context, response, start)``: ``response_windows`` of ``response[start:]`` after
      ``context`` (see ``response_context``), less windows with no letter and no digit ("👍").
    ``window_chars`` comes from the artifact's token budget (``models.backends.segmenter_for``);
    ``vocabulary`` is the encoder's whole-word vocabulary, for re-joining fragments.
    """

    window_chars: int = 384
    vocabulary: frozenset[str] = frozenset()
    decode: bool = True
    # A sentence chunk is read out of context, where the classifier is far less sure: on benign long texts
    # (dolly, gpteacher role-play, openai_moderation's benign rows) the most unsafe chunk's median score was
    # 0.13-0.46, so at the prompt threshold (0.25) a third to two thirds of long benign prompts were flagged.
    # At 0.97 that share is 0-7.5 % while a chunk still catches half of the harmful requests hidden in long
    # benign text that the windows miss (docs/classifier.md, "Input handling").
    chunk_threshold: float = 0.97
    # "joined" stays the default: on benign photos with text the shipped default flags 10 of 54 questions
    # joined, 16 separate (docs/classifier.md, "The text in an image: joined or separate").
    image_reading: ImageReading = "joined"
    reads_pixels: bool = False  # the artifact has an image encoder: an image is evidence even with no text

    def __post_init__(self) -> None:
        if self.image_reading not in IMAGE_READINGS:
            raise ValueError(f"image_reading must be one of {IMAGE_READINGS}, got {self.image_reading!r}")

    def prompt_pieces(self, prompt: GuardInput) -> list[Piece]:
        """The prompt's items, each marked whether it is a sentence chunk (see ``merge``)."""
        found = segment_pieces(prompt.text, self.window_chars)
        if self.decode:
            for piece, _ in list(found):
                for variant in decoded_variants(piece, self.vocabulary):
                    found += segment_pieces(variant, self.window_chars)
        flags: dict[str, bool] = {}
        for text, is_chunk in found:
            if has_letters(text):  # after decoding: hex digits can spell words
                flags[text] = flags.get(text, True) and is_chunk
        if not prompt.images:
            return [Piece(GuardInput(t), c) for t, c in flags.items()]
        if self.image_reading == "separate":
            return [Piece(GuardInput("", prompt.images), image_only=True)] + [Piece(GuardInput(t), c)
                                                                              for t, c in flags.items()]
        if len(prompt.text) <= self.window_chars:
            carrier = prompt.text
        else:
            carrier = prompt.text[-(self.window_chars // 3):]
        return [Piece(GuardInput(carrier, prompt.images))] + [Piece(GuardInput(t), c) for t, c in flags.items()
                                                              if t != carrier]

    def prompt_items(self, prompt: GuardInput) -> list[GuardInput]:
        """The items of ``prompt_pieces``, without the chunk marks."""
        return [p.item for p in self.prompt_pieces(prompt)]

    def merge(self, pieces: Sequence[Piece], verdicts: Sequence[Verdict]) -> Verdict:
        """One verdict for an input from its pieces' verdicts (same order; a prefix of them is fine). A sentence
        chunk counts only when its score reaches ``chunk_threshold``; then it flags. An ``image_only`` piece
        counts only when its OCR text is ``readable`` (or ``reads_pixels``): otherwise the classifier read an
        empty string or stray marks ("米*"), whose score says nothing about the image. Otherwise ``combine``.
        The merged verdict keeps every piece's OCR text, counted or not (the second round decodes it)."""
        ocr = "\n".join(v.ocr_text for v in verdicts if v.ocr_text)
        pairs = [(p, v) for p, v in zip(pieces, verdicts)
                 if not p.image_only or self.reads_pixels or self.readable(v.ocr_text)]
        if not pairs:  # images with nothing readable and no typed text: nothing was read, so nothing is harmful
            return dataclasses.replace(nothing_to_score(verdicts[0].task), ocr_text=ocr)
        pieces, verdicts = [p for p, _ in pairs], [v for _, v in pairs]
        counted = [v for p, v in zip(pieces, verdicts) if not p.chunk or v.unsafe_prob >= self.chunk_threshold]
        fired = any(p.chunk and v.unsafe_prob >= self.chunk_threshold for p, v in zip(pieces, verdicts))
        if not counted:  # only chunks, none reaching the bar: the least unsafe reading
            return dataclasses.replace(min(verdicts, key=lambda v: v.unsafe_prob), flagged=False, categories={},
                                       ocr_text=ocr)
        merged = combine(counted)
        return dataclasses.replace(merged, flagged=merged.flagged or fired, ocr_text=ocr)

    def readable(self, text: str) -> bool:
        """Whether ``text`` holds a word the encoder reads whole (any ``vocabulary`` word; with no vocabulary,
        any non-blank text). The shipped encoder is English WordPiece: it reads "米*" as unknown marks and
        scores them like an empty string (0.79 against a 0.25 threshold), so OCR noise must not count."""
        if not self.vocabulary:
            return bool(text.strip())
        return any(w.lower() in self.vocabulary for w in _WORD.findall(text))

    def ocr_items(self, prompt_text: str, ocr_text: str) -> list[GuardInput]:
        """Second-round items for the text OCR found in a prompt's images: each decoded variant of it
        (split fragments re-joined, base64, rot13, ...), in the carrier + OCR form the classifier reads after
        the prompt's last third of a window (``"joined"``), or alone (``"separate"``). Empty when the OCR text
        hides nothing."""
        if not (self.decode and ocr_text.strip()):
            return []
        carrier = prompt_text[-(self.window_chars // 3):] if self.image_reading == "joined" else ""
        room = max(32, self.window_chars - len(carrier) - 1)
        variants = [piece for v in decoded_variants(ocr_text, self.vocabulary) for piece in segments(v, room)]
        return [GuardInput(f"{carrier}\n{v}" if carrier else v) for v in dict.fromkeys(variants)]

    def response_items(self, context: str, response: str, start: int = 0) -> list[GuardInput]:
        if not response.strip():
            return []
        # A window with no letter and no digit ("👍", "...") says nothing; a bare number can be the harmful
        # part of an answer (a dose, a quantity), so digits are scored.
        return [GuardInput(text=context, response=w) for w in response_windows(response, start=start)
                if any(ch.isalnum() for ch in w)]


def has_letters(text: str) -> bool:
    """Whether ``text`` has a letter of any script. A prompt with none ("?", "...", "😀", "123") asks for
    nothing, yet the shipped classifier scores such strings like an empty one, 0.50-0.82 against a 0.25
    threshold; so it is not scored (docs/classifier.md, "Input handling")."""
    return any(ch.isalpha() for ch in text)


def nothing_to_score(task: str) -> Verdict:
    """The verdict of an empty input: safe, with no scores."""
    return Verdict(task=task, unsafe_prob=0.0, flagged=False)


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """Merge the verdicts of one input's items: the highest probability decides; flagged if any item is;
    categories and scores take the maximum per node; the OCR text is every item's, joined."""
    if not verdicts:
        raise ValueError("combine needs at least one verdict")
    top = max(verdicts, key=lambda v: v.unsafe_prob)
    if len(verdicts) == 1:
        return top
    categories: dict[str, float] = {}
    scores: dict[str, float] = {}
    for v in verdicts:
        for merged, part in ((categories, v.categories), (scores, v.scores)):
            for key, p in part.items():
                merged[key] = max(p, merged.get(key, 0.0))
    ocr = "\n".join(v.ocr_text for v in verdicts if v.ocr_text)
    return Verdict(task=top.task, unsafe_prob=top.unsafe_prob, flagged=any(v.flagged for v in verdicts),
                   categories=categories, scores=scores, ocr_text=ocr)
