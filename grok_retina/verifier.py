"""The grounding verifier: does a report say what the biomarkers say?

Every number and qualitative descriptor in the report is linked to the nearest biomarker mention of its clause
and checked against the measured value and the guideline; the conclusion is checked against the label and the
evidence. Stage I uses it to accept, retry or drop teacher answers; evaluation and inference reuse it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import fmean

from processing.biomarkers import get_biomarker, validate_biomarkers
from processing.labels import LABEL_DISPLAY, LABELS, check_dr_dme, dr_dme_diagnosis

from .guideline import STRONG_EVIDENCE, assess_all, describe, score_labels, thresholds
from .prompts import MAX_REPORT_WORDS, REPORT_SECTIONS
from .report_parsing import (
    Descriptor,
    Mention,
    Number,
    find_descriptors,
    find_mentions,
    find_numbers,
    parse_dme,
    parse_dr_grade,
    parse_label,
    segments,
    split_sections,
)

DESCRIPTOR_MARGIN = 0.02  # a value within 2% of a band edge may be described by either band
REFERENCE_MATCH = 0.01  # a number within 1% of a band edge of its biomarker is a quoted limit, not a claim
UNNAMED_MATCH = 0.01  # a number with no biomarker in its clause is accepted if within 1% of a measured value

# Phrases that reveal how the data was produced (the paper forbids both).
LEAK_PATTERNS: tuple[str, ...] = (
    r"\b(?:given|provided|supplied|stated|known|confirmed|pre-?specified|reference)\s+(?:final\s+)?(?:diagnosis|label)",
    r"\bdiagnosis\s+(?:was|is|has\s+been)\s+(?:given|provided|supplied|stated|confirmed)",
    r"\b(?:as\s+)?(?:stated|given|indicated)\s+in\s+the\s+(?:prompt|instructions?|question)",
    r"\bground[\s-]truth\b",
    r"\b(?:a\s+single|one|only\s+one|only\s+a\s+single|the\s+single)\s+(?:OCT\s+)?(?:B-?scans?|slices?|cross-sections?|OCT\s+images?)",
    r"\b(?:provided|given|supplied|available)\s+(?:OCT\s+)?(?:B-?scan|slice)",
)
_LEAK_RE = re.compile("|".join(f"(?:{p})" for p in LEAK_PATTERNS), re.IGNORECASE)


@dataclass
class Claim:
    """What the report says about one biomarker in one clause: a ``cited_value`` and/or a ``descriptor``.
    ``biomarker`` is None for a number that matches no biomarker."""

    biomarker: str | None
    cited_value: float | None
    true_value: float | None
    descriptor: str | None
    ok: bool
    issue: str | None = None
    value_ok: bool | None = None
    descriptor_ok: bool | None = None


@dataclass
class VerificationResult:
    """Per-claim records, structural issues, the parsed conclusion and scores in [0, 1]."""

    claims: list[Claim]
    fabricated: list[Claim]
    descriptor_errors: list[Claim]
    value_errors: list[Claim]
    issues: list[str]
    conclusion_label: str | None
    label: str | None
    label_consistent: bool
    evidence_consistent: bool
    missed: list[str]
    quantitative_accuracy: float
    descriptor_accuracy: float
    coverage: float
    min_coverage: float
    scores_by_label: dict[str, float] = field(repr=False, default_factory=dict)
    dr_dme_expected: str | None = None  # the DR grade + DME diagnosis the conclusion must state, when given
    dr_dme_consistent: bool = True

    @property
    def conclusion_consistent(self) -> bool:
        return self.conclusion_label is not None and self.label_consistent and self.evidence_consistent

    @property
    def grounding(self) -> float:
        """Overall score: the mean of quantitative and descriptor accuracy, coverage and conclusion consistency."""
        return fmean(
            (self.quantitative_accuracy, self.descriptor_accuracy, self.coverage, float(self.conclusion_consistent))
        )

    @property
    def passed(self) -> bool:
        return (
            not self.issues
            and not self.fabricated
            and not self.value_errors
            and not self.descriptor_errors
            and self.conclusion_consistent
            and self.dr_dme_consistent
            and self.coverage >= self.min_coverage
        )

    def scores(self) -> dict[str, float]:
        return {
            "quantitative_accuracy": self.quantitative_accuracy,
            "descriptor_accuracy": self.descriptor_accuracy,
            "coverage": self.coverage,
            "grounding": self.grounding,
        }

    def findings(self) -> str:
        """The problems as a bulleted list, worded for the teacher that wrote the report ("OK" if none)."""
        lines = [f"- {issue}" for issue in self.issues]
        errors = {id(c): c for c in self.fabricated + self.value_errors + self.descriptor_errors}.values()
        lines += [f"- {c.issue}" for c in errors]
        if self.conclusion_label is None:
            lines.append("- The Conclusion names no diagnosis; name exactly one diagnosis in one sentence.")
        elif not self.label_consistent:
            lines.append(
                f"- The Conclusion names {LABEL_DISPLAY[self.conclusion_label]}, but the evidence must lead to "
                f"{LABEL_DISPLAY[self.label]}; conclude with it."
            )
        elif not self.evidence_consistent:
            diseases = {label: s for label, s in self.scores_by_label.items() if label != "Normal"}
            strongest = max(diseases, key=diseases.get)
            lines.append(
                f"- The Conclusion ({LABEL_DISPLAY[self.conclusion_label]}) contradicts the evidence, which shows a "
                f"clear pattern of {LABEL_DISPLAY[strongest]}; reconcile the reasoning with the findings."
            )
        if not self.dr_dme_consistent:
            lines.append(
                f"- The Conclusion must state the diabetic retinopathy grade and the macular oedema status: "
                f"{self.dr_dme_expected}."
            )
        if self.coverage < self.min_coverage:
            names = ", ".join(get_biomarker(n).display for n in self.missed)
            lines.append(f"- Abnormal biomarkers not assessed: {names}; assess them.")
        return "\n".join(lines) or "OK"


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * abs(b) + 1e-9


def _fmt(name: str, value: float) -> str:
    return get_biomarker(name).format_value(value)


def _in_unit(name: str, number: Number) -> float:
    """The number in the biomarker's unit (a µm biomarker quoted in mm is converted)."""
    return number.value * 1000 if number.unit == "mm" and get_biomarker(name).unit == "µm" else number.value


def _is_reference(name: str, value: float, age: float | None) -> bool:
    """A quoted band edge ("normal 225-305 µm"), for the given age or the reference age."""
    edges = thresholds(name, age).values() + thresholds(name).values()
    return any(_close(value, edge, REFERENCE_MATCH) for edge in edges)


def _check_number(names: tuple[str, ...], number: Number, values, age, tolerance) -> Claim | None:
    """A claim for a number linked to ``names`` (None when it is a quoted band edge)."""
    for name in names:
        true = values[name]
        if true is not None and _close(_in_unit(name, number), true, tolerance):
            return Claim(name, _in_unit(name, number), true, None, True, value_ok=True)
    if any(_is_reference(name, _in_unit(name, number), age) for name in names):
        return None
    present = [n for n in names if values[n] is not None]
    if not present:
        name = names[0]
        issue = (f"{get_biomarker(name).display} was not measured, but the report gives it a value "
                 f"({number.text}); never give values for missing biomarkers.")
        return Claim(name, _in_unit(name, number), None, None, False, issue, value_ok=False)
    name = present[0]
    cited, true = _in_unit(name, number), values[name]
    issue = (f"{get_biomarker(name).display}: the report gives {number.text} but the measured value is "
             f"{_fmt(name, true)} ({abs(cited - true) / abs(true):.0%} off); quote the measured value.")
    return Claim(name, cited, true, None, False, issue, value_ok=False)


def _acceptable(name: str, value: float, age: float | None) -> set[tuple[str, int]]:
    return {
        (a.status, a.severity)
        for a in (describe(name, value * (1 + s * DESCRIPTOR_MARGIN), age) for s in (-1, 0, 1))
    }


def _descriptor_ok(descriptor: Descriptor, name: str, value: float, age: float | None) -> bool:
    bands = _acceptable(name, value, age)
    if descriptor.negated:
        return any(_matches(descriptor.status, None, status, sev) is False for status, sev in bands)
    return any(_matches(descriptor.status, descriptor.severity, status, sev) for status, sev in bands)


def _matches(claimed: str, claimed_severity: int | None, status: str, severity: int) -> bool:
    if claimed == "abnormal":
        return status in ("low", "high")
    if claimed != status:
        return False
    return claimed == "normal" or claimed_severity is None or claimed_severity == severity


def _check_descriptor(names, descriptor: Descriptor, values, age) -> Claim:
    present = [n for n in names if values[n] is not None]
    if not present:
        name = names[0]
        issue = (f"{get_biomarker(name).display} was not measured, but the report describes it as "
                 f"'{descriptor.text}'; do not assess missing biomarkers.")
        return Claim(name, None, None, descriptor.text, False, issue, descriptor_ok=False)
    for name in present:
        if _descriptor_ok(descriptor, name, values[name], age):
            return Claim(name, None, values[name], descriptor.text, True, descriptor_ok=True)
    name = present[0]
    expected = describe(name, values[name], age)
    t, spec = thresholds(name, age), get_biomarker(name)
    shown = f"'not {descriptor.text}'" if descriptor.negated else f"'{descriptor.text}'"
    unit = f" {spec.unit}" if spec.unit else ""
    issue = (f"{spec.display} = {_fmt(name, values[name])} is '{expected.descriptor}' by the guideline (normal "
             f"{t.low:.{spec.decimals}f}-{t.high:.{spec.decimals}f}{unit}), but the report calls it {shown}.")
    return Claim(name, None, values[name], descriptor.text, False, issue, descriptor_ok=False)


_LIST_BREAK = re.compile(r",|\(|\)|\b(?:and|or|with)\b", re.IGNORECASE)


def _nearest(text: str, mentions: list[Mention], start: int, end: int, prefer_preceding: bool) -> Mention | None:
    """The mention a number or descriptor at [start, end) is about. Numbers take the nearest preceding mention
    (``prefer_preceding``); descriptors the nearest one not cut off by a comma or conjunction."""
    if not mentions:
        return None
    preceding = [m for m in mentions if m.end <= start]
    if prefer_preceding and preceding:
        return preceding[-1]

    def cost(m: Mention) -> tuple[bool, int]:
        gap = text[m.end : start] if m.end <= start else text[end : m.start]
        return bool(_LIST_BREAK.search(gap)), len(gap)

    return min(mentions, key=cost)


def _merge(group: list[Claim]) -> list[Claim]:
    """One record for the first value and the first descriptor about a mention; any others stay separate."""
    cited = [c for c in group if c.cited_value is not None]
    described = [c for c in group if c.cited_value is None]
    if not cited or not described:
        return group
    value, desc = cited[0], described[0]
    merged = Claim(
        value.biomarker, value.cited_value, value.true_value if value.true_value is not None else desc.true_value,
        desc.descriptor, value.ok and desc.ok, "; ".join(c.issue for c in (value, desc) if c.issue) or None,
        value.value_ok, desc.descriptor_ok,
    )
    return [merged, *cited[1:], *described[1:]]


def verify_report(
    report_text: str,
    biomarkers: Mapping[str, object] | None,
    label: str | None = None,
    tolerance: float = 0.10,
    *,
    age: float | None = None,
    min_coverage: float = 0.5,
    dr_grade: str | None = None,
    dme: str | None = None,
) -> VerificationResult:
    """Check ``report_text`` against the measured ``biomarkers`` (and the true ``label`` when given).

    A cited value passes within ``tolerance`` (relative) of the measurement; a descriptor passes when it names
    the guideline band of the value (with a 2% margin at band edges; "thinned" for a markedly thinned value is
    accepted, "markedly thinned" for a mildly thinned one is not). Numbers for missing biomarkers, or that
    match no biomarker, are fabricated. The conclusion must name ``label`` and must not contradict a clear
    evidence pattern (`guideline.score_labels`). ``coverage`` is the share of abnormal biomarkers mentioned;
    the report passes with no error, all sections, at most 300 words and ``coverage >= min_coverage``. With
    ``dme`` (and ``dr_grade``, None when ungraded) the conclusion must also state them (`parse_dme`,
    `parse_dr_grade`; an ungraded eye only needs the DME status).
    """
    if label is not None and label not in LABELS:
        raise ValueError(f"Unknown label {label!r}; valid labels are {', '.join(LABELS)}.")
    check_dr_dme(label, dr_grade, dme)
    values = validate_biomarkers(biomarkers)
    text = report_text or ""
    issues = []
    sections = split_sections(text)
    missing = [name for name in REPORT_SECTIONS if not sections[name]]
    if missing:
        issues.append(f"Missing section(s): {', '.join(missing)}; use the headings {', '.join(REPORT_SECTIONS)}.")
    words = len(text.split())
    if words > MAX_REPORT_WORDS:
        issues.append(f"The report has {words} words; shorten it to at most {MAX_REPORT_WORDS}.")
    for leak in dict.fromkeys(m.group(0) for m in _LEAK_RE.finditer(text)):
        issues.append(f"The report reveals how it was produced ('{leak}'); remove that wording.")

    mentions, numbers, descriptors = find_mentions(text), find_numbers(text), find_descriptors(text)
    claims: list[Claim] = []
    mentioned: set[str] = set()
    for a, b in segments(text):
        local = [m for m in mentions if a <= m.start and m.end <= b]
        by_mention: dict[Mention, list[Claim]] = {}
        for number in (n for n in numbers if a <= n.start < b):
            mention = _nearest(text, local, number.start, number.end, prefer_preceding=True)
            if mention is None:
                claims.append(_unnamed_number(number, values))
                continue
            claim = _check_number(mention.names, number, values, age, tolerance)
            if claim is not None:
                by_mention.setdefault(mention, []).append(claim)
        for descriptor in (d for d in descriptors if a <= d.start < b):
            mention = _nearest(text, local, descriptor.start, descriptor.end, prefer_preceding=False)
            if mention is not None:
                resolved = [c.biomarker for c in by_mention.get(mention, []) if c.value_ok]
                names = tuple(resolved[:1]) or mention.names
                by_mention.setdefault(mention, []).append(_check_descriptor(names, descriptor, values, age))
        for mention in local:
            group = by_mention.get(mention, [])
            mentioned.update({c.biomarker for c in group if c.ok} or set(mention.names))
            claims.extend(_merge(group))

    fabricated = [c for c in claims if not c.ok and c.true_value is None]
    value_errors = [c for c in claims if c.value_ok is False and c.true_value is not None]
    descriptor_errors = [c for c in claims if c.descriptor_ok is False and c.true_value is not None]
    value_claims = [c for c in claims if c.value_ok is not None]
    descriptor_claims = [c for c in claims if c.descriptor_ok is not None]

    assessments = assess_all(values, age)
    abnormal = [name for name, a in assessments.items() if a.abnormal]
    missed = [name for name in abnormal if name not in mentioned]
    conclusion_label = parse_label(text)
    scores = score_labels(values, age)
    return VerificationResult(
        claims=claims,
        fabricated=fabricated,
        descriptor_errors=descriptor_errors,
        value_errors=value_errors,
        issues=issues,
        conclusion_label=conclusion_label,
        label=label,
        label_consistent=label is None or conclusion_label == label,
        evidence_consistent=conclusion_label is not None and _evidence_consistent(conclusion_label, scores),
        missed=missed,
        quantitative_accuracy=sum(c.value_ok for c in value_claims) / len(value_claims) if value_claims else 1.0,
        descriptor_accuracy=(
            sum(c.descriptor_ok for c in descriptor_claims) / len(descriptor_claims) if descriptor_claims else 1.0
        ),
        coverage=1 - len(missed) / len(abnormal) if abnormal else 1.0,
        min_coverage=min_coverage,
        scores_by_label=scores,
        dr_dme_expected=dr_dme_diagnosis(dr_grade, dme) if dme is not None else None,
        dr_dme_consistent=dme is None or (
            parse_dme(text) == dme and (dr_grade is None or parse_dr_grade(text) == dr_grade)
        ),
    )


def _unnamed_number(number: Number, values) -> Claim:
    """A number with no biomarker in its clause: a measured value quoted bare, or a fabrication."""
    for name, true in values.items():
        if true is not None and _close(_in_unit(name, number), true, UNNAMED_MATCH):
            return Claim(name, _in_unit(name, number), true, None, True, value_ok=True)
    issue = f"The number {number.text} matches no measured biomarker; remove it or quote a measured value."
    return Claim(None, number.value, None, None, False, issue, value_ok=False)


def _evidence_consistent(conclusion: str, scores: Mapping[str, float]) -> bool:
    """A conclusion contradicts the evidence when another disease shows a clear pattern (score >= 0.5) while
    the concluded one shows none, or when it is Normal despite a clear disease pattern."""
    others = max((s for label, s in scores.items() if label not in ("Normal", conclusion)), default=0.0)
    if conclusion == "Normal":
        return others < STRONG_EVIDENCE
    return scores[conclusion] > 0 or others < STRONG_EVIDENCE
