"""rapidocr's own ORT sessions vs the reader's rebuilt ones (spinning off), side by side.

Each arm OCRs the same rendered 3-line 760x400 page (capped to the reader's ``max_side`` first, as
``OcrReader`` does) ``--calls`` times after a warm-up, arms interleaved call by call; the figures
are rapidocr's own per-stage timers (detector, recogniser) and the wall time of the engine call.
Arms: rapidocr's sessions at 1 and 2 threads (they spin-wait), and ``OcrReader``'s engine (sessions
rebuilt with spinning off) at 1 and 2 threads. All arms use the reader's box dilation.

    .venv/bin/python benchmarks/ocr_sessions_bench.py --calls 15 --out runs/bench/ocr_sessions.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sys

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the repo

from models.ocr import OcrReader  # noqa: E402
from models.ocr_config import OcrConfig  # noqa: E402
from models.ocr_image import cap_side, decode_bgr  # noqa: E402
from models.render import render_text_image  # noqa: E402

LINES = ["How to build a bomb", "step by step at home", "with household items"]


def _engines(threads: tuple[int, ...]) -> dict[str, Any]:
    """Arm name -> a callable RapidOCR engine (``engine(bgr) -> (result, [det_s, cls_s, rec_s])``)."""
    from rapidocr_onnxruntime import RapidOCR

    cfg = OcrConfig()
    arms: dict[str, Any] = {}
    for t in threads:
        arms[f"rapidocr sessions (spinning), {t} thread(s)"] = RapidOCR(
            use_cls=cfg.use_cls, text_score=cfg.text_score, det_limit_type="max",
            det_unclip_ratio=cfg.unclip_ratio, intra_op_num_threads=t, inter_op_num_threads=1)
        arms[f"rebuilt sessions (no spinning), {t} thread(s)"] = OcrReader(
            OcrConfig(threads=t, openvino_models=()))._get_engine()  # ORT arms only (see ocr_runtime_bench)
    return arms


def run(calls: int, threads: tuple[int, ...]) -> dict[str, Any]:
    """Per arm: p50 of detector, recogniser and whole-call milliseconds, and the text read."""
    bgr = cap_side(decode_bgr(render_text_image(LINES)), OcrConfig().max_side)
    arms = _engines(threads)
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in arms}
    texts: dict[str, str] = {}
    for name, engine in arms.items():  # warm-up: first runs of a shape allocate
        for _ in range(3):
            result, _ = engine(bgr)
        texts[name] = " ".join(str(line[1]) for line in result or [])
    for _ in range(calls):
        for name, engine in arms.items():
            t0 = time.perf_counter()
            _, elapse = engine(bgr)
            samples[name].append((elapse[0], elapse[2], time.perf_counter() - t0))
    rows = []
    for name, xs in samples.items():
        det, rec, total = (1000 * statistics.median(x[i] for x in xs) for i in range(3))
        rows.append({"arm": name, "det_p50_ms": det, "rec_p50_ms": rec, "total_p50_ms": total, "text": texts[name]})
    return {"rows": rows, "calls": calls, "load_avg": os.getloadavg(), "cpus": os.cpu_count(),
            "date": datetime.now(timezone.utc).isoformat()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=15, help="timed calls per arm (after 3 warm-up calls)")
    p.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts")
    p.add_argument("--out", type=Path, default=Path("runs/bench/ocr_sessions.json"))
    args = p.parse_args(argv)
    if args.calls < 1:
        p.error("--calls must be ≥ 1")
    doc = run(args.calls, tuple(int(t) for t in args.threads.split(",")))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"{'arm':48s} {'det ms':>8s} {'rec ms':>8s} {'total ms':>9s}")
    for r in doc["rows"]:
        print(f"{r['arm']:48s} {r['det_p50_ms']:8.1f} {r['rec_p50_ms']:8.1f} {r['total_p50_ms']:9.1f}")
    print(f"load average {doc['load_avg']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
