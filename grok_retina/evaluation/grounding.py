"""The verifier's deterministic grounding scores (no judge needed), aggregated over a set of reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from grok_retina.verifier import verify_report

VERIFIER_SCORES: tuple[str, ...] = ("quantitative_accuracy", "descriptor_accuracy", "coverage", "grounding")


def grounding_metrics(
    reports: Sequence[str],
    biomarkers: Sequence[Mapping[str, object] | None],
    labels: Sequence[str | None] | None = None,
) -> dict:
    """Means of `verify_report`'s scores per report, and rates over reports.

    ``quantitative_accuracy`` / ``descriptor_accuracy`` of a report that quotes no value / no descriptor is
    1.0 (the verifier's convention); ``reports_without_values`` counts them so a vacuous 1.0 is visible.
    ``coverage`` is the share of abnormal biomarkers a report assesses; ``conclusion_consistency`` the share of
    conclusions that name a diagnosis, match the true label (when ``labels`` are given; GROK labels only) and
    do not contradict the evidence; ``pass_rate`` the share passing every verifier check.
    """
    labels = list(labels) if labels is not None else [None] * len(reports)
    if not len(reports) == len(biomarkers) == len(labels):
        raise ValueError(
            f"reports ({len(reports)}), biomarkers ({len(biomarkers)}) and labels ({len(labels)}) must have one entry per sample."
        )
    if not reports:
        raise ValueError("grounding_metrics needs at least one report.")
    results = [verify_report(r, b, label=l) for r, b, l in zip(reports, biomarkers, labels)]
    n = len(results)
    out: dict = {"n": n}
    for name in VERIFIER_SCORES:
        out[name] = sum(getattr(r, name) for r in results) / n
    out["conclusion_consistency"] = sum(r.conclusion_consistent for r in results) / n
    out["pass_rate"] = sum(r.passed for r in results) / n
    out["fabricated_per_report"] = sum(len(r.fabricated) for r in results) / n
    out["reports_without_values"] = sum(all(c.value_ok is None for c in r.claims) for r in results)
    return out
