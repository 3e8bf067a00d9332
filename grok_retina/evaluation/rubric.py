"""The 8-item clinical rubric of the Grounded Ophthalmic Understanding benchmark: items, judge prompt,
expected JSON and its validation. The one place the rubric is defined.

Seven items award points; ``ErrorSeverityPenalty`` subtracts 0..15. The total is the sum, floored at 0,
so it lies in [0, 100].
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from processing.biomarkers import format_biomarkers
from processing.labels import LABEL_DISPLAY


@dataclass(frozen=True)
class RubricItem:
    """One rubric item: its JSON key, the allowed score range and what earns (or costs) points."""

    name: str
    low: int
    high: int
    description: str

    @property
    def max_points(self) -> int:
        """The points at stake: ``high`` for a scored item, ``-low`` for the penalty."""
        return self.high if self.high > 0 else -self.low


RUBRIC_ITEMS: tuple[RubricItem, ...] = (
    RubricItem(
        "DiagnosisAccuracy",
        low=0,
        high=20,
        description=(
            "The conclusion names the true diagnosis. Full points for the correct diagnosis stated as the main "
            "conclusion; partial points when it is only a secondary or differential diagnosis, or when the disease "
            "family is right but the entity is wrong; 0 for a wrong, missing or non-committal diagnosis."
        ),
    ),
    RubricItem(
        "QuantitativeAccuracy",
        low=0,
        high=20,
        description=(
            "Every number quoted (thicknesses in µm, cup-to-disc ratio, AV ratio, tortuosity, fractal dimension) "
            "matches the measured biomarkers in value and unit. Deduct for each misquoted, invented or wrongly "
            "rounded value; 0 when most quoted values are wrong or none are quoted."
        ),
    ),
    RubricItem(
        "QualitativeAccuracy",
        low=0,
        high=15,
        description=(
            "Each qualitative descriptor agrees with the value against its normal range: thinned/thickened, "
            "enlarged cup, narrowed arterioles, increased tortuosity, reduced vascular complexity. Deduct for "
            "calling a normal value abnormal, an abnormal value normal, or the wrong direction."
        ),
    ),
    RubricItem(
        "EvidenceGrounding",
        low=0,
        high=10,
        description=(
            "Findings and inferences cite the specific measured biomarkers or visible image features that support "
            "them. Deduct for unsupported claims: lesions, measurements or history that the inputs do not show."
        ),
    ),
    RubricItem(
        "ReasoningConsistency",
        low=0,
        high=15,
        description=(
            "The sub-inferences follow from the biomarker assessments and the conclusion follows from the "
            "sub-inferences, without contradiction (for example declaring all measures normal and then diagnosing "
            "disease, or attributing a finding to a disease it does not indicate)."
        ),
    ),
    RubricItem(
        "CoverageCompleteness",
        low=0,
        high=10,
        description=(
            "All clinically relevant abnormal biomarkers and the key findings of the reference report are "
            "addressed, and the report has its biomarker assessments, sub-inference and conclusion sections."
        ),
    ),
    RubricItem(
        "ImageBiomarkerAlignment",
        low=0,
        high=10,
        description=(
            "OCT findings are attributed to OCT measures and fundus findings to CFP measures, and the two "
            "modalities are combined coherently (for example GC-IPL/RNFL thinning on OCT with an enlarged cup on "
            "the fundus photograph for glaucoma)."
        ),
    ),
    RubricItem(
        "ErrorSeverityPenalty",
        low=-15,
        high=0,
        description=(
            "A penalty for clinically significant errors: 0 when there are none; about -5 for minor errors "
            "unlikely to change management; about -10 for errors that misstate severity or could alter "
            "management; -15 for dangerous errors such as missing sight-threatening disease or false reassurance."
        ),
    ),
)
RUBRIC_BY_NAME: dict[str, RubricItem] = {item.name: item for item in RUBRIC_ITEMS}
RUBRIC_NAMES: tuple[str, ...] = tuple(RUBRIC_BY_NAME)

assert sum(item.high for item in RUBRIC_ITEMS) == 100

JUDGE_SYSTEM_PROMPT = (
    "You are a senior ophthalmologist grading an AI-generated retinal diagnosis report. The report was written "
    "from a colour fundus photograph, a macular OCT B-scan and measured biomarkers. Grade it against the "
    "measured biomarkers, the true diagnosis and, when given, the reference report, item by item:\n\n"
    + "\n".join(f"- {item.name} ({item.low} to {item.high} points): {item.description}" for item in RUBRIC_ITEMS)
    + "\n\nScores are integers within each item's range; ErrorSeverityPenalty is 0 or negative. Reply with only "
    "a JSON object, no markdown, exactly of this shape, with a one- or two-sentence rationale per item:\n"
    + "{\n"
    + ",\n".join(
        f' "{item.name}": {{"score": <integer {item.low} to {item.high}>, "rationale": "<why>"}}'
        for item in RUBRIC_ITEMS
    )
    + "\n}"
)

JUDGE_USER_TEMPLATE = """True diagnosis: {label}

Measured biomarkers:
{biomarkers}

Reference report:
{reference}

Report to grade:
{report}"""

RETRY_TEMPLATE = (
    "Your reply could not be used: {error}\n"
    'Reply again with only the complete JSON object, all {n} items, each {{"score": integer, "rationale": string}}.'
)


def build_judge_messages(
    report: str, reference: str | None = None, biomarkers: Mapping[str, object] | None = None, label: str | None = None
) -> list[dict[str, str]]:
    """The system + user chat messages asking the judge to grade ``report``.

    ``label`` is the true diagnosis (a GROK label is shown with its full name; any other string as is);
    ``reference`` and ``biomarkers`` may be None when the dataset has none.
    """
    shown_label = (
        "not provided" if label is None else f"{label} ({LABEL_DISPLAY[label]})" if label in LABEL_DISPLAY else label
    )
    user = JUDGE_USER_TEMPLATE.format(
        label=shown_label,
        biomarkers=format_biomarkers(biomarkers) if biomarkers else "not provided",
        reference=reference or "not available; grade against the biomarkers and the true diagnosis.",
        report=report,
    )
    return [{"role": "system", "content": JUDGE_SYSTEM_PROMPT}, {"role": "user", "content": user}]


class JudgementError(ValueError):
    """A judge reply that is not the expected JSON; the message names each offending item."""


@dataclass(frozen=True)
class Judgement:
    """A validated judgement: per-item integer scores and rationales."""

    scores: dict[str, int]
    rationales: dict[str, str]

    @property
    def total(self) -> int:
        """Sum of the item scores (penalty included), floored at 0: in [0, 100]."""
        return max(0, sum(self.scores.values()))

    def to_dict(self) -> dict:
        items = {name: {"score": self.scores[name], "rationale": self.rationales[name]} for name in RUBRIC_NAMES}
        return {"items": items, "total": self.total}


_INTEGER_TEXT = re.compile(r"[+-]?\d+(?:\.0*)?")


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
        return int(float(value))
    return None


def validate_judgement(obj: object) -> Judgement:
    """Check a decoded judge reply: all 8 items, each ``{"score": integer-ish, "rationale": str}`` in range.

    Unknown extra keys (a judge's own "Total", say) are ignored. Raises `JudgementError` listing every problem.
    """
    if not isinstance(obj, Mapping):
        raise JudgementError(f"expected a JSON object keyed by the rubric items, got {type(obj).__name__}.")
    problems: list[str] = []
    missing = [name for name in RUBRIC_NAMES if name not in obj]
    if missing:
        problems.append(f"missing items: {', '.join(missing)}")
    scores: dict[str, int] = {}
    rationales: dict[str, str] = {}
    for item in RUBRIC_ITEMS:
        if item.name not in obj:
            continue
        entry = obj[item.name]
        if not isinstance(entry, Mapping):
            problems.append(f'{item.name} must be an object {{"score": int, "rationale": str}}, got {entry!r}')
            continue
        score = _as_int(entry.get("score"))
        if score is None:
            problems.append(f"{item.name}.score must be an integer, got {entry.get('score')!r}")
        elif not item.low <= score <= item.high:
            problems.append(f"{item.name}.score must be between {item.low} and {item.high}, got {score}")
        rationale = entry.get("rationale")
        if not isinstance(rationale, str):
            problems.append(f"{item.name}.rationale must be a string, got {rationale!r}")
        if score is not None and item.low <= score <= item.high and isinstance(rationale, str):
            scores[item.name], rationales[item.name] = score, rationale
    if problems:
        raise JudgementError("; ".join(problems) + ".")
    return Judgement(scores, rationales)


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_judgement_text(text: str | None) -> Judgement:
    """Decode a judge's reply (bare JSON, or JSON in a code fence or surrounding prose) and validate it."""
    if not text or not text.strip():
        raise JudgementError("the reply is empty.")
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise JudgementError("the reply contains no JSON object.")
    try:
        obj = json.loads(body[start : end + 1])
    except json.JSONDecodeError as exc:
        raise JudgementError(
            f"the reply is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})."
        ) from None
    return validate_judgement(obj)
