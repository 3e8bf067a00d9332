"""The Grounded Ophthalmic Understanding benchmark over a model folder: generate reports, score them."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from processing.labels import LABELS

from .ablation import MODALITY_SETTINGS, AblationResult, run_modality_ablation
from .benchmark import evaluate_reports
from .judge import RubricJudge
from .report import EvaluationResult, atomic_write_text


@dataclass
class GOUSample:
    """One benchmark case: the images, the biomarkers, the true label and a reference report."""

    id: str
    cfp: Any
    oct: Any
    biomarkers: dict | None
    label: str
    reference: str | None


def _label_name(value: Any) -> str:
    return LABELS[value] if isinstance(value, int) else str(value)


def samples_from_dataset(dataset: Iterable[dict]) -> list[GOUSample]:
    """Cases from a Stage I dataset (prompt / completion / images) or a GROK dataset (cfp / oct / report)."""
    samples = []
    for index, row in enumerate(dataset):
        if "images" in row and "prompt" in row:
            order = [b["modality"] for m in row["prompt"] for b in m["content"] if b.get("type") == "image"]
            images = dict(zip(order, row["images"]))
            reference = row["completion"][0]["content"][0]["text"] if row.get("completion") else None
            cfp, oct = images.get("cfp"), images.get("oct")
        else:
            scans = row.get("oct") or []
            cfp, oct, reference = row.get("cfp"), (scans[0] if scans else None), row.get("report")
        samples.append(GOUSample(str(row.get("id", index)), cfp, oct, row.get("biomarkers"), _label_name(row["label"]), reference))
    return samples


def generate_reports(
    pipeline, samples: Sequence[GOUSample], modalities: Iterable[str] = ("cfp", "oct"), batch_size: int = 16,
    desc: str = "Generating reports",
) -> list[str]:
    """One report per sample with only ``modalities``' images shown to the model (batched, greedy)."""
    modalities = set(modalities)
    reports: list[str] = []
    for start in tqdm(range(0, len(samples), batch_size), desc=desc, unit="batch"):
        chunk = samples[start : start + batch_size]
        out = pipeline(
            cfp=[s.cfp if "cfp" in modalities else None for s in chunk],
            oct=[s.oct if "oct" in modalities else None for s in chunk],
            biomarkers=[s.biomarkers for s in chunk],
            batch=True,
        )
        reports += [report.text for report in out]
    return reports


def evaluate_model(
    pipeline,
    samples: Sequence[GOUSample],
    *,
    model_name: str,
    dataset_name: str,
    split: str,
    out_dir: str | Path,
    judge: RubricJudge | None = None,
    ablation: bool = False,
    batch_size: int = 16,
    embeddings: bool = True,
) -> tuple[EvaluationResult, AblationResult | None]:
    """Score ``pipeline`` on ``samples``; with ``ablation`` also OCT-only and CFP-only (written to ablation.*)."""
    labels = [s.label for s in samples]
    references = [s.reference for s in samples] if all(s.reference for s in samples) else None
    score = functools.partial(
        evaluate_reports, labels=labels, references=references, biomarkers=[s.biomarkers for s in samples],
        ids=[s.id for s in samples], judge=judge, embeddings=embeddings,
    )
    settings = MODALITY_SETTINGS if ablation else {"CFP+OCT": MODALITY_SETTINGS["CFP+OCT"]}
    result = run_modality_ablation(
        lambda data, modalities: generate_reports(pipeline, data, modalities, batch_size, desc=f"Reports ({'+'.join(sorted(modalities))})"),
        list(samples),
        score,
        settings,
    )
    evaluation = EvaluationResult(
        model=model_name, dataset=dataset_name, split=split, sections=dict(result.sections["CFP+OCT"]),
        config={"n": len(samples), "judge": getattr(judge, "model", None), "ablation": ablation},
    )
    out_dir = Path(out_dir)
    evaluation.write(out_dir)
    if ablation:
        atomic_write_text(out_dir / "ablation.json", json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        atomic_write_text(out_dir / "ablation.md", result.to_markdown() + "\n")
    return evaluation, (result if ablation else None)
