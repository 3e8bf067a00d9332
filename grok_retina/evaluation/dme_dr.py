"""DME and DR-grade metrics for graded sets (the real DME/DR set): what the reports' conclusions state
against the dataset's ``dme`` / ``dr_grade`` columns, and the trivial baselines to read them against.

- **DME**: the call is `report_parsing.parse_dme` of each report (precision, recall and F1 of "yes",
  accuracy, confusion matrix with an unparsed column). The ROC AUC ranks a *score*: the model's likelihood
  ratio of a DME conclusion over a no-DME one when given (`gou.dme_likelihood_scores`), else the binary call
  itself, whose AUC equals the balanced accuracy of the call. The section's ``score`` says which.
- **DR grade**: `report_parsing.parse_dr_grade` against ("0", "NPDR", "PDR"): macro-F1, accuracy,
  per class and confusion matrix (`classification.diagnosis_metrics`); eyes of unknown grade are left out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from grok_retina.guideline import thresholds
from grok_retina.report_parsing import parse_dme, parse_dr_grade
from processing.labels import DME_STATUSES, DR_GRADES, LABELS

from .classification import UNPARSED, confusion_matrix, diagnosis_metrics, per_class_metrics, roc_auc

PARSE_SCORE = "the report's DME call (1 yes, 0 no or unparsed); its ROC AUC is the call's balanced accuracy"
LIKELIHOOD_SCORE = (
    "log P(DME conclusion) - log P(no-DME conclusion): the model's log-likelihoods of two conclusions stating the "
    "grade the report states, with and without DME, after the prompt, the images and the report's text before "
    "its Conclusion"
)
THICKNESS_SCORE = "central subfield thickness (µm; missing ranks lowest); call: thickened beyond the guideline's normal limit"


def _check_references(name: str, values: Sequence, allowed: Sequence[str], allow_none: bool) -> None:
    for i, value in enumerate(values):
        if value is None and allow_none:
            continue
        if value not in allowed:
            raise ValueError(f"{name}[{i}] = {value!r} is not one of {tuple(allowed)}; fix the dataset's {name} column.")


def dme_metrics(
    calls: Sequence[str | None], references: Sequence[str], scores: Sequence[float] | None = None,
    score: str = PARSE_SCORE,
) -> dict:
    """DME ("yes") precision / recall / F1 / accuracy of ``calls`` ("yes", "no", None unparsed) against
    ``references``, and the ROC AUC of ``scores`` (default: the calls as 1/0) described by ``score``."""
    _check_references("dme", references, DME_STATUSES, allow_none=False)
    if scores is None:
        scores, score = [float(call == "yes") for call in calls], PARSE_SCORE
    if len(scores) != len(references):
        raise ValueError(f"scores has {len(scores)} items for {len(references)} references; give one per eye.")
    row = per_class_metrics(calls, references, DME_STATUSES)["yes"]
    n = len(references)
    return {
        "n": n,
        "n_positive": sum(r == "yes" for r in references),
        "roc_auc": roc_auc(scores, [int(r == "yes") for r in references]),
        "score": score,
        "precision": row["precision"],
        "recall": row["recall"],
        "f1": row["f1"],
        "accuracy": sum(c == r for c, r in zip(calls, references)) / n if n else None,
        "unparsed": sum(c is None for c in calls),
        "labels": list(DME_STATUSES),
        "confusion_matrix": confusion_matrix(calls, references, DME_STATUSES),
        "confusion_columns": [*DME_STATUSES, UNPARSED],
        "predictions": list(calls),
        "scores": [s if math.isfinite(s) else None for s in scores],
    }


def dr_grade_metrics(predictions: Sequence[str | None], references: Sequence[str | None]) -> dict:
    """`diagnosis_metrics` over `DR_GRADES` on the eyes whose reference grade is known."""
    _check_references("dr_grade", references, DR_GRADES, allow_none=True)
    keep = [i for i, grade in enumerate(references) if grade is not None]
    if not keep:
        raise ValueError("every dr_grade reference is None; the DR-grade metrics need graded eyes.")
    kept = [predictions[i] for i in keep]
    out = diagnosis_metrics(kept, [references[i] for i in keep], DR_GRADES)
    return {**out, "excluded_ungraded": len(references) - len(keep), "predictions": kept}


def report_dr_dme_metrics(
    reports: Sequence[str], dme: Sequence[str], dr_grades: Sequence[str | None],
    dme_scores: Sequence[float] | None = None,
) -> dict[str, dict]:
    """``{"dme": ..., "dr_grade": ...}`` for generated ``reports``; ``dme_scores`` rank eyes for the AUC
    (`LIKELIHOOD_SCORE`), else the parsed call does."""
    for name, values in (("dme", dme), ("dr_grades", dr_grades), ("dme_scores", dme_scores)):
        if values is not None and len(values) != len(reports):
            raise ValueError(f"{name} has {len(values)} entries for {len(reports)} reports; give one per report.")
    return {
        "dme": dme_metrics([parse_dme(r) for r in reports], dme, dme_scores,
                           PARSE_SCORE if dme_scores is None else LIKELIHOOD_SCORE),
        "dr_grade": dr_grade_metrics([parse_dr_grade(r) for r in reports], dr_grades),
    }


def dr_dme_baselines(
    labels: Sequence[str], dme: Sequence[str], dr_grades: Sequence[str | None],
    biomarkers: Sequence[Mapping[str, object] | None] | None = None,
) -> dict[str, dict[str, dict]]:
    """Trivial baselines on the same eyes, as ``{baseline: sections}``:

    - ``majority class``: every eye gets the most frequent reference label, DME status and grade;
    - ``central subfield thickness`` (when ``biomarkers`` are given): DME scored by the measured central
      subfield thickness, called where the guideline describes it as thickened (`THICKNESS_SCORE`).
    """
    def majority(values: Sequence) -> str:
        return Counter(v for v in values if v is not None).most_common(1)[0][0]

    n = len(labels)
    out = {
        "majority class": {
            "diagnosis": diagnosis_metrics([majority(labels)] * n, labels, LABELS),
            "dme": dme_metrics([majority(dme)] * n, dme),
            "dr_grade": dr_grade_metrics([majority(dr_grades)] * n, dr_grades),
        }
    }
    if biomarkers is not None:
        limit = thresholds("central_subfield").high
        values = [(b or {}).get("central_subfield") for b in biomarkers]
        scores = [-math.inf if v is None else float(v) for v in values]
        calls = ["yes" if s > limit else "no" for s in scores]
        out["central subfield thickness"] = {"dme": dme_metrics(calls, dme, scores, THICKNESS_SCORE)}
        out["central subfield thickness"]["dme"]["missing"] = sum(v is None for v in values)
    return out

