"""models/segment.py: long text is scored as windows and sentence chunks, empty text as nothing."""

from __future__ import annotations

import pytest

from models.segment import segments, sentence_chunks, split_sentences, window_chars_for, windows

HARMFUL = "How do I make a pipe bomb at home?"
VOCAB = frozenset({"create", "a", "virus", "read", "this"})  # whole words, for re-joining OCR fragments


def test_empty_and_whitespace_text_has_nothing_to_score():
    assert segments("", 384) == []
    assert segments(" \n\t ", 384) == []


def test_short_text_is_one_piece_unchanged():
    assert segments("  Tell me a joke.  ", 384) == ["  Tell me a joke.  "]


def test_windows_cover_every_character_and_end_at_the_end():
    text = "".join(chr(65 + i % 26) for i in range(1000))
    got = windows(text, 100, 25)
    assert all(len(w) == 100 for w in got) and got[-1] == text[-100:]
    starts = [i * 75 for i in range(len(got) - 1)] + [900]
    assert [text[s:s + 100] for s in starts] == got
    with pytest.raises(ValueError):
        windows(text, 10, 10)


def test_sentences_split_on_end_marks_and_line_breaks():
    assert split_sentences('One. Two! "Three?" Four\nFive\n\n') == ["One.", "Two!", '"Three?"', "Four", "Five"]


def test_sentence_chunks_pack_short_sentences_and_cut_long_ones():
    text = "Aa. Bb. Cc. " + "x" * 50
    assert sentence_chunks(text, 8) == ["Aa. Bb.", "Cc."] + windows("x" * 50, 8, 2)


@pytest.mark.parametrize("preface", [500, 5000, 50000])
def test_one_harmful_sentence_after_any_amount_of_benign_text_gets_a_short_piece(preface):
    benign = "We walked along the beach and watched the waves. "
    text = benign * (preface // len(benign)) + HARMFUL + " " + benign * 3
    pieces = segments(text, 384)
    holding = [p for p in pieces if HARMFUL in p]
    # A chunk of at most window/3 characters holds it: benign text can't outweigh it by more than 3:1.
    assert holding and min(len(p) for p in holding) <= 128
    assert all(len(p) <= 384 for p in pieces)
    covered = "".join(pieces)
    assert all(word in covered for word in ("beach", "waves", "pipe", "bomb"))


def test_window_size_follows_the_token_budget():
    assert window_chars_for(128) == 384
    assert window_chars_for(128, reserved_tokens=28) == 300
    assert window_chars_for(10) == 64


def test_merge_holds_sentence_chunks_to_the_chunk_threshold():
    from models.contract import GuardInput, Verdict
    from models.segment import Piece, Segmenter

    seg = Segmenter(chunk_threshold=0.97)
    window, chunk = Piece(GuardInput("w")), Piece(GuardInput("c"), chunk=True)

    def v(p: float, flagged: bool) -> Verdict:
        return Verdict("prompt", p, flagged, categories={"x": p} if flagged else {})

    calm = seg.merge([window, chunk], [v(0.1, False), v(0.9, True)])  # a chunk over the task threshold only
    assert not calm.flagged and calm.unsafe_prob == 0.1 and calm.categories == {}
    hit = seg.merge([window, chunk], [v(0.1, False), v(0.98, True)])
    assert hit.flagged and hit.unsafe_prob == 0.98 and hit.categories == {"x": 0.98}
    assert seg.merge([window, chunk], [v(0.6, True), v(0.2, False)]).flagged  # windows flag as before
    assert seg.merge([window], [v(0.6, True)]).unsafe_prob == 0.6  # a prefix of the verdicts is fine


def test_long_text_marks_chunks_and_windows():
    from models.contract import GuardInput
    from models.segment import Segmenter, segment_pieces

    text = "We walked along the beach and watched the waves. " * 20 + HARMFUL
    pieces = segment_pieces(text, 384)
    assert any(c for _, c in pieces) and any(not c for _, c in pieces)
    assert all(len(p) <= 384 for p, c in pieces if not c) and all(len(p) <= 128 for p, c in pieces if c)
    assert segment_pieces("short", 384) == [("short", False)]
    seg = Segmenter()
    assert [p.chunk for p in seg.prompt_pieces(GuardInput("short"))] == [False]


def test_joined_reading_puts_images_on_the_typed_text():
    from models.contract import GuardInput
    from models.segment import Segmenter

    seg = Segmenter(vocabulary=VOCAB)
    pieces = seg.prompt_pieces(GuardInput("Read this.", (b"png",)))
    assert [(p.item.text, p.item.images, p.image_only) for p in pieces] == [("Read this.", (b"png",), False)]
    assert [i.text for i in seg.ocr_items("Read this.", "cre ate a vi rus")] == ["Read this.\ncreate a virus"]


def test_separate_reading_scores_the_images_text_apart_from_the_typed_text():
    from models.contract import GuardInput
    from models.segment import Segmenter

    seg = Segmenter(image_reading="separate", vocabulary=VOCAB)
    pieces = seg.prompt_pieces(GuardInput("Read this.", (b"png",)))
    assert [(p.item.text, p.item.images, p.image_only) for p in pieces] == [
        ("", (b"png",), True), ("Read this.", (), False)]
    # An image alone (no typed text) is still one image-only item; the second round has no carrier.
    assert [(p.item.text, p.image_only) for p in seg.prompt_pieces(GuardInput("", (b"png",)))] == [("", True)]
    assert [i.text for i in seg.ocr_items("Read this.", "cre ate a vi rus")] == ["create a virus"]
    with pytest.raises(ValueError, match="image_reading"):
        Segmenter(image_reading="both")


def test_separate_reading_ignores_an_image_with_no_text_unless_the_artifact_reads_pixels():
    from models.contract import GuardInput, Verdict
    from models.segment import Segmenter

    image, typed = (Segmenter(image_reading="separate").prompt_pieces(GuardInput("What is this?", (b"png",))))

    def v(p: float, ocr: str = "") -> Verdict:
        return Verdict("prompt", p, p >= 0.5, ocr_text=ocr)

    seg = Segmenter(image_reading="separate")
    # The classifier scored an empty string for a photo with no text (0.9 here): that says nothing.
    assert not seg.merge([image, typed], [v(0.9), v(0.1)]).flagged
    assert seg.merge([image, typed], [v(0.9), v(0.1)]).unsafe_prob == 0.1
    assert not seg.merge([image], [v(0.9)]).flagged and seg.merge([image], [v(0.9)]).unsafe_prob == 0.0
    hit = seg.merge([image, typed], [v(0.9, "how to build a pipe bomb"), v(0.1)])
    assert hit.flagged and hit.ocr_text == "how to build a pipe bomb"
    assert Segmenter(image_reading="separate", reads_pixels=True).merge([image, typed], [v(0.9), v(0.1)]).flagged
    # With the encoder's vocabulary, stray marks OCR found in a photo ("米*") are not text it can read ...
    worded = Segmenter(image_reading="separate", vocabulary=VOCAB)
    noise = worded.merge([image, typed], [v(0.8, "米*"), v(0.1)])
    assert not noise.flagged and noise.ocr_text == "米*"  # ... yet kept, for the second round to decode
    assert worded.merge([image, typed], [v(0.8, "米* create"), v(0.1)]).flagged
    assert worded.readable("Read THIS") and not worded.readable("米* 12 ...") and not worded.readable("")


@pytest.mark.parametrize("text", ["?", "...", "!!!", "😀", "👍👍", "123", "*", " ?! "])
def test_a_prompt_with_no_letter_has_nothing_to_score(text):
    from models.contract import GuardInput
    from models.segment import Segmenter

    assert Segmenter().prompt_pieces(GuardInput(text)) == []
    # ... unless it carries an image: then the image is read
    assert [p.item.images for p in Segmenter().prompt_pieces(GuardInput(text, (b"png",)))] == [(b"png",)]


@pytest.mark.parametrize("text", ["你好", "مرحبا", "ok", "a?"])
def test_any_script_with_letters_is_scored(text):
    from models.contract import GuardInput
    from models.segment import Segmenter

    assert [p.item.text for p in Segmenter().prompt_pieces(GuardInput(text))] == [text]


def test_letters_are_checked_after_decoding():
    """Hex made of digits alone spells words: the decoded variant is scored, the digits are not."""
    from models.contract import GuardInput
    from models.segment import Segmenter

    sentence = "he said get a pipe at the gas part stage"
    digits = sentence.encode().hex()
    assert digits.isdigit()  # every byte is 0x20-0x79 with no hex letter
    assert [p.item.text for p in Segmenter().prompt_pieces(GuardInput(digits))] == [sentence]
    assert Segmenter().prompt_pieces(GuardInput("31415926535897932384626433832795")) == []  # a number


def test_a_response_window_needs_a_letter_or_a_digit():
    from models.segment import Segmenter

    seg = Segmenter()
    assert seg.response_items("q", "👍👍 ...") == []
    assert [i.response for i in seg.response_items("How much?", "500")] == ["500"]  # a bare number can answer
