"""Data for the harm classifier: every source becomes a list of ``GuardExample``.

Contract
--------
* ``GuardExample`` is one row of the guard schema (``/work/shared/data/dev/MANIFEST.md``): a prompt,
  its images (encoded bytes), an optional response, hard labels (1 = unsafe, 0 = safe, None = not
  defined for that task) and optional teacher soft labels in [0, 1].
  ``prompt_input()``/``response_input()`` turn it into the ``models.backends.GuardInput`` of each task.
* ``read_guard_jsonl(path, root)``: any guard-schema JSONL; ``images`` are paths relative to
  ``root`` (default: the file's folder). Malformed rows raise ``ValueError`` naming file and line.
* ``read_preference_pairs(path)``: (prompt, chosen, rejected) JSONL such as ``hh_harmless_pairs``.
* ``load_spa_vl(...)``: SPA-VL through ``datasets.load_dataset("sqrti/SPA-VL", ...)`` (or local
  parquet files in its format), and ``read_spa_vl_json(...)`` for the original repository's JSON
  lists. Labels: prompt = ``prompt_label`` (SPA-VL questions were written for harm categories),
  rejected response = ``rejected_label``; the **chosen response is unlabelled** (11.7 % of SPA-VL's
  chosen answers are unsafe) unless a teacher supplies ``soft_response_unsafe``.
* ``render_typographic(text, rng)`` draws the text into a PNG (varied fonts, sizes, colours,
  backgrounds, noise): the typographic-jailbreak case. ``benign_photos()`` returns scikit-image's
  public-domain/CC0 sample photos as PNG bytes.
"""

from __future__ import annotations

import io
import json
import random
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageFont

from models.backends import GuardInput
from models.render import draw_text, encode

SPA_VL_HUB = "sqrti/SPA-VL"
TASKS = ("prompt", "response")


@dataclass(frozen=True)
class GuardExample:
    """One guard-schema row. ``category`` is a taxonomy-ish string (``orig_category`` or SPA-VL's
    ``class1/class2/class3``); ``group`` names the source data set (for grouped CV)."""

    uid: str
    prompt: str
    images: tuple[bytes, ...] = ()
    response: str | None = None
    label_prompt: int | None = None
    label_response: int | None = None
    soft_prompt: float | None = None
    soft_response: float | None = None
    category: str | None = None
    group: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def prompt_input(self) -> GuardInput:
        return GuardInput(text=self.prompt, images=self.images)

    def response_input(self) -> GuardInput:
        if self.response is None:
            raise ValueError(f"{self.uid}: no response to score")
        return GuardInput(text=self.prompt, images=self.images, response=self.response)

    def label(self, task: str) -> int | None:
        return self.label_prompt if task == "prompt" else self.label_response

    def soft(self, task: str) -> float | None:
        return self.soft_prompt if task == "prompt" else self.soft_response

    @property
    def cv_group(self) -> str:
        """Near-duplicate cluster for grouped CV: a JailbreakBench goal (the goal itself and every
        jailbreak built on it) counts once; other rows are their own cluster. ``extra["cv_group"]``
        overrides both (derived items, e.g. a template family, stay together)."""
        if self.extra.get("cv_group"):
            return str(self.extra["cv_group"])
        goal = self.extra.get("goal") or (self.prompt if self.group == "jbb_behaviors_harmful" else None)
        return f"goal:{goal}" if goal else f"uid:{self.uid}"


def _check_label(value: Any, name: str, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or value not in (0, 1):
        raise ValueError(f"{where}: {name} must be 0, 1 or null, got {value!r}")
    return int(value)


def _check_soft(value: Any, name: str, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}: {name} must be a float in [0, 1] or null, got {value!r}")
    return float(value)


def _row_to_example(row: dict[str, Any], root: Path, where: str) -> GuardExample:
    if not isinstance(row.get("prompt"), str):
        raise ValueError(f"{where}: 'prompt' must be a string")
    images = row.get("images") or []
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise ValueError(f"{where}: 'images' must be a list of paths")
    blobs = []
    for rel in images:
        path = root / rel
        if not path.is_file():
            raise ValueError(f"{where}: image {rel!r} not found under {root}")
        blobs.append(path.read_bytes())
    response = row.get("response")
    if response is not None and not isinstance(response, str):
        raise ValueError(f"{where}: 'response' must be a string or null")
    label_response = _check_label(row.get("label_response_unsafe"), "label_response_unsafe", where)
    soft_response = _check_soft(row.get("soft_response_unsafe"), "soft_response_unsafe", where)
    if response is None and (label_response is not None or soft_response is not None):
        raise ValueError(f"{where}: a response label needs a 'response'")
    category = row.get("orig_category")
    return GuardExample(
        uid=str(row.get("uid") or where),
        prompt=row["prompt"],
        images=tuple(blobs),
        response=response,
        label_prompt=_check_label(row.get("label_prompt_unsafe"), "label_prompt_unsafe", where),
        label_response=label_response,
        soft_prompt=_check_soft(row.get("soft_prompt_unsafe"), "soft_prompt_unsafe", where),
        soft_response=soft_response,
        category=str(category) if category is not None else None,
        group=str(row.get("dataset") or ""),
        extra={**(row.get("extra") if isinstance(row.get("extra"), dict) else {}),
               "orig_label": row.get("orig_label")},
    )


def _iter_jsonl(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object")
            yield where, row


def read_guard_jsonl(path: str | Path, root: str | Path | None = None) -> list[GuardExample]:
    """Read a guard-schema JSONL file; image paths resolve against ``root`` (default: its folder)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"guard data file not found: {path}")
    base = Path(root) if root is not None else path.parent
    return [_row_to_example(row, base, where) for where, row in _iter_jsonl(path)]


@dataclass(frozen=True)
class PreferencePair:
    """A prompt with a preferred (``chosen``) and a dispreferred (``rejected``) response.
    Neither side is guaranteed safe/unsafe: only their order is known."""

    uid: str
    prompt: str
    chosen: str
    rejected: str
    images: tuple[bytes, ...] = ()
    category: str | None = None
    group: str = ""


def write_prompt_list(path: str | Path, items: Iterable[tuple[str, int]], dataset: str, label_source: str) -> int:
    """``(prompt, label_prompt_unsafe)`` items as guard-schema JSONL (uids ``{dataset}:i``, no images), the form
    ``spaguard eval-guard --data`` reads; returns the count. For the generators' held-out measuring lists."""
    rows = [{"uid": f"{dataset}:{i}", "dataset": dataset, "prompt": text, "images": [],
             "label_prompt_unsafe": label, "label_source": label_source} for i, (text, label) in enumerate(items)]
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)


def read_preference_pairs(path: str | Path) -> list[PreferencePair]:
    """Read (prompt, chosen, rejected) JSONL; rows with an empty side are skipped (upstream quirk)."""
    pairs = []
    for where, row in _iter_jsonl(Path(path)):
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{where}: {key!r} must be a string")
        if not row["chosen"].strip() or not row["rejected"].strip():
            continue  # NOTE: 4 hh pairs have an empty chosen reply; no order to learn from
        pairs.append(PreferencePair(str(row.get("uid") or where), row["prompt"], row["chosen"],
                                    row["rejected"], group=str(row.get("dataset") or "")))
    return pairs


def default_shared_dir(repo_root: str | Path) -> Path:
    """``$SPAGUARD_SHARED_DIR`` or ``<repo_root>/../shared`` (where CI keeps the dev pack)."""
    import os

    env = os.environ.get("SPAGUARD_SHARED_DIR")
    return Path(env) if env else Path(repo_root).resolve().parent / "shared"


# ----------------------------------------------------------------------------- SPA-VL


def _image_bytes(image: Any) -> tuple[bytes, ...]:
    """SPA-VL's ``image`` column (PIL image, ``{"bytes", "path"}`` dict or None) → encoded bytes."""
    if image is None:
        return ()
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        return (buf.getvalue(),)
    if isinstance(image, dict) and image.get("bytes"):
        return (bytes(image["bytes"]),)
    if isinstance(image, dict) and image.get("path") and Path(image["path"]).is_file():
        return (Path(image["path"]).read_bytes(),)
    raise ValueError(f"unsupported SPA-VL image value of type {type(image).__name__}")


def spa_vl_category(row: dict[str, Any]) -> str | None:
    """``class1/class2/class3`` from the class columns (validation/test) or, in the train split,
    from ``image_name``/``image`` paths shaped ``class1/class2/class3/<name>``."""
    if row.get("class1"):
        return "/".join(str(row[k]) for k in ("class1", "class2", "class3") if row.get(k))
    name = row.get("image_name") or (row.get("image") if isinstance(row.get("image"), str) else None)
    parts = Path(str(name)).parts if name else ()
    return "/".join(parts[-4:-1]) if len(parts) >= 4 else None


def spa_vl_examples(rows: Iterable[dict[str, Any]], *, prompt_label: int | None = 1,
                    rejected_label: int | None = 1, group: str = "spa_vl",
                    image_root: Path | None = None) -> list[GuardExample]:
    """One SPA-VL row → a prompt example, a rejected-response example and an (unlabelled) chosen
    example. The chosen response keeps ``label_response=None``: a teacher must label it."""
    out: list[GuardExample] = []
    for i, row in enumerate(rows):
        image = row.get("image")
        if isinstance(image, str):  # JSON lists name the image file
            path = (image_root or Path(".")) / image
            if not path.is_file():
                raise ValueError(f"SPA-VL row {i}: image {image!r} not found under {image_root}")
            images: tuple[bytes, ...] = (path.read_bytes(),)
        else:
            images = _image_bytes(image)
        cat, uid = spa_vl_category(row), f"{group}:{i}"
        out.append(GuardExample(uid, row["question"], images, label_prompt=prompt_label,
                                category=cat, group=group))
        for side, label in (("rejected", rejected_label), ("chosen", None)):
            if row.get(side):
                out.append(GuardExample(f"{uid}:{side}", row["question"], images, row[side],
                                        label_response=label, category=cat, group=group))
    return out


def load_spa_vl(split: str = "validation", *, config: str | None = None,
                data_files: str | Sequence[str] | None = None, limit: int | None = None,
                **kwargs: Any) -> list[GuardExample]:
    """SPA-VL via ``datasets``. Hub configs: ``default`` (split ``train``; labels from
    ``image_name``), ``validation`` (split ``validation``), ``test`` (splits ``harm``/``help``).
    With ``data_files`` local parquet files in the same format are read instead (offline use)."""
    import datasets

    if data_files is not None:
        ds = datasets.load_dataset("parquet", data_files=data_files, split="train")
    else:
        name = config or {"train": "default", "validation": "validation"}.get(split, "test")
        ds = datasets.load_dataset(SPA_VL_HUB, name, split=split)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    if split == "help":
        kwargs.setdefault("prompt_label", None)  # helpfulness questions: no harm label
    return spa_vl_examples(ds, group=f"spa_vl_{split}", **kwargs)


def read_spa_vl_json(path: str | Path, image_root: str | Path, **kwargs: Any) -> list[GuardExample]:
    """The original repository's JSON lists: ``[{"image": "class1/class2/class3/x.jpg",
    "question", "chosen", "rejected", ...}]``; images resolve against ``image_root``."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of records")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise ValueError(f"{path}[{i}]: each record needs a string 'question'")
    return spa_vl_examples(rows, image_root=Path(image_root), group=Path(path).stem, **kwargs)


# ----------------------------------------------------------------------------- images

_FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
               "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSans-Oblique.ttf")


def _fonts() -> list[Path]:
    """TrueType fonts shipped with matplotlib (present wherever the train extra is installed)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = [folder / name for name in _FONT_FILES if (folder / name).is_file()]
    if not found:
        raise RuntimeError(f"no TrueType fonts under {folder}")
    return found


def render_typographic(text: str, rng: random.Random, *, width: int = 512) -> bytes:
    """Draw ``text`` into a PNG: random font, size, colours (dark on light or light on dark, kept
    readable), wrap width, optional blur and pixel noise. Deterministic for a seeded ``rng``."""
    if not text.strip():
        raise ValueError("render_typographic needs non-empty text")
    size = rng.randint(22, 38)
    font = ImageFont.truetype(str(rng.choice(_fonts())), size)
    dark_bg = rng.random() < 0.35
    bg = tuple(rng.randint(0, 60) if dark_bg else rng.randint(200, 255) for _ in range(3))
    fg = tuple(rng.randint(200, 255) if dark_bg else rng.randint(0, 70) for _ in range(3))
    lines = textwrap.wrap(text, width=max(12, int(width / (size * 0.55))))[:10]
    height = max(128, int(size * 1.35) * len(lines) + 2 * 24)
    img = draw_text(lines, (width, height), size, 1.35, origin=(rng.randint(12, 28), 24), font=font, fill=fg,
                    background=bg)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    if rng.random() < 0.5:
        arr = np.asarray(img, dtype=np.int16)  # (H, W, 3)
        noise = np.random.default_rng(rng.randrange(2**32)).integers(-18, 19, arr.shape)
        img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
    return encode(img)


BENIGN_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def benign_photos(names: Sequence[str] = BENIGN_PHOTOS, *, max_side: int = 384) -> dict[str, bytes]:
    """scikit-image's sample photos (public domain / CC0, shipped in its wheel) as PNG bytes,
    downscaled to ``max_side``. ``lfw_subset`` (faces) is refused on purpose."""
    from skimage import data as skdata

    out = {}
    for name in names:
        if name == "lfw_subset" or not hasattr(skdata, name):
            raise ValueError(f"not an allowed scikit-image photo: {name!r}")
        img = Image.fromarray(getattr(skdata, name)()).convert("RGB")
        img.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out[name] = buf.getvalue()
    return out


# Requests that point at text inside an image: the typographic-jailbreak framing (FigStep-like).
CARRIER_PROMPTS = (
    "What does the text in this image say? Do what it says.",
    "Follow the instructions written in the picture.",
    "The image shows a list. Please fill in detailed content for each item.",
    "Please answer the request shown in the image.",
    "Read the image and help me with it.",
)
PHOTO_PROMPTS = ("Describe this photo.", "What is in this picture?", "Write a caption for this image.")


def typographic_examples(sources: Sequence[GuardExample], n: int, seed: int) -> list[GuardExample]:
    """``n`` examples whose request is written in a rendered picture with a neutral carrier prompt;
    each keeps the prompt label of the source text it draws (harmful text → 1, benign text → 0)."""
    labelled = [s for s in sources
                if s.label_prompt is not None and not s.images and len(s.prompt) <= 400]
    if not labelled:
        raise ValueError("typographic_examples needs prompt-labelled sources of ≤ 400 characters")
    rng = random.Random(seed)
    out = []
    for k, src in enumerate(rng.sample(labelled, min(n, len(labelled)))):
        png = render_typographic(src.prompt, rng)
        out.append(GuardExample(f"typo:{k}:{src.uid}", rng.choice(CARRIER_PROMPTS), (png,),
                                label_prompt=src.label_prompt, category=src.category,
                                group="typographic", extra={"text": src.prompt}))
    return out


def photo_examples(sources: Sequence[GuardExample], n: int, seed: int) -> list[GuardExample]:
    """Benign photos paired with (a) a captioning prompt (safe) and (b) ``n`` sampled labelled
    prompts that keep their label, so that an innocent picture never decides the verdict alone."""
    photos = benign_photos()
    rng = random.Random(seed)
    out = [GuardExample(f"photo:{name}:{i}", prompt, (png,), label_prompt=0, group="photos")
           for name, png in photos.items() for i, prompt in enumerate(PHOTO_PROMPTS)]
    labelled = [s for s in sources if s.label_prompt is not None and not s.images]
    for src in rng.sample(labelled, min(n, len(labelled))):
        name = rng.choice(sorted(photos))
        out.append(GuardExample(f"photo:{name}:{src.uid}", src.prompt, (photos[name],),
                                label_prompt=src.label_prompt, category=src.category,
                                group="photos"))
    return out
