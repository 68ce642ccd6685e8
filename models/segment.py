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

Pure Python, no I/O: the service (through ``models.backends``) and ``spaguard eval-guard`` call the same
functions, so evaluation scores exactly what the server scores.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? (or a run of them, with closing quotes/brackets) followed by white space, or at a
# line break. Abbreviations split too: harmless, a split only adds a chunk.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+|\n+")
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


def segments(text: str, window_chars: int, chunk_chars: int | None = None) -> list[str]:
    """The pieces of ``text`` to score (see the module docstring); duplicates dropped, order kept."""
    if not text.strip():
        return []
    if len(text) <= window_chars:
        return [text]
    chunk = chunk_chars or max(32, window_chars // 3)
    pieces = windows(text, window_chars, window_chars // 4) + sentence_chunks(text, chunk)
    return list(dict.fromkeys(pieces))
