"""Every prompt of grok-retina: the Stage I teacher prompts, the teacher's JSON answer and the report text
it renders to, and the student prompt GROK sees in SFT and at inference.

A report (the SFT completion) reads::

    Biomarker Assessments:
    - Central subfield thickness: 341.2 µm, thickened; in keeping with centre-involving oedema
    - ...
    Sub-inference:
    <2-4 sentences combining OCT and fundus findings>
    Conclusion: <one sentence naming the diagnosis>
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from processing.biomarkers import BIOMARKERS, format_biomarkers, get_biomarker, validate_biomarkers
from processing.labels import LABEL_DISPLAY, LABELS, check_dr_dme, dr_dme_diagnosis

from .guideline import AGE_SLOPE_PER_DECADE, LABEL_EVIDENCE, assess_all, descriptors, mention_phrases, thresholds

REPORT_SECTIONS: tuple[str, str, str] = ("Biomarker Assessments", "Sub-inference", "Conclusion")
MAX_REPORT_WORDS = 300
# A conclusion sentence naming the diagnosis {d}: one of the rules teacher's wordings and the DME likelihood probe.
DIAGNOSIS_CONCLUSION = "The most likely diagnosis is {d}."

# --- Student (GROK) ------------------------------------------------------------------------------------
STUDENT_SYSTEM_PROMPT = (
    "You are GROK, a retinal specialist assistant. You read a colour fundus photograph (CFP), an optical "
    "coherence tomography (OCT) B-scan and quantitative retinal biomarkers, and write grounded diagnostic reports."
)
_DIAGNOSES = ", ".join(LABEL_DISPLAY[label] for label in LABELS[:-1]) + f", or {LABEL_DISPLAY['Normal']}"
STUDENT_INSTRUCTION = (
    f"Write a grounded diagnostic report in three sections. '{REPORT_SECTIONS[0]}:' one line per relevant "
    "biomarker with its value and a descriptor against the normal range. "
    f"'{REPORT_SECTIONS[1]}:' how the OCT and fundus findings combine. "
    f"'{REPORT_SECTIONS[2]}:' one sentence naming the most likely diagnosis ({_DIAGNOSES}). "
    f"Use at most {MAX_REPORT_WORDS} words."
)


def _text(text: str) -> dict[str, str]:
    return {"type": "text", "text": text}


DIAGNOSIS_QUESTION = "What is the most likely diagnosis? Answer with the diagnosis only."


def _placeholders(has_cfp: bool, has_oct: bool) -> list[dict[str, Any]]:
    images = [{"type": "image", "modality": m} for m, present in (("cfp", has_cfp), ("oct", has_oct)) if present]
    return [*images, {"type": "biomarkers"}]


def build_student_messages(
    biomarkers: Mapping[str, object] | None, has_cfp: bool, has_oct: bool, question: str | None = None
) -> list[dict[str, Any]]:
    """System + user chat messages for GROK: image placeholders for the present modalities (CFP first), the
    biomarker placeholder, then the biomarker block and the instruction (or ``question``). Every content is a list
    of blocks, the TRL multimodal format; the processor's chat template turns ``{"type": "image", "modality": ...}``
    into image tokens and ``{"type": "biomarkers"}`` into the biomarker tokens of a model that has them (none
    otherwise)."""
    body = f"Quantitative biomarkers:\n{format_biomarkers(biomarkers)}\n\n{question or STUDENT_INSTRUCTION}"
    return [
        {"role": "system", "content": [_text(STUDENT_SYSTEM_PROMPT)]},
        {"role": "user", "content": [*_placeholders(has_cfp, has_oct), _text(body)]},
    ]


def build_diagnosis_messages(has_cfp: bool, has_oct: bool) -> list[dict[str, Any]]:
    """The short diagnosis question: the image and biomarker placeholders and `DIAGNOSIS_QUESTION`, without the
    biomarker table (a model reads the biomarkers here only through its biomarker tokens, if it has them)."""
    return [
        {"role": "system", "content": [_text(STUDENT_SYSTEM_PROMPT)]},
        {"role": "user", "content": [*_placeholders(has_cfp, has_oct), _text(DIAGNOSIS_QUESTION)]},
    ]


def diagnosis_answer(label: str, dr_grade: str | None = None, dme: str | None = None) -> str:
    """The answer to `DIAGNOSIS_QUESTION`: the diagnosis in words (with the DR grade and DME status when given)."""
    check_dr_dme(label, dr_grade, dme)
    words = dr_dme_diagnosis(dr_grade, dme) if dme is not None else LABEL_DISPLAY[label]
    return f"{words[0].upper()}{words[1:]}."


# --- Teacher (Stage I) ---------------------------------------------------------------------------------
def _fmt(name: str, value: float) -> str:
    return f"{value:.{get_biomarker(name).decimals}f}"


def guideline_table(age: float | None = None) -> str:
    """One line per biomarker: key, name, normal range and the descriptor bands (for ``age`` if given)."""
    lines = []
    for spec in BIOMARKERS:
        t, words, unit = thresholds(spec.name, age), descriptors(spec.name), f" {spec.unit}" if spec.unit else ""
        lines.append(
            f"- {spec.name} ({spec.display}): normal {_fmt(spec.name, t.low)}-{_fmt(spec.name, t.high)}{unit}; "
            f"'{words[1]}' below {_fmt(spec.name, t.low)} ('{words[0]}' below {_fmt(spec.name, t.marked_low)}); "
            f"'{words[3]}' above {_fmt(spec.name, t.high)} ('{words[4]}' above {_fmt(spec.name, t.marked_high)})"
        )
    return "\n".join(lines)


def _evidence_patterns() -> str:
    lines = []
    for label, evidence in LABEL_EVIDENCE.items():
        items = "; ".join(
            f"{get_biomarker(i.biomarker).display} {i.direction} ({i.meaning})" for i in evidence.items
        )
        lines.append(
            f"- {LABEL_DISPLAY[label]}: {evidence.summary}. Biomarkers: {items}. "
            f"Images: {', '.join(evidence.image_findings)}."
        )
    return "\n".join(lines)


TEACHER_JSON_SHAPE = (
    '{"biomarker_assessments": [{"biomarker": "<biomarker key from the guideline, e.g. central_subfield>", '
    '"value": <the measured value, a number>, "descriptor": "<the guideline descriptor>", '
    '"interpretation": "<a short clause on what it means, or an empty string>"}], '
    '"sub_inference": "<2-4 sentences>", "conclusion": "<one sentence naming the diagnosis>"}'
)

TEACHER_SYSTEM_PROMPT = f"""You are a senior ophthalmologist writing teaching reports that reason from quantitative retinal biomarkers, measured on OCT and colour fundus photographs, to a diagnosis, following the Eye-Guideline below.

The report has three parts:
1. Biomarker assessments: every biomarker outside its normal range, then the normal ones that matter for the diagnosis. For each, the measured value and the guideline descriptor.
2. Sub-inference: 2-4 sentences combining the OCT and fundus findings into the picture that leads to the diagnosis.
3. Conclusion: one sentence naming the diagnosis.

Rules:
- At most {MAX_REPORT_WORDS} words in total.
- Quote each value exactly as measured. The only numbers in the report are measured values: no percentages, counts, estimates or values for biomarkers marked "not available".
- Describe each value with the guideline descriptor of its band; never call a value thinned, thickened, reduced, increased or enlarged when it lies within normal limits, and never call an abnormal value normal.
- Write as if you reached the diagnosis yourself from the evidence: never say or imply that the diagnosis was given, provided, known or confirmed beforehand.
- Never say that a single OCT B-scan, slice or image was available; describe OCT findings simply as OCT findings.
- Do not mention these instructions, the guideline or JSON in the report.

Eye-Guideline, descriptor bands per biomarker (adults, reference age 55):
{guideline_table()}

Evidence patterns per diagnosis:
{_evidence_patterns()}

Answer with a single JSON object and nothing else, of this shape:
{TEACHER_JSON_SHAPE}"""

TEACHER_FEEDBACK_TEMPLATE = (
    "A grounding check of your previous answer found these problems:\n{findings}\n"
    "Write the report again, fixing every problem, as a single JSON object of the same shape."
)

DR_DME_INSTRUCTION = (
    "The Conclusion must state the diabetic retinopathy grade (no, non-proliferative or proliferative diabetic "
    "retinopathy) and whether there is diabetic macular oedema, in these words"
)

_IMAGE_CAPTIONS = {"cfp": "Colour fundus photograph:", "oct": "OCT B-scan through the fovea:"}


def build_teacher_messages(
    biomarkers: Mapping[str, object] | None,
    label: str,
    *,
    age: float | None = None,
    image_urls: Mapping[str, str] | None = None,
    feedback: str | None = None,
    dr_grade: str | None = None,
    dme: str | None = None,
) -> list[dict[str, Any]]:
    """OpenAI chat messages asking the teacher for the report of one eye whose diagnosis is ``label``.

    ``image_urls`` maps "cfp"/"oct" to (data) URLs attached after the text; ``feedback`` (the verifier's
    findings on a previous answer) adds a final user turn asking for a corrected report. With ``dme`` (and
    ``dr_grade``, None when ungraded) the diagnosis to reach names them (`processing.labels.dr_dme_diagnosis`)
    and the conclusion must state both; without them the prompt is unchanged.
    """
    if label not in LABEL_DISPLAY:
        raise ValueError(f"Unknown label {label!r}; valid labels are {', '.join(LABELS)}.")
    check_dr_dme(label, dr_grade, dme)
    diagnosis = LABEL_DISPLAY[label]
    if dme is not None:
        diagnosis = f"{dr_dme_diagnosis(dr_grade, dme)}. {DR_DME_INSTRUCTION}"
    values = validate_biomarkers(biomarkers)
    flags = [a for a in assess_all(values, age).values() if a.abnormal]
    flag_text = "\n".join(f"- {get_biomarker(a.name).display}: {a.descriptor}" for a in flags) or (
        "- every measured biomarker is within normal limits"
    )
    age_text = ""
    if age is not None:
        adjusted = "; ".join(
            f"{get_biomarker(n).display} normal {_fmt(n, thresholds(n, age).low)}-{_fmt(n, thresholds(n, age).high)}"
            f" {get_biomarker(n).unit}" for n in AGE_SLOPE_PER_DECADE
        )
        age_text = f"\nThe patient is {age:g} years old; age-adjusted limits: {adjusted}.\n"
    text = (
        f"Measured biomarkers:\n{format_biomarkers(values)}\n{age_text}\n"
        f"Guideline flags for this eye:\n{flag_text}\n\n"
        f"Diagnosis to reach (never reveal that it was given): {diagnosis}.\n"
        + ("The colour fundus photograph and the OCT B-scan are attached; use visible findings that agree with the "
           "measurements.\n" if image_urls else "")
        + "Return the JSON object."
    )
    user: Any = text
    if image_urls:
        user = [{"type": "text", "text": text}]
        for modality in ("cfp", "oct"):
            if modality in image_urls:
                user.append({"type": "text", "text": _IMAGE_CAPTIONS[modality]})
                user.append({"type": "image_url", "image_url": {"url": image_urls[modality]}})
    messages = [{"role": "system", "content": TEACHER_SYSTEM_PROMPT}, {"role": "user", "content": user}]
    if feedback:
        messages.append({"role": "user", "content": TEACHER_FEEDBACK_TEMPLATE.format(findings=feedback)})
    return messages


# --- The teacher's JSON answer and the report text -----------------------------------------------------
class ReportFormatError(ValueError):
    """A teacher answer that is not the JSON shape the prompt asks for; the message says what to fix."""


def _resolve_biomarker(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ReportFormatError(f"{where}.biomarker must be a biomarker key such as 'central_subfield', got {raw!r}.")
    key = raw.strip()
    names = mention_phrases().get(key.lower()) or ((key,) if key in {b.name for b in BIOMARKERS} else ())
    if len(names) != 1:
        raise ReportFormatError(
            f"{where}.biomarker {raw!r} is not one biomarker key of the guideline; use a key such as "
            "'central_subfield', 'gc_ipl' or 'cup_to_disc_ratio'."
        )
    return names[0]


def parse_teacher_answer(content: str | None) -> dict[str, Any]:
    """Parse and check a teacher answer; return it normalised (biomarker keys, float values, stripped text).

    Raises `ReportFormatError` naming the field at fault.
    """
    try:
        answer = json.loads(content or "")
    except json.JSONDecodeError as err:
        raise ReportFormatError(f"The answer is not valid JSON ({err.msg} at position {err.pos}).") from None
    if not isinstance(answer, dict):
        raise ReportFormatError(f"The answer must be a JSON object, got {type(answer).__name__}.")
    items = answer.get("biomarker_assessments")
    if not isinstance(items, list) or not items:
        raise ReportFormatError("'biomarker_assessments' must be a non-empty list of assessment objects.")
    assessments, seen = [], set()
    for i, item in enumerate(items):
        where = f"biomarker_assessments[{i}]"
        if not isinstance(item, dict):
            raise ReportFormatError(f"{where} must be an object with biomarker, value, descriptor, interpretation.")
        name = _resolve_biomarker(item.get("biomarker"), where)
        if name in seen:
            raise ReportFormatError(f"{where}: {name} is assessed twice; assess each biomarker once.")
        seen.add(name)
        value = item.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ReportFormatError(f"{where}.value must be the measured number for {name}, got {value!r}.")
        descriptor = item.get("descriptor")
        if not isinstance(descriptor, str) or not descriptor.strip():
            raise ReportFormatError(f"{where}.descriptor must be the guideline descriptor (e.g. 'thinned').")
        interpretation = item.get("interpretation") or ""
        if not isinstance(interpretation, str):
            raise ReportFormatError(f"{where}.interpretation must be a string (or empty).")
        assessments.append(
            {"biomarker": name, "value": float(value), "descriptor": descriptor.strip().lower(),
             "interpretation": interpretation.strip().rstrip(".")}
        )
    out: dict[str, Any] = {"biomarker_assessments": assessments}
    for key in ("sub_inference", "conclusion"):
        text = answer.get(key)
        if not isinstance(text, str) or not text.strip():
            raise ReportFormatError(f"'{key}' must be a non-empty string.")
        out[key] = " ".join(text.split())
    return out


def render_report(answer: Mapping[str, Any]) -> str:
    """The report text (SFT completion) of a parsed teacher answer."""
    lines = [f"{REPORT_SECTIONS[0]}:"]
    for item in answer["biomarker_assessments"]:
        spec = get_biomarker(item["biomarker"])
        line = f"- {spec.display}: {spec.format_value(item['value'])}, {item['descriptor']}"
        lines.append(f"{line}; {item['interpretation']}" if item.get("interpretation") else line)
    lines += [f"{REPORT_SECTIONS[1]}:", answer["sub_inference"], f"{REPORT_SECTIONS[2]}: {answer['conclusion']}"]
    return "\n".join(lines)
