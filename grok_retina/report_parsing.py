"""Reading report text: its sections, the diagnosis its conclusion names (negation-aware) with the DR grade
and DME status of a diabetic eye, and the biomarker mentions, numbers and descriptors that the grounding
verifier links together. Shared by Stage I, evaluation and inference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from processing.labels import DME_SYNONYMS, DR_GRADE_SYNONYMS, LABEL_SYNONYMS, LABELS, dr_dme_label

from .guideline import DESCRIPTOR_LEXICON, NEUTRAL_PHRASES, SEVERITY_MODIFIERS, mention_phrases
from .prompts import REPORT_SECTIONS

_SEP = r"[\s\-‐–]+"  # spaces and hyphens are interchangeable inside a phrase ("cup to disc" = "cup-to-disc")


def _phrase_pattern(phrases) -> str:
    """One regex alternative per phrase, factored as a token trie (fast on hundreds of phrases) and trying the
    longest continuation first; spaces and hyphens between tokens are interchangeable."""
    trie: dict = {}
    for phrase in phrases:
        node = trie
        for token in re.split(_SEP, phrase.lower().strip()):
            node = node.setdefault(token, {})
        node[""] = {}  # end of a phrase

    def pattern(node: dict) -> str:
        tokens = sorted((t for t in node if t), key=len, reverse=True)
        alternatives = []
        for token in tokens:
            child = node[token]
            rest = pattern(child) if any(child) else ""
            if not rest:
                alternatives.append(re.escape(token))
            else:
                optional = "?" if "" in child else ""
                alternatives.append(f"{re.escape(token)}(?:{_SEP}(?:{rest})){optional}")
        return "|".join(alternatives)

    return pattern(trie)


def _norm(text: str) -> str:
    return re.sub(_SEP, " ", text.lower())


# --- Sections ------------------------------------------------------------------------------------------
_HEADINGS = {"biomarker assessment": REPORT_SECTIONS[0], "sub inference": REPORT_SECTIONS[1],
             "subinference": REPORT_SECTIONS[1], "conclusion": REPORT_SECTIONS[2]}
_HEADING_RE = re.compile(
    r"^[ \t>#*_-]*(biomarker[ \t]+assessments?|sub[ \t-]?inferences?|conclusions?)[ \t*_]*(?::|$)[ \t*_]*",
    re.IGNORECASE | re.MULTILINE,
)


def split_sections(text: str) -> dict[str, str]:
    """``{heading: body}`` for the three `REPORT_SECTIONS` (body "" when the heading is absent). Headings
    may carry markdown (``## Conclusion``, ``**Sub-inference:**``); a body may start on the heading line."""
    out = dict.fromkeys(REPORT_SECTIONS, "")
    matches = list(_HEADING_RE.finditer(text))
    for match, following in zip(matches, [*matches[1:], None]):
        key = _HEADINGS[_norm(match.group(1)).rstrip("s")]
        body = text[match.end() : following.start() if following else len(text)].strip()
        out[key] = f"{out[key]}\n{body}".strip()
    return out


def text_before_conclusion(text: str) -> str:
    """The report up to its (last) Conclusion heading; all of it when there is none."""
    starts = [m.start() for m in _HEADING_RE.finditer(text) if _norm(m.group(1)).startswith("conclusion")]
    return text[: starts[-1]] if starts else text


# --- The diagnosis named by a conclusion ---------------------------------------------------------------
_NORMAL_PHRASE = (
    r"no(?:\s+(?:evidence|signs?)\s+of)?(?:\s+(?:ocular|retinal|eye|systemic))?(?:\s+or\s+(?:ocular|retinal|systemic))?"
    r"\s+(?:disease|pathology|abnormality|abnormalities)"
)
_NEGATION_CUE = re.compile(
    r"\b(?:no|not|without|nor|neither|absence\s+of|absent|lack\s+of|negative\s+for|rule[sd]?\s+out|ruling\s+out|"
    r"exclude[sd]?|excluding|rather\s+than|instead\s+of|unlikely|less\s+likely|against)\b",
    re.IGNORECASE,
)
_SCOPE_BREAK = re.compile(r"[.;:!?]|\b(?:but|however|although|though|whereas|while|yet)\b", re.IGNORECASE)
_POST_NEGATION = re.compile(
    r"^[\s,]*(?:is|was|are|seems|appears|has\s+been|have\s+been|can\s+be)?\s*"
    r"(?:unlikely|less\s+likely|excluded|ruled\s+out|not\s+(?:supported|present|seen|evident|likely))\b",
    re.IGNORECASE,
)
# Words that may stand between a negation cue and the diagnosis it negates ("no definite signs of", "not
# consistent with"); any other word ends the negation ("no signs of glaucoma, and the eye is healthy").
_NEGATION_FILLER = frozenset(
    "evidence sign signs feature features suggestion indication of or and nor any significant definite clear "
    "overt frank to suggest suggesting suggestive consistent compatible with typical for in keeping a an the is are "
    "was be likely appear appears seem seems".split()
)


@cache
def _label_re() -> tuple[re.Pattern, dict[str, str]]:
    lookup: dict[str, str] = {}
    for label in LABELS:
        for phrase in LABEL_SYNONYMS.get(label, ()):
            lookup[_norm(phrase)] = label
    alternatives = f"(?P<normal>{_NORMAL_PHRASE})|{_phrase_pattern(lookup)}"
    return re.compile(rf"(?<![\w'])(?:{alternatives})(?![\w'])", re.IGNORECASE), lookup


def _negated(text: str, start: int, end: int, others: list[tuple[int, int]]) -> bool:
    if _POST_NEGATION.match(text[end:]):
        return True
    cues = list(_NEGATION_CUE.finditer(text, 0, start))
    if not cues:
        return False
    cue = cues[-1]
    between = text[cue.end() : start]
    if _SCOPE_BREAK.search(between):
        return False
    for other_start, other_end in others:  # other diagnoses listed after the same cue are negated alike
        if cue.end() <= other_start and other_end <= start:
            between = between.replace(text[other_start:other_end], " ")
    return all(word.lower() in _NEGATION_FILLER for word in re.findall(r"[\w'-]+", between))


def labels_in(text: str) -> list[tuple[str, bool]]:
    """Every diagnosis named in ``text`` in order, as ``(label, negated)``."""
    pattern, lookup = _label_re()
    matches = list(pattern.finditer(text))
    spans = [m.span() for m in matches]
    out = []
    for match in matches:
        label = "Normal" if match.group("normal") else lookup[_norm(match.group(0))]
        out.append((label, _negated(text, *match.span(), [s for s in spans if s != match.span()])))
    return out


def conclusion_text(text: str) -> str:
    """The report's Conclusion section, or its last sentence when there is no such section."""
    scope = split_sections(text)[REPORT_SECTIONS[2]]
    if not scope:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n", text.strip()) if s.strip()]
        scope = sentences[-1] if sentences else ""
    return scope


def _diagnosis(scope: str) -> str | None:
    named = [label for label, negated in labels_in(scope) if not negated]
    diseases = [label for label in named if label != "Normal"]
    return diseases[0] if diseases else ("Normal" if named else None)


def parse_label(text: str) -> str | None:
    """The diagnosis (one of `LABELS`) named by the report's Conclusion section, or by its last sentence when
    there is no such section. Negated mentions ("no signs of glaucoma") are skipped; a disease wins over a
    normal finding; among diseases the first named wins. A conclusion that only rules out both diabetic
    retinopathy and macular oedema ("no diabetic retinopathy and no macular oedema", a graded set's healthy eye)
    names the label of grade "0" without DME (`labels.dr_dme_label`). None when no diagnosis is named."""
    scope = conclusion_text(text)
    diagnosis = _diagnosis(scope)
    if diagnosis is None:
        mentions = dr_dme_in(scope)
        ruled_out = {"DME" if key == "DME" else "DR" for key, negated in mentions if negated}
        if ruled_out == {"DR", "DME"} and all(negated for _, negated in mentions):
            return dr_dme_label("0", "no")
    return diagnosis


# --- DR grade and DME status named by a conclusion ------------------------------------------------------
_RETINOPATHY = ("diabetic retinopathy", "dr")  # an ungraded mention of diabetic retinopathy


@cache
def _dr_dme_re() -> tuple[re.Pattern, dict[str, str]]:
    lookup = {_norm(phrase): "DR" for phrase in _RETINOPATHY}
    lookup.update({_norm(phrase): grade for grade, phrases in DR_GRADE_SYNONYMS.items() for phrase in phrases})
    lookup.update({_norm(phrase): "DME" for phrase in DME_SYNONYMS})
    # "-" before a match is excluded too: "proliferative" inside "non-proliferative" names no grade
    return re.compile(rf"(?<![\w'-])(?:{_phrase_pattern(lookup)})(?![\w'])", re.IGNORECASE), lookup


def dr_dme_in(text: str) -> list[tuple[str, bool]]:
    """Every mention of diabetic retinopathy ("DR" ungraded, "NPDR", "PDR") or macular oedema ("DME") in
    ``text`` in order, as ``(key, negated)``; the diagnoses named around them count for negation lists."""
    pattern, lookup = _dr_dme_re()
    label_pattern, _ = _label_re()
    matches = list(pattern.finditer(text))
    spans = [m.span() for m in matches] + [m.span() for m in label_pattern.finditer(text)]
    return [
        (lookup[_norm(m.group(0))], _negated(text, *m.span(), [s for s in spans if s != m.span()])) for m in matches
    ]


def parse_dr_grade(text: str) -> str | None:
    """The DR grade ("0", "NPDR", "PDR") the conclusion states (see `conclusion_text`), negation-aware.

    The first non-negated NPDR/PDR mention wins; otherwise a negated mention of diabetic retinopathy ("no
    diabetic retinopathy", "without diabetic retinopathy"), or a conclusion of a healthy eye or another
    disease, means "0". None when the conclusion names diabetic retinopathy without a grade, or nothing.
    """
    scope = conclusion_text(text)
    mentions = dr_dme_in(scope)
    for key, negated in mentions:
        if key in ("NPDR", "PDR") and not negated:
            return key
    if any(key == "DR" and not negated for key, negated in mentions):
        return None
    if any(key == "DR" and negated for key, negated in mentions):
        return "0"
    diagnosis = _diagnosis(scope)
    return "0" if diagnosis not in (None, "DiabeticRetinopathy") else None


def parse_dme(text: str) -> str | None:
    """The DME status ("yes" / "no") the conclusion states, negation-aware: "yes" for a non-negated mention
    of macular oedema, "no" for a negated one ("without macular oedema") or for a diagnosis named without
    oedema. None when the conclusion names no diagnosis at all."""
    scope = conclusion_text(text)
    flags = [negated for key, negated in dr_dme_in(scope) if key == "DME"]
    if flags:
        return "no" if all(flags) else "yes"
    return "no" if _diagnosis(scope) is not None else None


# --- Mentions, numbers, descriptors --------------------------------------------------------------------
@dataclass(frozen=True)
class Mention:
    """A phrase naming a biomarker; ``names`` has several entries when the phrase is ambiguous."""

    start: int
    end: int
    text: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Number:
    """A number quoted in the text with its unit ("µm", "mm" or None)."""

    start: int
    end: int
    text: str
    value: float
    unit: str | None


@dataclass(frozen=True)
class Descriptor:
    """A qualitative word: the direction it asserts (low/normal/high/abnormal), severity 1 or 2 when a
    modifier says so, and whether it is negated ("not thinned")."""

    start: int
    end: int
    text: str
    status: str
    severity: int | None
    negated: bool


@cache
def _mention_re() -> tuple[re.Pattern, dict[str, tuple[str, ...]]]:
    lookup = {_norm(phrase): names for phrase, names in mention_phrases().items()}
    return re.compile(rf"(?<![\w/])(?:{_phrase_pattern(mention_phrases())})(?![\w/])", re.IGNORECASE), lookup


def find_mentions(text: str) -> list[Mention]:
    """Biomarker mentions (display names and aliases, longest match first)."""
    pattern, lookup = _mention_re()
    return [Mention(m.start(), m.end(), m.group(0), lookup[_norm(m.group(0))]) for m in pattern.finditer(text)]


_NUMBER_RE = re.compile(r"(?<![\w.,/-])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)(?!\d)")
_UNIT_RE = re.compile(r"\s?(µm|μm|um|microns?|mm)\b", re.IGNORECASE)
_NOT_A_MEASURE = re.compile(
    r"[A-Za-z_]"  # a letter straight after the digits: "3D", "95th", "2nd"
    r"|\s*(?:%|percent|per\s?cent|years?\b|yrs?\b|-year|year-old|decades?\b|SD\b|standard\s+deviations?|times\b)",
    re.IGNORECASE,
)


def find_numbers(text: str) -> list[Number]:
    """Numbers that may be measurements: not percentages, ages, counts below 10, ordinals or model names."""
    out = []
    for match in _NUMBER_RE.finditer(text):
        raw, rest = match.group(1), text[match.end() :]
        unit_match = _UNIT_RE.match(rest)
        if not unit_match and (_NOT_A_MEASURE.match(rest) or rest.startswith(".") and rest[1:2].isdigit()):
            continue
        value = float(raw.replace(",", ""))
        if not unit_match and "." not in raw and value < 10:
            continue
        unit = None
        if unit_match:
            unit = "mm" if unit_match.group(1).lower() == "mm" else "µm"
        end = match.end() + (unit_match.end() if unit_match else 0)
        out.append(Number(match.start(), end, text[match.start() : end], value, unit))
    return out


@cache
def _descriptor_re() -> re.Pattern:
    modifiers = "|".join(sorted(SEVERITY_MODIFIERS, key=len, reverse=True))
    words = _phrase_pattern(DESCRIPTOR_LEXICON)
    return re.compile(
        rf"(?<![\w-])(?:(?P<neutral>{_phrase_pattern(NEUTRAL_PHRASES)})|(?:(?P<mod>{modifiers})\s+)?(?P<word>{words}))"
        rf"(?![\w-])",
        re.IGNORECASE,
    )


_QUOTED_RANGE = re.compile(r"\s*(?:[:=(]\s*)?\d")  # "normal 63-84 µm", "(normal: 63-84)": a range, not a finding
_DESCRIPTOR_NEGATION = re.compile(r"\b(?:no|not|without|nor|neither|absence\s+of|lack\s+of)\b(?:\W+\w+){0,2}\W*$", re.I)


def find_descriptors(text: str) -> list[Descriptor]:
    """Qualitative descriptors with their asserted direction, severity and negation."""
    out = []
    for match in _descriptor_re().finditer(text):
        if match.group("neutral"):
            continue
        status = DESCRIPTOR_LEXICON[_norm(match.group("word"))]
        if status == "normal" and _QUOTED_RANGE.match(text, match.end()):
            continue
        severity = SEVERITY_MODIFIERS[match.group("mod").lower()] if match.group("mod") else None
        clause_start = max(text.rfind(mark, 0, match.start()) for mark in "\n;,.") + 1
        negated = bool(_DESCRIPTOR_NEGATION.search(text[clause_start : match.start()]))
        out.append(Descriptor(match.start(), match.end(), match.group(0), status, severity, negated))
    return out


_SEGMENT_BREAK = re.compile(r"\n|;|(?<=[.!?])\s+|\b(?:but|whereas|while|although)\b", re.IGNORECASE)


def segments(text: str) -> list[tuple[int, int]]:
    """Clause spans (between line breaks, semicolons, sentence ends and contrastive conjunctions) within which
    numbers and descriptors are linked to biomarker mentions."""
    cuts = [0, *(m.start() for m in _SEGMENT_BREAK.finditer(text)), len(text)]
    return [(a, b) for a, b in zip(cuts, cuts[1:]) if text[a:b].strip()]
