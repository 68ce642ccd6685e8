"""OCR on ONNX Runtime vs OpenVINO, side by side: latency on new and on seen image shapes, and text read.

Arms are ``OcrReader``s that differ only in ``OcrConfig.openvino_models``: ``ort`` (none), ``ov-rec``
and ``ov-det-rec`` (the default); ``--int8`` adds the int8 detector (``OcrConfig.int8``) on each runtime. Every arm reads the same seeded rendered pages
(random sizes from 480x240 to 1392x792, 1-4 lines, fonts 28-48 px), one page at a time, arms interleaved with
the order rotated per page, the reader's cache cleared before every call (cold OCR). Pass 1 is the
first time each arm sees each page, so most detector input sizes and recogniser widths are new to it
(OpenVINO compiles kernels per new shape; the count of distinct detector sizes is in the output); pass 2 reads the same pages again (shapes seen).

    .venv/bin/python benchmarks/ocr_runtime_bench.py --pages 40 --threads 2 --out runs/bench/ocr_runtime.json

Reported per arm and pass: p50/p95 ms of ``reader.read`` (decode + downscale + det + rec), the ratio
of p50 to the ``ort`` arm's, the share of pages whose text equals ``ort``'s exactly, and word recall
(rendered words found as whitespace-separated words).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the repo

from benchmarks.guard_bench import _WORDS  # noqa: E402
from models.ocr import OcrReader  # noqa: E402
from models.ocr_config import OcrConfig  # noqa: E402
from models.render import render_text_image  # noqa: E402

ARMS = {"ort": {"openvino_models": ()}, "ov-rec": {"openvino_models": ("rec",)},
        "ov-det-rec": {"openvino_models": ("det", "rec")}}
INT8_ARMS = {"ort-det-int8": {"openvino_models": (), "int8": True},  # OcrConfig.int8's default: det only
             "ov-det-int8": {"openvino_models": ("det", "rec"), "int8": True}}


def make_pages(n: int, seed: int) -> list[tuple[bytes, str]]:
    """``n`` seeded (PNG bytes, rendered text) pairs of varied sizes, line counts and fonts."""
    rng = random.Random(seed)
    pages = []
    for _ in range(n):
        size = (rng.randrange(480, 1400, 8), rng.randrange(240, 800, 8))  # mostly distinct detector input sizes
        font = rng.choice((28, 32, 36, 40, 44, 48))
        n_lines = min(rng.randint(1, 4), max(1, (size[1] - 40) // int(font * 1.8)))
        lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 6))) for _ in range(n_lines)]
        pages.append((render_text_image(lines, size, font), " ".join(lines)))
    return pages


def _det_size(png: bytes) -> tuple[int, int]:
    """The page's size after the reader's downscale, rounded to the detector's 32-px grid."""
    from models.ocr_image import cap_side, decode_bgr

    h, w = cap_side(decode_bgr(png), OcrConfig().max_side).shape[:2]
    return (round(h / 32), round(w / 32))


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def run(pages: int, threads: int, seed: int, int8: bool = False) -> dict[str, Any]:
    """Measure every arm (plus the int8 ones with ``int8``) on both passes; returns the JSON document."""
    data = make_pages(pages, seed)
    det_sizes = {_det_size(png) for png, _ in data}
    arms = {**ARMS, **(INT8_ARMS if int8 else {})}
    readers = {name: OcrReader(OcrConfig(threads=threads, **knobs)) for name, knobs in arms.items()}
    for reader in readers.values():  # build the engines and sessions now, outside the timed calls
        reader._get_engine()
    rows = []
    for pass_no in (1, 2):
        times: dict[str, list[float]] = {n: [] for n in readers}
        texts: dict[str, list[str]] = {n: [] for n in readers}
        names = list(readers)
        for i, (png, _) in enumerate(data):
            for name in names[i % len(names):] + names[: i % len(names)]:  # rotate the order per page
                reader = readers[name]
                reader.clear_cache()
                t0 = time.perf_counter()
                texts[name].append(reader.read(png))
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["ort"])
        for name in readers:
            recall = [len(set(truth.lower().split()) & set(got.lower().split())) / len(set(truth.lower().split()))
                      for (_, truth), got in zip(data, texts[name])]
            rows.append({"pass": pass_no, "shapes": "new" if pass_no == 1 else "seen", "arm": name,
                         "p50_ms": 1e3 * statistics.median(times[name]), "p95_ms": 1e3 * _p(times[name], 0.95),
                         "p50_vs_ort": statistics.median(times[name]) / base,
                         "same_text_as_ort": sum(a == b for a, b in zip(texts[name], texts["ort"])) / len(data),
                         "word_recall": statistics.mean(recall)})
    return {"rows": rows, "pages": pages, "distinct_detector_sizes": len(det_sizes), "threads": threads, "seed": seed, "load_avg": os.getloadavg(),
            "cpus": os.cpu_count(), "date": datetime.now(timezone.utc).isoformat(),
            "command": "python " + " ".join(sys.argv)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pages", type=int, default=40, help="distinct rendered pages (each read twice per arm)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of every OCR model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--int8", action="store_true",
                   help="add int8-detector arms on ORT and on OpenVINO (builds the int8 model once, 1-2 min)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/ocr_runtime.json"))
    args = p.parse_args(argv)
    if args.pages < 1:
        p.error("--pages must be ≥ 1")
    doc = run(args.pages, args.threads, args.seed, args.int8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print("| shapes | arm | p50 ms | p95 ms | p50 vs ort | same text as ort | word recall |")
    print("|---|---|---|---|---|---|---|")
    for r in doc["rows"]:
        print(f"| {r['shapes']} | {r['arm']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p50_vs_ort']:.2f} | "
              f"{100 * r['same_text_as_ort']:.0f} % | {r['word_recall']:.3f} |")
    print(f"wrote {args.out} ({doc['distinct_detector_sizes']} distinct detector sizes in {args.pages} pages; "
          f"load average {doc['load_avg'][0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
