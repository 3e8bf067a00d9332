"""Score a set of generated reports on every GOU metric whose inputs are available, in one call."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

from grok_retina.report_parsing import parse_label
from processing.labels import LABELS

from .classification import diagnosis_metrics
from .dme_dr import report_dr_dme_metrics
from .grounding import grounding_metrics
from .judge import JudgeSample, RubricJudge, summarise_judgements
from .text_metrics import corpus_bleu, embedding_similarity, rouge_l


def report_text_metrics(
    reports: Sequence[str],
    references: Sequence[str],
    embedding_model: str | Path | None = None,
    embeddings: bool = True,
) -> dict:
    """``{"bleu", "rouge_l", "embedding_similarity"}``; the last is None when disabled or MiniLM is absent."""
    return {
        "bleu": corpus_bleu(reports, references),
        "rouge_l": rouge_l(reports, references),
        "embedding_similarity": embedding_similarity(reports, references, embedding_model) if embeddings else None,
    }


def evaluate_reports(
    reports: Sequence[str],
    labels: Sequence[str] | None = None,
    references: Sequence[str] | None = None,
    biomarkers: Sequence[Mapping[str, object] | None] | None = None,
    *,
    ids: Sequence[str] | None = None,
    judge: RubricJudge | None = None,
    embedding_model: str | Path | None = None,
    embeddings: bool = True,
    dme: Sequence[str] | None = None,
    dr_grades: Sequence[str | None] | None = None,
    dme_scores: Sequence[float] | None = None,
) -> dict[str, dict]:
    """The metric sections for ``reports`` (one per sample, in order), each computed when its inputs are given.

    - ``diagnosis`` (``labels``, GROK labels): the label `parse_label` reads from each conclusion;
    - ``text`` (``references``): BLEU-4, ROUGE-L and MiniLM similarity (``embeddings=False`` skips it);
    - ``grounding`` (``biomarkers``): the verifier's scores, against ``labels`` when given;
    - ``rubric`` (``judge``): the 8-item judge, with failures and token usage;
    - ``dme`` and ``dr_grade`` (``dme`` and ``dr_grades``, a graded set): the DME status and DR grade the
      conclusions state (`dme_dr.report_dr_dme_metrics`; ``dme_scores`` rank eyes for the DME ROC AUC).

    Runs the judge with ``asyncio.run``, so call it outside a running event loop.
    """
    n = len(reports)
    if (dme is None) != (dr_grades is None) or dme_scores is not None and dme is None:
        raise ValueError("give dme and dr_grades together (and dme_scores only with them), one per report.")
    for name, values in (("labels", labels), ("references", references), ("biomarkers", biomarkers), ("ids", ids)):
        if values is not None and len(values) != n:
            raise ValueError(
                f"{name} has {len(values)} entries for {n} reports; give one per report, in the same order."
            )
    sections: dict[str, dict] = {}
    if labels is not None:
        predictions = [parse_label(report) for report in reports]
        sections["diagnosis"] = diagnosis_metrics(predictions, labels, LABELS)
        sections["diagnosis"]["predictions"] = predictions
    if dme is not None:
        sections.update(report_dr_dme_metrics(reports, dme, dr_grades, dme_scores))
    if references is not None:
        sections["text"] = report_text_metrics(reports, references, embedding_model, embeddings)
    if biomarkers is not None:
        sections["grounding"] = grounding_metrics(reports, biomarkers, labels)
    if judge is not None:
        samples = [
            JudgeSample(
                report,
                references[i] if references is not None else None,
                biomarkers[i] if biomarkers is not None else None,
                labels[i] if labels is not None else None,
                ids[i] if ids is not None else None,
            )
            for i, report in enumerate(reports)
        ]
        outcomes = asyncio.run(judge.judge_many(samples))
        sections["rubric"] = summarise_judgements(outcomes)
    return sections
