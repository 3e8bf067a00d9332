"""The Grounded Ophthalmic Understanding benchmark over a model folder: generate reports, score them."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from processing.labels import LABELS, dr_dme_diagnosis, dr_dme_names

from ..prompts import REPORT_SECTIONS
from ..report_parsing import parse_dr_grade, text_before_conclusion
from .ablation import MODALITY_SETTINGS, AblationResult, run_modality_ablation
from .benchmark import evaluate_reports
from .classification import diagnosis_metrics
from .conditioning import conditioning_gap
from .dme_dr import dr_dme_baselines
from .judge import RubricJudge
from .report import EvaluationResult, atomic_write_text

DME_PROBE = REPORT_SECTIONS[2] + ": The most likely diagnosis is {d}."  # the two conclusions scored for DME


@dataclass
class GOUSample:
    """One benchmark case: the images, the biomarkers, the true label, a reference report and, in a graded
    set, the true DR grade ("0", "NPDR", "PDR"; None when ungraded) and DME status ("no", "yes")."""

    id: str
    cfp: Any
    oct: Any
    biomarkers: dict | None
    label: str
    reference: str | None
    dr_grade: str | None = None
    dme: str | None = None


def _label_name(value: Any) -> str:
    return LABELS[value] if isinstance(value, int) else str(value)


def samples_from_dataset(dataset: Iterable[dict]) -> list[GOUSample]:
    """Cases from a Stage I dataset (prompt / completion / images) or a GROK dataset (cfp / oct / report),
    with the ``dr_grade`` / ``dme`` columns when present."""
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
        dr_grade, dme = dr_dme_names(row.get("dr_grade"), row.get("dme"))
        samples.append(GOUSample(str(row.get("id", index)), cfp, oct, row.get("biomarkers"), _label_name(row["label"]),
                                 reference, dr_grade, dme))
    return samples


def dme_likelihood_scores(
    pipeline, samples: Sequence[GOUSample], reports: Sequence[str], modalities: Iterable[str] = ("cfp", "oct"),
) -> list[float]:
    """Per sample, log P(DME conclusion) - log P(no-DME conclusion) under the model: two `DME_PROBE`
    conclusions naming the DR grade the report states (`parse_dr_grade`) with and without DME, scored after
    the prompt, the shown images and the report's text before its Conclusion."""
    modalities = set(modalities)
    scores = []
    for sample, report in tqdm(list(zip(samples, reports)), desc="DME likelihoods", unit="sample"):
        grade = parse_dr_grade(report)
        body = text_before_conclusion(report).strip()
        yes, no = pipeline.continuation_logprobs(
            [DME_PROBE.format(d=dr_dme_diagnosis(grade, status)) for status in ("yes", "no")],
            cfp=sample.cfp if "cfp" in modalities else None, oct=sample.oct if "oct" in modalities else None,
            biomarkers=sample.biomarkers, prefix=f"{body}\n" if body else "",
        )
        scores.append(yes - no)
    return scores


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


def diagnosis_answers(pipeline, samples: Sequence[GOUSample], batch_size: int = 16) -> list[str | None]:
    """The label each sample's answer to the short diagnosis question names (`GrokPipeline.diagnose`)."""
    labels: list[str | None] = []
    for start in tqdm(range(0, len(samples), batch_size), desc="Diagnosis questions", unit="batch"):
        chunk = samples[start : start + batch_size]
        answers = pipeline.diagnose(cfp=[s.cfp for s in chunk], oct=[s.oct for s in chunk],
                                    biomarkers=[s.biomarkers for s in chunk], batch=True)
        labels += [answer.label for answer in answers]
    return labels


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
    dme_likelihood: bool = True,
    conditioning_rows: Sequence[dict] | None = None,
    diagnosis_question: bool = False,
) -> tuple[EvaluationResult, AblationResult | None]:
    """Score ``pipeline`` on ``samples``; with ``ablation`` also OCT-only and CFP-only (written to ablation.*).

    When every sample has a DME status (a graded set), the ``dme`` and ``dr_grade`` sections are added (DME
    ROC AUC from `dme_likelihood_scores` when ``dme_likelihood``, else from the parsed call) and the trivial
    baselines on the same eyes are written to baselines.json / baselines.md. ``conditioning_rows`` (Stage I
    SFT rows) add the ``conditioning`` section: `conditioning_gap` of the model on them. ``diagnosis_question``
    (for a model trained with diagnosis questions) adds ``diagnosis_question``: the same diagnosis metrics for
    its short answers (`diagnosis_answers`).
    """
    labels = [s.label for s in samples]
    references = [s.reference for s in samples] if all(s.reference for s in samples) else None
    graded = bool(samples) and all(s.dme is not None for s in samples)
    biomarkers = [s.biomarkers for s in samples]
    dme, dr_grades = ([s.dme for s in samples], [s.dr_grade for s in samples]) if graded else (None, None)
    base = functools.partial(
        evaluate_reports, labels=labels, references=references, biomarkers=biomarkers,
        ids=[s.id for s in samples], judge=judge, embeddings=embeddings, dme=dme, dr_grades=dr_grades,
    )

    def score(reports: list[str], modalities: frozenset[str]) -> dict[str, dict]:
        if graded and dme_likelihood:
            return base(reports, dme_scores=dme_likelihood_scores(pipeline, samples, reports, modalities))
        return base(reports)

    settings = MODALITY_SETTINGS if ablation else {"CFP+OCT": MODALITY_SETTINGS["CFP+OCT"]}
    result = run_modality_ablation(
        lambda data, modalities: generate_reports(pipeline, data, modalities, batch_size, desc=f"Reports ({'+'.join(sorted(modalities))})"),
        list(samples),
        score,
        settings,
    )
    evaluation = EvaluationResult(
        model=model_name, dataset=dataset_name, split=split, sections=dict(result.sections["CFP+OCT"]),
        config={"n": len(samples), "judge": getattr(judge, "model", None), "ablation": ablation,
                "dme_likelihood": graded and dme_likelihood},
    )
    if conditioning_rows is not None:
        gap = conditioning_gap(pipeline.model, pipeline.processor, conditioning_rows, batch_size=batch_size)
        evaluation.sections["conditioning"] = gap.to_dict()
    if diagnosis_question:
        answered = diagnosis_answers(pipeline, samples, batch_size)
        evaluation.sections["diagnosis_question"] = {**diagnosis_metrics(answered, labels, LABELS), "predictions": answered}
    out_dir = Path(out_dir)
    evaluation.write(out_dir)
    if graded:
        write_baselines(dr_dme_baselines(labels, dme, dr_grades, biomarkers), out_dir, dataset_name, split)
    if ablation:
        atomic_write_text(out_dir / "ablation.json", json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        atomic_write_text(out_dir / "ablation.md", result.to_markdown() + "\n")
    return evaluation, (result if ablation else None)


def write_baselines(baselines: dict[str, dict[str, dict]], out_dir: str | Path, dataset_name: str, split: str) -> str:
    """Write ``baselines.json`` and ``baselines.md`` (one table per baseline) atomically; returns the markdown."""
    results = [EvaluationResult(model=f"baseline: {name}", dataset=dataset_name, split=split, sections=sections)
               for name, sections in baselines.items()]
    markdown = "\n".join(r.to_markdown() for r in results)
    out_dir = Path(out_dir)
    rows = json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False)
    atomic_write_text(out_dir / "baselines.json", rows + "\n")
    atomic_write_text(out_dir / "baselines.md", markdown)
    return markdown
