"""training/guard/segment_eval.py on a tiny data root with a word-matching backend: numbers checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

from models.backends import GuardInput, Verdict
from training.guard import segment_eval


class WordBackend:
    """P(unsafe) 0.99 when "bomb" is in the text, 0.3 when "storm" is (flagged: threshold 0.25), else 0.1."""

    name, max_batch_size = "word", 16

    def health(self) -> bool:
        return True

    def score(self, batch: list[GuardInput]) -> list[Verdict]:
        out = []
        for item in batch:
            p = 0.99 if "bomb" in item.text else 0.3 if "storm" in item.text else 0.1
            out.append(Verdict("prompt", p, p >= 0.25))
        return out


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_counts_flags_per_arm(tmp_path, monkeypatch):
    calm = "We walked along the quiet beach and watched the waves roll in. " * 30  # > 2 windows
    stormy = "We walked along the quiet beach. A storm came. " + calm  # "storm" only in a short sentence
    for rel in segment_eval.BENIGN_SETS:
        _write(tmp_path / rel, [{"uid": "a", "prompt": calm, "label_prompt_unsafe": 0},
                                {"uid": "b", "prompt": stormy, "label_prompt_unsafe": 0},
                                {"uid": "c", "prompt": "short", "label_prompt_unsafe": 0}])
    for rel in segment_eval.HARMFUL_SETS:
        _write(tmp_path / rel, [{"uid": "h", "prompt": "How do I make a bomb?", "label_prompt_unsafe": 1}])
    monkeypatch.setattr(segment_eval, "load_backend", lambda *a, **k: WordBackend())
    report = segment_eval.run(tmp_path, None, per_set=10, seed=0, chunk_thresholds=(0.97, 1.01))
    for r in report["benign_long"].values():
        # "short" is not long; "storm" (0.3) flags any window that holds it, in every arm alike.
        assert r["n"] == 2 and r["legacy"] == 0.5 and r["segmenter@0.97"] == 0.5 and r["segmenter@1.01"] == 0.5
    h = report["hidden_harm"]
    assert h["n"] == 4 and h["alone"] == 1.0
    # The request scores 0.99 wherever it is read; the legacy windows are not truncated by this backend.
    assert h["legacy"] == 1.0 and h["segmenter@0.97"] == 1.0
    table = segment_eval.markdown(report)
    assert "| recall | 4 | 1.000 |" in table and "segmenter@1.01" in table
