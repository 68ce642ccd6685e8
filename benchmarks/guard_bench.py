"""Guard classifier throughput and latency on this machine: torch vs ORT vs ORT-int8, text and image+OCR.

For each batch size, the backends run interleaved (round-robin, same items, same process, pinned
threads, fixed seed), so machine noise hits them alike. Each call is ``backend.score(batch)`` end to
end: OCR, tokenization, model, calibration. Image items carry one rendered typographic image each
and the OCR cache is cleared before every call, so OCR is always cold.

The "limit" column is a ceiling: the items/s the encoder+heads could reach if every matmul ran at this
machine's best measured GEMM rate (``benchmarks/gemm_ceiling.py``), ``batch / median over the timed
batches of min_seconds(FLOPs of that batch)``, so measured/limit ("% limit") is at most 100 % unless the
probe missed the peak (the run then prints a WARNING and ``rows_over_limit`` in the JSON is non-zero).
* FLOPs are counted per timed batch by torch's FlopCounterMode on the exact features every backend
  feeds (same padded length, checked), attention included (counted under eager attention), on the
  model each backend runs: unmerged LoRA for torch, merged for the ONNX graphs. OCR is not counted.
* fp32 backends (torch, onnx, onnx-spin, onnx-plain) are bounded by the fp32 peak; int8 backends
  (onnx-int8, onnx-int8-plain) by the int8 GEMM peak (ORT's own MatMulInteger) for the weight matmuls
  plus the fp32 peak for attention.
* Peaks: best of torch ``mm``, ORT ``MatMul`` and ORT ``MatMulInteger`` on the encoder's own GEMM shapes,
  probed before every point (interleaved with the backends) and maximised over the whole run.
The old limit (one torch 1024-cube ``mm``, best of 8, at start-up, fp32 for every backend) is kept in the
JSON as ``torch_mm_peak_gflops``: it read 5-20x low on this box, hence points at 150-875 % of it.

    .venv/bin/python benchmarks/guard_bench.py --threads 2 --out runs/bench/guard   # full run
    .venv/bin/python benchmarks/guard_bench.py --quick --out runs/bench/guard       # a short run
    .venv/bin/python benchmarks/guard_bench.py --ocr-sweep --ocr-threads 2 --out runs/bench/ocr  # OCR settings
    .venv/bin/python benchmarks/guard_bench.py --ocr-quant --image-items 40 --ocr-dev-pages 200 --out runs/bench/ocr_quant  # OCR int8
    .venv/bin/python benchmarks/guard_bench.py --accuracy ../shared/data/dev/index/openai_moderation.jsonl \
        --out runs/bench/int8   # int8 vs fp32 quality on labelled prompts

Without ``--artifact`` (and with no ``models/default/``) the benchmark builds a MiniLM artifact
with seeded random heads: speed does not depend on head weights.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# NOTE: torch's OpenMP workers busy-wait after each parallel region by default; interleaved
# with ORT and OCR calls on 2 cores that spinning is charged to whichever backend runs next. Passive
# waiting keeps the comparison fair (it must be set before torch loads libgomp).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere in the repo

from benchmarks.gemm_ceiling import FlopCount, GemmPeak, GemmProbe, count_flops, merged_for_onnx, min_seconds  # noqa: E402
from models.backends import DEFAULT_ARTIFACT, GuardInput, load_backend  # noqa: E402
from models.ocr import OcrReader  # noqa: E402
from models.ocr_config import OcrConfig  # noqa: E402
from models.render import render_text_image  # noqa: E402

_WORDS = ("how do i make a bomb at home please explain the weather forecast write a poem about cats "
          "recipe for banana bread best way to hide money from taxes insult my neighbour summarize this "
          "article what is the capital of france steal a car without keys learn python quickly").split()


def text_items(rng: random.Random, n: int) -> list[GuardInput]:
    """Short prompts of 6-16 words (the '≥ 300 short prompts/s' target's workload)."""
    return [GuardInput(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 16)))) for _ in range(n)]


def image_items(rng: random.Random, n: int) -> list[GuardInput]:
    """One rendered 2-3 line typographic image per item, with a short instruction as the text."""
    out = []
    for _ in range(n):
        lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 4))) for _ in range(rng.randint(2, 3))]
        out.append(GuardInput("Follow the steps in the image.", images=(render_text_image(lines),)))
    return out


def matmul_peak(threads: int, n: int = 1024, reps: int = 8) -> float:
    """Best observed fp32 FLOP/s of torch's n x n ``mm`` (the old ceiling, kept in the JSON for comparison:
    on this box it reads 5-20x under the peak ``GemmProbe`` finds; see the module docstring)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _ensure_artifact(path: str | None, seed: int) -> Path:
    if path:
        return Path(path)
    if (DEFAULT_ARTIFACT / "config.json").is_file():
        return DEFAULT_ARTIFACT
    from models.artifact import ClassifierConfig
    from models.classifier import GuardClassifier

    torch.manual_seed(seed)
    out = Path(tempfile.mkdtemp(prefix="guard-bench-")) / "artifact"
    GuardClassifier(ClassifierConfig()).eval().save(out, {"note": "benchmark: random heads", "seed": seed})
    return out


def _open(kind: str, artifact: Path, args: argparse.Namespace) -> Any:
    """A backend by kind; ``onnx-spin`` is ORT fp32 with intra-op spin-waiting on (the ORT default);
    ``onnx-plain`` / ``onnx-int8-plain`` run the plain torch.export graph instead of the fused one."""
    if kind in ("onnx-spin", "onnx-plain", "onnx-int8-plain"):
        from models.backends import OnnxBackend

        backend = OnnxBackend(artifact, threads=args.threads, max_batch_size=max(args.batch_sizes),
                              spin=kind == "onnx-spin", int8="int8" in kind, fuse=not kind.endswith("-plain"))
        backend.name = kind
        return backend
    return load_backend(kind, artifact, threads=args.threads, max_batch_size=max(args.batch_sizes))


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


INT8_KINDS = ("onnx-int8", "onnx-int8-plain")  # backends bounded by the int8 GEMM peak (min_seconds)


def _counter_models(backends: dict[str, Any], artifact: Path, ocr: OcrReader) -> dict[str, Any]:
    """Backend name -> the torch model whose FLOPs bound it: torch runs the unmerged (LoRA) model, every
    ONNX graph the merged one (``gemm_ceiling.merged_for_onnx``)."""
    if "torch" in backends:
        base = backends["torch"].model
    else:  # FLOPs are counted on the torch model even when only ORT is timed
        from models.classifier import GuardClassifier

        base = GuardClassifier.load(artifact)
        base.featurizer.ocr = ocr
    merged = merged_for_onnx(base)
    return {name: base if name == "torch" else merged for name in backends}


def _featurizer(backend: Any) -> Any:
    return backend.model.featurizer if hasattr(backend, "model") else backend.featurizer


def _count_batches(backends: dict[str, Any], models: dict[str, Any], batches: list[list[GuardInput]]
                   ) -> dict[str, list[FlopCount]]:
    """FLOPs of each batch per backend, on the features that backend feeds its runtime (checked: same
    padded shape for every backend, else the count would bound a different workload)."""
    first = next(iter(backends.values()))
    shape = _featurizer(first)(batches[0])[0]["input_ids"].shape  # (B, T)
    for name, backend in backends.items():
        fed = _featurizer(backend)(batches[0])[0]["input_ids"].shape
        if fed != shape:
            raise SystemExit(f"{name} featurizes to {tuple(fed)}, the FLOP count to {tuple(shape)}")
    counts: dict[str, list[FlopCount]] = {name: [] for name in backends}
    for batch in batches:
        feats, _ = _featurizer(first)(batch)
        by_model: dict[int, FlopCount] = {}
        for name in backends:
            model = models[name]
            if id(model) not in by_model:
                by_model[id(model)] = count_flops(model, feats)
            counts[name].append(by_model[id(model)])
    return counts


def _rows(points: list[dict[str, Any]], peak: GemmPeak) -> list[dict[str, Any]]:
    """Table rows; each backend's limit is ``batch / median(min_seconds(batch FLOPs))`` at the run's best
    peaks: every timed call takes at least its own floor, so the median call takes at least the median floor."""
    rows = []
    for pt in points:
        bs = pt["batch"]
        for name, ts in pt["times"].items():
            flops, int8 = pt["flops"][name], name in INT8_KINDS
            floor = statistics.median(min_seconds(f, peak, int8) for f in flops)
            ips, limit = bs / statistics.median(ts), bs / floor
            rows.append({"mode": pt["mode"], "backend": name, "batch": bs, "reps": len(ts),
                         "tokens": statistics.median(f.tokens for f in flops),
                         "p50_ms": 1e3 * _percentile(ts, 0.5), "p95_ms": 1e3 * _percentile(ts, 0.95),
                         "items_per_s": ips, "gflop_per_item": statistics.median(f.total for f in flops) / bs / 1e9,
                         "bound": "int8" if int8 else "fp32", "limit_items_per_s": limit,
                         "pct_of_limit": 100 * ips / limit})
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every (mode, batch size, backend) point; returns the JSON document."""
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    artifact = _ensure_artifact(args.artifact, args.seed)
    torch_mm_peak = matmul_peak(args.threads)
    backends = {k: _open(k, artifact, args) for k in args.backends}
    ocr = OcrReader(OcrConfig(threads=args.ocr_threads))
    for b in backends.values():  # one pinned-thread OCR reader for every backend
        _featurizer(b).ocr = ocr
    models = _counter_models(backends, artifact, ocr)
    enc = next(iter(models.values())).encoder.config
    probe = GemmProbe(args.threads, int(enc.hidden_size), int(getattr(enc, "intermediate_size", 4 * enc.hidden_size)),
                      seed=args.seed)
    points: list[dict[str, Any]] = []
    for mode in args.modes:
        sizes = args.batch_sizes if mode == "text" else [s for s in args.batch_sizes if s <= args.max_image_batch]
        make = text_items if mode == "text" else image_items
        for bs in sizes:
            reps = max(3, min(args.reps, (args.items if mode == "text" else args.image_items) // bs))
            batches = [make(rng, bs) for _ in range(reps + 1)]  # +1 warm-up batch
            flops = _count_batches(backends, models, batches[1:])
            probe.measure(args.peak_budget_s)  # interleaved with the backends: see gemm_ceiling
            times: dict[str, list[float]] = {k: [] for k in backends}
            for i, batch in enumerate(batches):
                for name, backend in backends.items():
                    ocr.clear_cache()
                    t = time.perf_counter()
                    backend.score(batch)
                    if i:  # batch 0 warms up allocators and caches
                        times[name].append(time.perf_counter() - t)
            points.append({"mode": mode, "batch": bs, "times": times, "flops": flops})
            print(f"{mode:<6} B={bs:<3} " + "  ".join(f"{k} {1e3 * statistics.median(v):.1f} ms" for k, v in times.items()),
                  flush=True)
    peak = probe.best
    assert peak is not None
    rows = _rows(points, peak)
    print(f"ceiling: fp32 {peak.fp32 / 1e9:.0f} GFLOP/s ({peak.fp32_source}), int8 {peak.int8 / 1e9:.0f} GOP/s "
          f"({peak.int8_source}); torch 1024-cube mm alone: {torch_mm_peak / 1e9:.0f} GFLOP/s")
    for row in rows:
        print(_fmt_row(row))
    over = [r for r in rows if r["pct_of_limit"] > 100]
    if over:  # the probe missed the machine's peak: the ceiling is wrong, not the backend fast
        print(f"WARNING: {len(over)} rows above their limit; the GEMM probe under-measured this machine's peak")
    return {"rows": rows, "peak_gflops": peak.fp32 / 1e9, "peak_int8_gops": peak.int8 / 1e9,
            "peak_sources": {"fp32": peak.fp32_source, "int8": peak.int8_source},
            "torch_mm_peak_gflops": torch_mm_peak / 1e9, "rows_over_limit": len(over), "artifact": str(artifact),
            **_machine(args)}


def ocr_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Cold OCR latency and word recall: image size x ``max_side`` cap x angle classifier on/off."""
    rng = random.Random(args.seed)
    rows = []
    for size, font in (((760, 400), 44), ((1280, 960), 64)):
        pages = []
        for _ in range(args.image_items):
            lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 4))) for _ in range(rng.randint(2, 3))]
            pages.append((render_text_image(lines, size, font), set(" ".join(lines).split())))
        for max_side in (480, 640, 800, 960):
            for use_cls in (False, True):
                reader = OcrReader(OcrConfig(max_side=max_side, use_cls=use_cls, threads=args.ocr_threads))
                reader.read(pages[0][0])  # build sessions
                times, hits, total = [], 0, 0
                for image, words in pages:
                    reader.clear_cache()
                    t = time.perf_counter()
                    got = set(reader.read(image).lower().split())
                    times.append(time.perf_counter() - t)
                    hits, total = hits + len(words & got), total + len(words)
                rows.append({"image": f"{size[0]}x{size[1]}", "max_side": max_side, "use_cls": use_cls,
                             "p50_ms": 1e3 * _percentile(times, 0.5), "p95_ms": 1e3 * _percentile(times, 0.95),
                             "word_recall": hits / total})
                print(rows[-1], flush=True)
    return {"ocr_rows": rows, **_machine(args)}


# name -> (models run as int8, detector unclip_ratio); "fp32" is the baseline of every ratio and
# "fp32-unclip1.6" the detector's box dilation before it was raised to 2.0.
OCR_VARIANTS: dict[str, tuple[tuple[str, ...], float]] = {
    "fp32": ((), 2.0), "det-int8": (("det",), 2.0), "rec-int8": (("rec",), 2.0), "both-int8": (("det", "rec"), 2.0),
    "fp32-unclip1.6": ((), 1.6)}


def ocr_quant(args: argparse.Namespace) -> dict[str, Any]:
    """Cold OCR latency and recall, fp32 vs int8 det / rec / both (and box dilation), interleaved page by page.

    Three page sets: the sweep's own 760x400 pages (``--image-items``, font 44); ``--ocr-dev-pages``
    short dev prompts (``--ocr-dev-data``, 3-14 words) wrapped onto 760-wide pages at fonts 32/40/48;
    and half as many "dense" pages: 8-30 word prompts at fonts 24/28/32, lines 1.15-1.3 x apart. Recall is
    reported twice: whitespace words (what the classifier gets) and words found in the OCR text
    with spaces removed (the recogniser often drops spaces; this isolates character errors).
    """
    rng = random.Random(args.seed)
    loadavg_before = os.getloadavg()
    readers = {name: OcrReader(OcrConfig(threads=args.ocr_threads, int8=bool(models), int8_models=models or ("det", "rec"),
                                         unclip_ratio=unclip))
               for name, (models, unclip) in OCR_VARIANTS.items()}
    bench = []
    for _ in range(args.image_items):
        lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 4))) for _ in range(rng.randint(2, 3))]
        bench.append((render_text_image(lines), " ".join(lines)))
    page_sets = {"bench": bench, "dev": _dev_pages(args, rng, (3, 14), (32, 40, 48), (1.8,), args.ocr_dev_pages),
                 "dense": _dev_pages(args, rng, (8, 30), (24, 28, 32), (1.15, 1.3), args.ocr_dev_pages // 2)}
    for reader in readers.values():
        reader.read(bench[0][0])  # build sessions (and int8 files on a cache miss) outside the timing
    rows = []
    for set_name, pages in page_sets.items():
        stats: dict[str, dict[str, Any]] = {k: {"t": [], "hit": 0, "hit_ns": 0, "n": 0, "lost": []} for k in readers}
        for i, (image, truth) in enumerate(pages):
            order = list(readers)[i % len(readers):] + list(readers)[: i % len(readers)]  # rotate: no order bias
            for name in order:
                readers[name].clear_cache()
                t = time.perf_counter()
                got = readers[name].read(image)
                stats[name]["t"].append(time.perf_counter() - t)
                words, squashed = _norm_words(truth), "".join(got.lower().split())
                stats[name]["hit"] += len(words & _norm_words(got))
                stats[name]["hit_ns"] += sum(w in squashed for w in words)
                stats[name]["lost"] += sorted(w for w in words if w not in squashed)
                stats[name]["n"] += len(words)
        base = statistics.median(stats["fp32"]["t"])
        for name, st in stats.items():
            rows.append({"pages": set_name, "variant": name, "n_pages": len(pages),
                         "p50_ms": 1e3 * _percentile(st["t"], 0.5), "p95_ms": 1e3 * _percentile(st["t"], 0.95),
                         "p50_vs_fp32": statistics.median(st["t"]) / base,
                         "word_recall": st["hit"] / st["n"], "nospace_recall": st["hit_ns"] / st["n"],
                         "nospace_lost": " ".join(st["lost"][:12])})
            print(rows[-1], flush=True)
    return {"ocr_rows": rows, "loadavg_before": loadavg_before, **_machine(args)}


def _dev_pages(args: argparse.Namespace, rng: random.Random, n_words: tuple[int, int], fonts: tuple[int, ...],
               spacings: tuple[float, ...], n_pages: int) -> list[tuple[bytes, str]]:
    """``n_pages`` seeded ASCII dev prompts of ``n_words`` words wrapped onto 760-wide pages (font
    from ``fonts``, line pitch from ``spacings``); the page grows to fit the text, up to 960 px."""
    from PIL import ImageFont

    prompts = []
    for path in sorted(glob.glob(args.ocr_dev_data)):
        for line in Path(path).read_text().splitlines():
            text = " ".join(str(json.loads(line).get("prompt") or "").split())
            if n_words[0] <= len(text.split()) <= n_words[1] and text.isascii():
                prompts.append(text)
    rng.shuffle(prompts)
    pages = []
    for text in prompts:
        size, spacing = rng.choice(fonts), rng.choice(spacings)
        lines = _wrap(text, ImageFont.load_default(size=size), 700)
        height = max(400, 60 + int(len(lines) * size * spacing))
        if height <= 960:
            pages.append((render_text_image(lines, (760, height), size, spacing), text))
        if len(pages) == n_pages:
            return pages
    raise SystemExit(f"only {len(pages)} dev prompts fit a page under {args.ocr_dev_data}; need {n_pages}")


def _wrap(text: str, font: Any, width: int) -> list[str]:
    """Greedy word wrap so each rendered line is at most ``width`` pixels wide."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _norm_words(text: str) -> set[str]:
    """Lower-cased words with surrounding punctuation stripped."""
    return {w.strip(".,!?;:\"'()[]") for w in text.lower().split()} - {""}


def int8_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Prompt-task quality of ORT fp32 vs ORT int8 on labelled guard-schema JSONL (same items, same artifact)."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rows = []
    for path in args.accuracy:
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            if row.get("label_prompt_unsafe") in (0, 1) and not row.get("images"):
                rows.append((str(row["prompt"]), int(row["label_prompt_unsafe"])))
    random.Random(args.seed).shuffle(rows)
    rows = rows[: args.accuracy_limit]
    if len({y for _, y in rows}) < 2:
        raise SystemExit("--accuracy data needs both safe and unsafe prompt labels")
    artifact = _ensure_artifact(args.artifact, args.seed)
    labels = np.array([y for _, y in rows])
    out: dict[str, Any] = {"n": len(rows), "positives": int(labels.sum()), "artifact": str(artifact)}
    probs, flags = {}, {}
    kinds = list(dict.fromkeys(args.backends))  # the first kind is the reference the others are compared to
    for kind in kinds:
        backend = _open(kind, artifact, args)
        verdicts = [v for i in range(0, len(rows), 32)
                    for v in backend.score([GuardInput(t) for t, _ in rows[i:i + 32]])]
        probs[kind] = np.array([v.unsafe_prob for v in verdicts])
        flags[kind] = np.array([v.flagged for v in verdicts])
        out[kind] = {"auroc": float(roc_auc_score(labels, probs[kind])),
                     "accuracy": float((flags[kind] == labels.astype(bool)).mean()),
                     "recall": float(flags[kind][labels == 1].mean()), "fpr": float(flags[kind][labels == 0].mean())}

    def compare(ref: str, kind: str) -> dict[str, float]:
        diff = np.abs(probs[ref] - probs[kind])
        return {"max_abs_prob_diff": float(diff.max()), "mean_abs_prob_diff": float(diff.mean()),
                "flag_agreement": float((flags[ref] == flags[kind]).mean()),
                "auroc_change": out[kind]["auroc"] - out[ref]["auroc"]}

    out["vs_" + kinds[0]] = {k: compare(kinds[0], k) for k in kinds[1:]}
    if {"onnx", "onnx-int8"} <= set(kinds):
        out["int8_vs_fp32"] = compare("onnx", "onnx-int8")
    print(json.dumps(out, indent=2))
    return {"accuracy": out, **_machine(args)}


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"machine": {"cpu": cpu, "cores": os.cpu_count(), "loadavg": os.getloadavg(),
                        "python": platform.python_version(), "torch": torch.__version__},
            "threads": args.threads, "ocr_threads": getattr(args, "ocr_threads", None), "seed": args.seed, "date": datetime.now(timezone.utc).isoformat(),
            "command": " ".join([Path(sys.executable).name, *sys.argv])}


def _fmt_row(r: dict[str, Any]) -> str:
    return (f"{r['mode']:<6} {r['backend']:<15} B={r['batch']:<3} T={r['tokens']:<4g} p50 {r['p50_ms']:8.1f} ms  "
            f"p95 {r['p95_ms']:8.1f} ms  {r['items_per_s']:8.1f} items/s  {r['bound']} limit "
            f"{r['limit_items_per_s']:8.0f}/s  {r['pct_of_limit']:5.1f}%")


def write(doc: dict[str, Any], out: Path) -> None:
    """``out``.json (everything) and ``out``.csv (the rows)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    rows = doc.get("rows") or doc.get("ocr_rows") or [doc["accuracy"]]
    with out.with_suffix(".csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", default=None, help="classifier artifact (default: models/default, else random heads)")
    p.add_argument("--backends", default="torch,onnx,onnx-int8",
                   help="comma-separated: torch, onnx, onnx-int8, onnx-spin (ORT with spin-waiting threads), "
                        "onnx-plain, onnx-int8-plain (the unfused graph)")
    p.add_argument("--modes", default="text,image", help="comma-separated: text, image")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32,64", help="comma-separated batch sizes")
    p.add_argument("--max-image-batch", type=int, default=8, help="largest batch size for image mode (OCR is slow)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for torch, ORT and OCR")
    p.add_argument("--ocr-threads", type=int, default=2, help="intra-op threads of the OCR sessions")
    p.add_argument("--reps", type=int, default=30, help="max timed calls per point")
    p.add_argument("--items", type=int, default=256, help="text items per point (reps = items / batch, ≥ 3)")
    p.add_argument("--image-items", type=int, default=16, help="image items per point")
    p.add_argument("--peak-budget-s", type=float, default=0.1,
                   help="seconds per GEMM probe, before every point (gemm_ceiling.GemmProbe)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer points and reps (a shared machine)")
    p.add_argument("--ocr-sweep", action="store_true", help="only sweep OCR settings")
    p.add_argument("--ocr-quant", action="store_true", help="only compare OCR fp32 vs int8 det/rec/both")
    p.add_argument("--ocr-dev-data", default="../shared/data/dev/index/*.jsonl", help="glob of prompt JSONL (--ocr-quant)")
    p.add_argument("--ocr-dev-pages", type=int, default=200, help="dev-prompt pages for --ocr-quant")
    p.add_argument("--accuracy", nargs="+", default=None, metavar="JSONL",
                   help="only compare ORT fp32 vs int8 quality on these labelled guard-schema files")
    p.add_argument("--accuracy-limit", type=int, default=1000, help="items sampled (seeded) for --accuracy")
    p.add_argument("--out", default="runs/bench/guard", help="output path stem (.json and .csv)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    args.backends = args.backends.split(",")
    args.modes = args.modes.split(",")
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    if args.quick:
        args.reps, args.items, args.image_items = min(args.reps, 10), min(args.items, 96), min(args.image_items, 8)
    torch.set_num_threads(args.threads)
    if args.ocr_quant:
        doc = ocr_quant(args)
    else:
        doc = ocr_sweep(args) if args.ocr_sweep else int8_accuracy(args) if args.accuracy else run(args)
    write(doc, Path(args.out))
    print(f"wrote {Path(args.out).with_suffix('.json')} and .csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
