"""An offline teacher that writes grounded reports from the Eye-Guideline, so Stage I runs with no API.

Every number it writes is the measured value, every descriptor the guideline band, the conclusion names the
label (with the DR grade and DME status when the sample has them); the wording varies across samples (several
templates per sentence type, chosen per sample id).
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from processing.biomarkers import BIOMARKERS, get_biomarker
from processing.labels import LABEL_DISPLAY, dr_dme_diagnosis

from ..guideline import LABEL_EVIDENCE, Assessment, assess_all, evidence_for
from ..prompts import DIAGNOSIS_CONCLUSION, MAX_REPORT_WORDS, render_report
from .base import Teacher, TeacherOutput, TeacherSample, Usage

_ORDER = {spec.name: i for i, spec in enumerate(BIOMARKERS)}
_REGIONS = {"central": "central", "inner": "inner ring", "outer": "outer ring", "average": "average"}
_ACRONYMS = ("GC-IPL", "RPE", "RNFL", "INL")

SUPPORT_CLAUSES = ("suggesting {m}", "in keeping with {m}", "consistent with {m}", "pointing to {m}",
                   "compatible with {m}", "reflecting {m}")
OTHER_CLAUSES = ("", "", "a non-specific deviation", "of uncertain significance in isolation",
                 "not specific on its own")
# (template, form): form 0 lists "the X is thinned", form 1 lists "a thinned X".
FINDING_SENTENCES = {
    "oct": (("On OCT, {items}.", 0), ("OCT shows {items}.", 1), ("The OCT measurements show {items}.", 1),
            ("Structurally, {items}.", 0)),
    "cfp": (("On the fundus photograph, {items}.", 0), ("Fundus vasculometry shows {items}.", 1),
            ("The fundus photograph shows {items}.", 1), ("In the retinal vasculature, {items}.", 0)),
}
LINK_SENTENCES = ("Together these point to {m}.", "This combination indicates {m}.",
                  "Taken together, they reflect {m}.", "These findings fit {m}.", "The pattern is typical of {m}.")
OTHER_SENTENCES = ("Other deviations ({items}) are non-specific.", "The remaining deviations ({items}) do not "
                   "change the interpretation.", "Isolated changes in the {items} carry less weight.")
HEDGES = {
    "AMD": "early macular degeneration may leave these summary thickness measures unchanged",
    "Glaucoma": "early glaucoma can precede measurable structural loss",
    "Diabetes": "in diabetes without retinopathy the retina may remain structurally unremarkable",
    "Hypertension": "systemic hypertension can be present with few quantitative retinal changes",
    "Alzheimer": "retinal changes of Alzheimer's disease are often subtle",
    "DiabeticRetinopathy": "mild non-proliferative retinopathy may not alter macular thickness",
}
HEDGE_SENTENCES = ("The measurements show no specific pattern, and {h}.", "No distinctive quantitative pattern "
                   "is present; {h}.", "The quantitative profile is largely unremarkable, but {h}.")
NORMAL_SENTENCES = ("The {items} are all within normal limits.", "Key measures, the {items}, lie within normal "
                    "limits.", "Values for the {items} are within normal limits.")
NORMAL_LINKS = ("There is no sign of optic neuropathy, macular disease or vascular change.",
                "Structure and vasculature both look healthy.", "Neither the OCT nor the fundus measures suggest "
                "disease.")
CONCLUSIONS = ("Taken together, the findings are most consistent with {d}.",
               "Overall, the evidence supports a diagnosis of {d}.",
               "The combined OCT and fundus picture points to {d}.",
               "In summary, these findings indicate {d}.",
               DIAGNOSIS_CONCLUSION)
NORMAL_CONCLUSIONS = ("The examination is within normal limits, with no ocular or systemic disease.",
                      "Overall, there is no ocular or systemic disease.",
                      "There are no signs of glaucoma, macular degeneration or diabetic retinopathy; the eye appears "
                      "healthy.",
                      "In summary, no ocular or systemic disease is evident.")
# A healthy eye of a graded set: {d} states no diabetic retinopathy and no macular oedema.
GRADED_NORMAL_CONCLUSIONS = ("The eye appears healthy, with {d}.",
                             "There is {d}; the examination is within normal limits.",
                             "In summary, the examination is within normal limits, with {d}.")


def noun(name: str) -> str:
    """A short name of the biomarker that the verifier recognises ("GC-IPL", "inner nasal subfield")."""
    spec = get_biomarker(name)
    if spec.group == "band":
        band, region = name.rsplit("_", 1)
        return f"{_REGIONS[region]} {spec.display.split(' thickness')[0]} band"
    if name == "overall_macular":
        return "overall macula"
    short = spec.display.removesuffix(" thickness")
    return short if short.startswith(_ACRONYMS) else short[0].lower() + short[1:]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeio" else "a"


class RulesTeacher(Teacher):
    """Deterministic per (``seed``, sample id); its reports pass `verifier.verify_report` when the label is not
    contradicted by a clear evidence pattern of another disease."""

    name = "rules-v1"

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed
        self.reports = 0

    async def generate(self, sample: TeacherSample, feedback: str | None = None) -> TeacherOutput:
        answer = self.answer(sample)
        self.reports += 1
        return TeacherOutput(answer, render_report(answer), Usage())

    def summary(self) -> str:
        return f"teacher {self.name}: {self.reports} reports written offline, no API requests, cost $0"

    def answer(self, sample: TeacherSample) -> dict[str, Any]:
        """The report of ``sample`` as the teacher JSON (`prompts.TEACHER_JSON_SHAPE`)."""
        digest = hashlib.sha256(f"{self.seed}:{sample.id}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        assessments = assess_all(sample.biomarkers, sample.age)
        support = {f.item.biomarker: f for f in evidence_for(sample.label, sample.biomarkers, sample.age)}
        pattern = [item.biomarker for item in LABEL_EVIDENCE[sample.label].items]

        abnormal = sorted((a for a in assessments.values() if a.abnormal),
                          key=lambda a: (a.name not in support, -a.severity, _ORDER[a.name]))
        normal_keys = [assessments[n] for n in pattern if assessments[n].status == "normal"][:4]
        lines = [self._line(a, support, rng) for a in abnormal + normal_keys]
        answer = {"biomarker_assessments": lines, "sub_inference": "", "conclusion": ""}

        if sample.label == "Normal":
            answer["sub_inference"] = self._normal_inference(abnormal, normal_keys, rng)
        else:
            answer["sub_inference"] = self._disease_inference(sample.label, abnormal, support, rng)
        answer["conclusion"] = self._conclusion(sample, rng)
        return self._fit(answer, len(normal_keys), len(abnormal))

    @staticmethod
    def _conclusion(sample: TeacherSample, rng: random.Random) -> str:
        if sample.dme is not None:  # a graded set: the conclusion states the DR grade and the DME status
            templates = GRADED_NORMAL_CONCLUSIONS if sample.label == "Normal" else CONCLUSIONS
            return rng.choice(templates).format(d=dr_dme_diagnosis(sample.dr_grade, sample.dme))
        if sample.label == "Normal":
            return rng.choice(NORMAL_CONCLUSIONS)
        return rng.choice(CONCLUSIONS).format(d=LABEL_DISPLAY[sample.label])

    def _line(self, a: Assessment, support, rng: random.Random) -> dict[str, Any]:
        if a.name in support:
            clause = rng.choice(SUPPORT_CLAUSES).format(m=support[a.name].item.meaning)
        elif a.abnormal:
            clause = rng.choice(OTHER_CLAUSES)
        else:
            clause = ""
        return {"biomarker": a.name, "value": a.value, "descriptor": a.descriptor, "interpretation": clause}

    @staticmethod
    def _phrase(a: Assessment, form: int, with_value: bool) -> str:
        value = f" ({get_biomarker(a.name).format_value(a.value)})" if with_value else ""
        if form == 0:
            return f"the {noun(a.name)} is {a.descriptor}{value}"
        return f"{_article(a.descriptor)} {a.descriptor} {noun(a.name)}{value}"

    def _disease_inference(self, label: str, abnormal: list[Assessment], support, rng: random.Random) -> str:
        sentences = []
        supporting = [a for a in abnormal if a.name in support]
        by_modality = {m: [a for a in supporting if get_biomarker(a.name).modality == m] for m in ("oct", "cfp")}
        order = ["oct", "cfp"] if rng.random() < 0.5 else ["cfp", "oct"]
        for modality in order:
            found = by_modality[modality][:4]
            if found:
                template, form = rng.choice(FINDING_SENTENCES[modality])
                with_value = rng.random() < 0.4
                sentences.append(template.format(items=_join([self._phrase(a, form, with_value) for a in found])))
        if supporting:
            meanings = list(dict.fromkeys(support[a.name].item.meaning for a in supporting))[:3]
            sentences.append(rng.choice(LINK_SENTENCES).format(m=_join(meanings)))
        else:
            sentences.append(rng.choice(HEDGE_SENTENCES).format(h=HEDGES[label]))
        others = [noun(a.name) for a in abnormal if a.name not in support][:3]
        if others:
            sentences.append(rng.choice(OTHER_SENTENCES).format(items=_join(others)))
        return " ".join(s[0].upper() + s[1:] for s in sentences)

    def _normal_inference(self, abnormal: list[Assessment], normal_keys: list[Assessment], rng) -> str:
        sentences = []
        if normal_keys:
            sentences.append(rng.choice(NORMAL_SENTENCES).format(items=_join([noun(a.name) for a in normal_keys])))
        if abnormal:
            sentences.append(rng.choice(OTHER_SENTENCES).format(items=_join([noun(a.name) for a in abnormal][:3])))
        sentences.append(rng.choice(NORMAL_LINKS))
        return " ".join(sentences)

    @staticmethod
    def _fit(answer: dict[str, Any], n_normal: int, n_abnormal: int) -> dict[str, Any]:
        """Shorten to the word limit: drop interpretations, then normal lines, then the least important abnormal
        lines (keeping at least 60% of the abnormal ones, above the verifier's coverage floor)."""
        lines = answer["biomarker_assessments"]

        def words() -> int:
            return len(render_report(answer).split())

        for line in reversed(lines):
            if words() <= MAX_REPORT_WORDS:
                return answer
            line["interpretation"] = ""
        keep_abnormal = max(1, -(-n_abnormal * 3 // 5))
        while words() > MAX_REPORT_WORDS and len(lines) > keep_abnormal:
            if n_normal:
                n_normal -= 1
            lines.pop()
        return answer
