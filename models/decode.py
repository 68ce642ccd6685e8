"""Obvious encodings a user can hide a request in, decoded so the decoded text is scored too.

Contract
--------
``decoded_variants(text)`` returns the readable texts hidden in ``text`` (each different from ``text``, no
duplicates, at most ``MAX_VARIANTS``), found by:

* **base64** (standard and URL-safe alphabets) and **hex** runs of at least 16 characters that decode to
  printable UTF-8 text;
* **URL-encoding**: three or more ``%XX`` escapes;
* **rot13**, kept only when the rotated text reads more like English than the original (common-word share);
* **leetspeak**: words that mix letters with ``4 3 1 0 5 7 @ $`` are mapped back to letters, kept only when the
  result reads more like English;
* **split fragments** (``"cre ate a vi rus"``, what OCR gives for text cut across image pieces): the letters are
  joined and re-split into the fewest known words of ``vocabulary`` (e.g. the encoder tokenizer's whole-word
  entries), kept only when that needs at most three quarters as many words; skipped without a vocabulary.

Decoding runs once more on each result (base64 of rot13, ...). A variant is evidence, not a verdict: the caller
scores it like any other text and the most unsafe piece decides. Pure Python, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import urllib.parse
from collections.abc import Collection

MAX_VARIANTS = 8
_MIN_RUN = 16
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{%d,}={0,2}" % _MIN_RUN)
_HEX_RUN = re.compile(r"(?:(?:\\x|0x)?[0-9a-fA-F]{2}[\s:]?){%d,}" % (_MIN_RUN // 2))
_URL_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_WORD = re.compile(r"[A-Za-z0-9@$]+")
_LEET = str.maketrans({"4": "a", "3": "e", "1": "i", "0": "o", "5": "s", "7": "t", "@": "a", "$": "s"})
# The most frequent English words: enough to tell English from rot13 noise in a sentence or two.
COMMON_WORDS = frozenset("""a about all an and any are as at be been but by can could do does for from get give
have he her him his how i if in into is it its just know like make me more my no not now of on one or our out
people say she so some tell than that the their them then there these they this to up us use want was way we
were what when where which who why will with would you your step steps write help please need""".split())


def english_share(text: str) -> float:
    """Share of the words of ``text`` that are common English words (0 for no words)."""
    words = re.findall(r"[a-z']+", text.lower())
    return sum(w in COMMON_WORDS for w in words) / len(words) if words else 0.0


def _printable(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.strip() or sum(ch.isprintable() or ch in "\n\t" for ch in text) < 0.95 * len(text):
        return None
    # Random bytes can be printable by luck; decoded text worth scoring has words.
    return text if re.search(r"[A-Za-z]{2,}", text) and " " in text.strip() else None


def _base64_runs(text: str) -> list[str]:
    out = []
    for run in _B64_RUN.findall(text):
        if run.isalpha() or run.isdigit():
            continue  # a long word or number, not an encoding
        padded = run + "=" * (-len(run) % 4)
        for alt in (b"+/", b"-_"):
            try:
                decoded = _printable(base64.b64decode(padded, altchars=alt, validate=True))
            except (binascii.Error, ValueError):
                continue
            if decoded:
                out.append(decoded)
                break
    return out


def _hex_runs(text: str) -> list[str]:
    out = []
    for run in _HEX_RUN.findall(text):
        digits = re.sub(r"\\x|0x|[\s:]", "", run)
        if len(digits) % 2:
            continue
        decoded = _printable(bytes.fromhex(digits))
        # A run of digits alone is usually a number, yet text made of the letters a-i, p-y and spaces
        # hex-encodes to digits alone ("he hid a big gift" = 6865206869...): keep those only when they read
        # as English, so a long number never becomes a variant by luck.
        if decoded and (not digits.isdigit() or english_share(decoded) >= 0.3):
            out.append(decoded)
    return out


def _url_decoded(text: str) -> list[str]:
    if len(_URL_ESCAPE.findall(text)) < 3:
        return []
    return [urllib.parse.unquote_plus(text)]


def _rot13(text: str) -> list[str]:
    rotated = codecs.encode(text, "rot13")
    gain = english_share(rotated) - english_share(text)
    return [rotated] if english_share(rotated) >= 0.2 and gain >= 0.15 else []


def _unleet(text: str) -> list[str]:
    words = _WORD.findall(text)
    # Leet words are short; a long letter-digit run is an id or an encoding, not a word.
    mixed = [w for w in words if len(w) <= 15 and re.search(r"[A-Za-z]", w) and re.search(r"[4310571@$]", w)]
    if not mixed:
        return []

    def fix(m: re.Match[str]) -> str:
        w = m.group(0)
        # A lone digit reads as a letter only in a leet text ("h0w t0 m4k3 4 b0mb"); numbers stay numbers.
        return w.translate(_LEET) if len(w) <= 15 and (re.search(r"[A-Za-z]", w) or len(w) == 1) else w

    fixed = _WORD.sub(fix, text)
    return [fixed] if english_share(fixed) >= english_share(text) + 0.1 else []


def resegment(text: str, vocabulary: Collection[str], max_word: int = 20) -> str | None:
    """Join the words of ``text`` and re-split the letters into the fewest known words; None unless that takes
    at most three quarters as many words (so ordinary text, already split into words, comes back None).

    Only texts of 4 to 200 words are tried (the dynamic programme is O(letters x max_word)). Letters that no
    known word covers are kept one by one, at a cost, so nothing is lost.
    """
    words = re.findall(r"[A-Za-z]+", text.lower())
    if not 4 <= len(words) <= 200 or sum(len(w) <= 3 for w in words) < 0.4 * len(words):
        return None
    letters = "".join(words)
    # best[i] = (number of pieces, pieces) for letters[:i]; a known word costs 1, a stray letter 3.
    best: list[tuple[int, list[str]]] = [(0, [])] + [(10**9, [])] * len(letters)
    for end in range(1, len(letters) + 1):
        for start in range(max(0, end - max_word), end):
            piece = letters[start:end]
            cost = 1 if piece in vocabulary else (3 if len(piece) == 1 else None)
            if cost is not None and best[start][0] + cost < best[end][0]:
                best[end] = (best[start][0] + cost, best[start][1] + [piece])
    pieces = best[-1][1]
    return " ".join(pieces) if len(pieces) <= 0.75 * len(words) else None


def _one_level(text: str, vocabulary: Collection[str] | None) -> list[str]:
    found = _base64_runs(text) + _hex_runs(text) + _url_decoded(text) + _rot13(text) + _unleet(text)
    if vocabulary:
        fixed = resegment(text, vocabulary)
        if fixed:
            found.append(fixed)
    return found


def decoded_variants(text: str, vocabulary: Collection[str] | None = None) -> list[str]:
    """Readable texts hidden in ``text`` (see the module docstring), two decoding levels deep."""
    out: list[str] = []
    for first in _one_level(text, vocabulary):
        out.append(first)
        out.extend(_one_level(first, vocabulary))
    seen = {text}
    unique = [v for v in out if v.strip() and not (v in seen or seen.add(v))]
    return unique[:MAX_VARIANTS]
