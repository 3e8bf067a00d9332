"""Synthetic Stage I inputs for tests and the benchmark: biomarkers that show a label's evidence pattern, small
datasets with the GROK columns, and a fake-teacher responder that answers each prompt with a grounded report."""

from __future__ import annotations

import json
import random

from datasets import Dataset
from PIL import Image as PILImage

from grok_retina.guideline import LABEL_EVIDENCE
from grok_retina.prompts import build_teacher_messages
from grok_retina.teachers import RulesTeacher, TeacherSample
from processing.biomarkers import BIOMARKERS
from processing.grok_dataset import grok_features
from processing.labels import LABELS

from .fake_openai import Reply


def make_biomarkers(label: str, rng: random.Random, missing: tuple[str, ...] = ()) -> dict[str, float | None]:
    """Values around the normative mean, with the label's pattern pushed 3 SD in its direction."""
    values: dict[str, float | None] = {}
    for spec in BIOMARKERS:
        low, high = spec.normal
        mean, sd = (low + high) / 2, (high - low) / 4
        values[spec.name] = round(mean + rng.uniform(-1.2, 1.2) * sd, 3)
    for item in LABEL_EVIDENCE[label].items:
        if item.direction in ("low", "high", "abnormal"):
            spec = next(s for s in BIOMARKERS if s.name == item.biomarker)
            mean, sd = sum(spec.normal) / 2, (spec.normal[1] - spec.normal[0]) / 4
            values[spec.name] = round(mean + (-1 if item.direction == "low" else 1) * rng.uniform(2.4, 3.6) * sd, 3)
    for name in missing:
        values[name] = None
    return values


def make_dataset(n: int, seed: int = 0) -> Dataset:
    """``n`` samples (`grok_features` columns) cycling through the labels, with tiny CFP and OCT images (every
    5th has no CFP)."""
    rng = random.Random(seed)
    return Dataset.from_dict({
        "id": [f"s{i:04d}" for i in range(n)],
        "patient_id": [f"p{i // 2:04d}" for i in range(n)],
        "eye": ["OD" if i % 2 == 0 else "OS" for i in range(n)],
        "cfp": [PILImage.new("RGB", (16, 16), (i % 255, 40, 20)) if i % 5 else None for i in range(n)],
        "oct": [[PILImage.new("L", (16, 8), i % 255), PILImage.new("L", (16, 8), 1)] for i in range(n)],
        "biomarkers": [make_biomarkers(LABELS[i % len(LABELS)], rng) for i in range(n)],
        "label": [i % len(LABELS) for i in range(n)],
        "report": [None] * n,
        **{name: [None] * n for name in ("oct_axial_um_per_px", "oct_lateral_um_per_px", "cfp_um_per_px")},
    }, features=grok_features())


def sample_of(row: dict) -> TeacherSample:
    return TeacherSample(row["id"], row["biomarkers"], LABELS[row["label"]])


def user_text(sample: TeacherSample) -> str:
    return build_teacher_messages(sample.biomarkers, sample.label)[1]["content"]


class GroundedResponder:
    """A FakeOpenAIServer responder that answers each teacher prompt with the rules teacher's JSON, and knows
    which sample each request was for (``sample_id(request)``)."""

    def __init__(self, dataset: Dataset):
        teacher = RulesTeacher(seed=1)
        self.answers: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        for row in dataset.select_columns(["id", "biomarkers", "label"]).to_list():
            sample = sample_of(row)
            self.answers[user_text(sample)] = json.dumps(teacher.answer(sample))
            self.ids[user_text(sample)] = sample.id

    def sample_id(self, request: dict) -> str:
        return self.ids[request["messages"][1]["content"]]

    def __call__(self, request: dict) -> Reply:
        return Reply(content=self.answers[request["messages"][1]["content"]])
