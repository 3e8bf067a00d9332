"""Short diagnosis questions beside the reports in Stage III's training mix.

A report names its diagnosis hundreds of tokens after the images and biomarker tokens, so a small model trained
on reports alone gets almost no gradient for reading the diagnosis from them. One short question per eye
("What is the most likely diagnosis?" -> "Glaucoma.") puts that decision right after the inputs, the way
instruction mixes combine long reports with closed questions. `GrokPipeline.diagnose` asks the same question.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset, concatenate_datasets

from processing.labels import dr_dme_names, label_name

from .prompts import build_diagnosis_messages, diagnosis_answer


def _question_row(row: dict[str, Any]) -> dict[str, Any]:
    modalities = [block.get("modality") for message in row["prompt"] for block in message["content"]
                  if block.get("type") == "image"]
    dr_grade, dme = dr_dme_names(row.get("dr_grade"), row.get("dme"))
    answer = diagnosis_answer(label_name(row["label"]), dr_grade, dme)
    return {
        "prompt": build_diagnosis_messages(has_cfp="cfp" in modalities, has_oct="oct" in modalities),
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": answer}]}],
    }


def with_diagnosis_questions(dataset: Dataset) -> Dataset:
    """``dataset`` (Stage I rows: prompt, completion, images, label, ...) followed by one diagnosis question per
    row (train with ``train_sampling_strategy="group_by_length"`` to batch questions and reports apart)."""
    missing = {"prompt", "completion", "images", "label"} - set(dataset.column_names)
    if missing:
        raise ValueError(f"Diagnosis questions need the Stage I columns {sorted(missing)}; is this a `grok-retina instruct` dataset?")
    questions = dataset.map(_question_row, features=dataset.features, desc="Adding diagnosis questions")
    return concatenate_datasets([dataset, questions])
