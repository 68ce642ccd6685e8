"""The guard classifier's training job configuration (``DistillConfig``), shared by distill and finetune.

Parsed from YAML + CLI by ``TrlParser`` (unknown keys fail); each field is documented once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.guard.guard_data import default_shared_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


def config_field(default: Any, help_: str) -> Any:
    """A dataclass field with its one help string (lists get a fresh copy per instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help_})
    return field(default=default, metadata={"help": help_})


@dataclass
class DistillConfig:
    """One training job of the guard classifier (parsed from YAML + CLI by ``TrlParser``)."""

    output_dir: str = config_field("runs/guard", "Artifact directory to write (config, head, calibration, card).")
    seed: int = config_field(0, "Seed for splits, rendering, initialisation and batch order.")
    threads: int = config_field(2, "torch CPU threads.")
    encoder: str = config_field("all-minilm-l6-v2", "Text encoder: alias, HF name or local path.")
    max_length: int = config_field(256, "Token budget per item (prompt + OCR text [+ response]).")
    use_ocr: bool = config_field(True, "Append OCR text of prompt images to the prompt text.")
    image_encoder: str | None = config_field(None, "Optional CLIP/SigLIP vision tower; None = OCR only.")
    head_hidden: int = config_field(256, "Width of the MLP trunk under the heads.")
    dropout: float = config_field(0.1, "Trunk dropout while training.")
    data_root: str | None = config_field(None, "Base folder of relative data paths; None = the shared dev pack "
                               "($SPAGUARD_SHARED_DIR or <repo>/../shared/data/dev).")
    guard_files: list[str] = config_field([], "Guard-schema JSONL files or globs: relative to data_root, or "
                                          "'pack:pattern' relative to that pack's root (training.guard.packs).")
    data_roots: list[str] = config_field([], "'name=path' roots of named packs; a pack not listed is "
                                         "<shared>/data/<name> ($SPAGUARD_SHARED_DIR or <repo>/../shared).")
    source_caps: list[str] = config_field([], "'dataset=N': keep about N rows of that source (seeded, whole "
                                          "near-copy clusters), so a big source cannot swamp the mix.")
    source_weights: list[str] = config_field([], "'dataset=w': multiply that source's item weights by w (noisy "
                                             "set-level labels below per-item human labels).")
    response_only_sources: list[str] = config_field([], "Datasets whose prompt labels are dropped (their prompts "
                                                    "repeat a question set that trains elsewhere).")
    question_grouped_sources: list[str] = config_field([], "Datasets whose rows cluster by question text for "
                                                       "every split (many answers to one question).")
    calib_sources: list[str] = config_field([], "Benign datasets held apart from training: the prompt threshold "
                                            "is set on them alone (several sources, not one split of one pack).")
    pair_files: list[str] = config_field([], "Preference-pair JSONL files (prompt, chosen, rejected).")
    max_pairs: int | None = config_field(None, "Use at most this many pairs (seeded sample); None = all.")
    spa_vl_splits: list[str] = config_field([], "SPA-VL splits via datasets.load_dataset('sqrti/SPA-VL').")
    spa_vl_parquet: list[str] = config_field([], "Local parquet files in SPA-VL's format (offline).")
    spa_vl_limit: int | None = config_field(None, "Rows per SPA-VL source; None = all.")
    template_prompts: bool = config_field(False, "Add training.guard.hazard_data's weapons-agent and violent-idiom prompt "
                                       "templates (unsafe requests beside safe look-alikes).")
    chat_turns: bool = config_field(False, "Add training.guard.chat_turns' short benign chat turns (\"ok\", "
                                    "\"continue\", greetings in many languages), all safe.")
    task_prompts: bool = config_field(False, "Add training.guard.task_prompts' benign task instructions "
                                      "(\"write / create / generate ...\") and everyday senses of violent verbs "
                                      "beside their literal, unsafe twins.")
    light_replies: bool = config_field(False, "Add training.guard.light_replies' response twins: one benign prompt "
                                       "answered harmlessly (puns, tips, stories) and abusively.")
    model_answers_file: str | None = config_field(None, "A training.guard.model_answers file (the embedded "
                                                  "model's greedy answers to benign training prompts, all safe; "
                                                  "relative to the repo root) added as response items.")
    task_twins: bool = config_field(False, "Add training.guard.task_prompts' task twins: the same \"write / give me "
                                    "a ...\" frames around unsafe and benign subjects, so the frame decides nothing.")
    ocr_format_count: int = config_field(0, "Carrier prompt + text items in the form OCR'd image text reaches the "
                               "classifier (training.guard.carrier_data), half unsafe.")
    typographic_count: int = config_field(0, "Rendered typographic images (harmful and benign text).")
    photo_count: int = config_field(0, "Labelled prompts paired with benign photos (+ captioning prompts).")
    response_items: int = config_field(0, "About this many content-teaching response items (training.guard.response_data).")
    service_format_responses: bool = config_field(False, "Score labelled responses as the service does "
                                        "(prompt tail + first response window).")
    judge_url: str | None = config_field(None, "OpenAI-compatible base URL of an LLM judge that labels "
                               "unlabelled prompts/responses (soft labels); None = no judge.")
    judge_model: str = config_field("md-judge", "Model name sent to the judge endpoint.")
    soft_weight: float = config_field(0.5, "Weight of the soft (teacher) term where hard labels also exist.")
    distill_temperature: float = config_field(2.0, "Temperature T of the soft targets and student logits.")
    pair_weight: float = config_field(0.3, "Weight of the pairwise ranking loss on the response head.")
    node_weight: float = config_field(0.3, "Weight of the node (taxonomy) multi-label loss.")
    group_balance: float = config_field(0.5, "Item weight ∝ n_group^-x: 0 = none, 1 = equal total per dataset.")
    epochs: int = config_field(40, "Passes over the cached features.")
    batch_size: int = config_field(256, "Items per optimiser step.")
    learning_rate: float = config_field(2e-3, "AdamW learning rate for the heads.")
    weight_decay: float = config_field(1e-2, "AdamW weight decay.")
    calib_fraction: float = config_field(0.2, "Held-out share (stratified) for temperature and thresholds.")
    target_fpr: float = config_field(0.05, "Task thresholds flag at most this share of held-out benign items.")
    node_target_fpr: float = config_field(0.01, "Per-node thresholds' false-positive rate on benign items.")
    cv_folds: int = config_field(0, "k for grouped, stratified k-fold CV reported in the card (0 = skip).")
    cv_leave_one_dataset_out: bool = config_field(False, "Also report leave-one-dataset-out metrics.")
    cache_dir: str = config_field("runs/guard_cache", "On-disk cache of encoder features (by content hash).")

    def __post_init__(self) -> None:
        if not (0.0 <= self.soft_weight <= 1.0 and 0.0 < self.calib_fraction < 1.0):
            raise ValueError("soft_weight must be in [0, 1] and calib_fraction in (0, 1)")
        if self.distill_temperature <= 0 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("distill_temperature must be > 0, epochs and batch_size ≥ 1")
        if not (0.0 <= self.target_fpr < 1.0 and 0.0 <= self.node_target_fpr < 1.0):
            raise ValueError("target_fpr and node_target_fpr must be in [0, 1)")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ValueError("cv_folds must be 0 (off) or ≥ 2")
        if not (self.guard_files or self.spa_vl_splits or self.spa_vl_parquet):
            raise ValueError("no training data: set guard_files, spa_vl_splits or spa_vl_parquet")

    def resolved_root(self) -> Path:
        return Path(self.data_root) if self.data_root else default_shared_dir(REPO_ROOT) / "data" / "dev"
