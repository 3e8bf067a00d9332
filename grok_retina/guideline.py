"""The Eye-Guideline: how a biomarker value is described in a report, and which evidence supports each label.

One place for the clinical knowledge behind Stage I: severity bands and report descriptors for the 37
biomarkers (derived from the normal ranges of `processing.biomarkers`, age-adjusted where age matters),
the words a report may use for them, the phrases that name a biomarker in free text, and the evidence
pattern of every label in `processing.labels.LABELS` with a rule-based scorer. The rules teacher, the
teacher prompts and the grounding verifier all read it from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Literal

from processing.biomarkers import BIOMARKERS, get_biomarker
from processing.labels import LABELS

Status = Literal["low", "normal", "high", "missing"]
Direction = Literal["low", "high", "abnormal", "normal"]

# --- Severity bands ------------------------------------------------------------------------------------
# The schema's normal range is mean +- 2 SD of adult normative data (processing.biomarkers docstring), so
# SD = width / 4. Mild band: outside mean +- 2 SD (~2.5th / 97.5th percentile), the usual "outside normal
# limits" cut of OCT normative databases. Marked band: beyond mean +- 3 SD (~0.1st / 99.9th percentile).
MARKED_SD = 3.0  # statistical convention for a marked deviation (beyond 3 SD of the normative mean)

# Per-biomarker overrides of the marked thresholds, from disease-definition literature.
_MARKED_OVERRIDES: dict[str, dict[str, float]] = {
    # ISGEO glaucoma category 2: VCDR >= 99.5th percentile of the normal population, ~0.75 on photographs
    # (Foster et al., Br J Ophthalmol 2002; applied e.g. in the Nigeria National Blindness Survey 2015).
    "cup_to_disc_ratio": {"marked_high": 0.75},
}

# Age adjustment: the schema's ranges come from UK Biobank (recruited at 40-69 years); thresholds of
# age-dependent layers are shifted by (age - REFERENCE_AGE) x the normal ageing slope.
REFERENCE_AGE = 55.0  # mid-point of the UK Biobank 40-69 recruitment range
AGE_SLOPE_PER_DECADE: dict[str, float] = {
    "gc_ipl": -1.6,  # macular GC-IPL -1.61 µm per decade in healthy adults (Huo et al., Clin Exp Ophthalmol 2017)
    "rnfl": -0.6,  # RNFL -2.0% per decade (Chauhan et al., Ophthalmology 2020), x 29 µm macular RNFL mean
}

# Report words per biomarker group: (marked low, low, normal, high, marked high).
_THICKNESS = ("markedly thinned", "thinned", "within normal limits", "thickened", "markedly thickened")
GROUP_DESCRIPTORS: dict[str, tuple[str, str, str, str, str]] = {
    "etdrs": _THICKNESS,
    "macula": _THICKNESS,
    "layer": _THICKNESS,
    "band": _THICKNESS,
    "disc": ("markedly reduced", "reduced", "within normal limits", "enlarged", "markedly enlarged"),
    "vessels": ("markedly reduced", "reduced", "within normal limits", "increased", "markedly increased"),
}


@dataclass(frozen=True)
class Thresholds:
    """Band edges of one biomarker (for one age): marked_low < low <= normal <= high < marked_high."""

    marked_low: float
    low: float
    high: float
    marked_high: float

    def values(self) -> tuple[float, float, float, float]:
        return (self.marked_low, self.low, self.high, self.marked_high)


@dataclass(frozen=True)
class Assessment:
    """A value placed against the guideline: ``status`` low/normal/high/missing, ``severity`` 0 (normal
    or missing), 1 (mild) or 2 (marked), and the report ``descriptor`` for it."""

    name: str
    value: float | None
    status: Status
    descriptor: str
    severity: int

    @property
    def abnormal(self) -> bool:
        return self.status in ("low", "high")


@cache
def thresholds(name: str, age: float | None = None) -> Thresholds:
    """The band edges of biomarker ``name``, shifted for ``age`` (years) where age matters."""
    spec = get_biomarker(name)
    low, high = spec.normal
    mean, sd = (low + high) / 2, (high - low) / 4
    edges = {"marked_low": mean - MARKED_SD * sd, "low": low, "high": high, "marked_high": mean + MARKED_SD * sd}
    edges.update(_MARKED_OVERRIDES.get(name, {}))
    if age is not None and name in AGE_SLOPE_PER_DECADE:
        shift = AGE_SLOPE_PER_DECADE[name] * (float(age) - REFERENCE_AGE) / 10
        edges = {key: value + shift for key, value in edges.items()}
    return Thresholds(**edges)


def descriptors(name: str) -> tuple[str, str, str, str, str]:
    """The five report words of biomarker ``name``: marked low, low, normal, high, marked high."""
    return GROUP_DESCRIPTORS[get_biomarker(name).group]


def describe(name: str, value: float | None, age: float | None = None) -> Assessment:
    """Place ``value`` of biomarker ``name`` in its severity band and give the report descriptor."""
    if value is None:
        return Assessment(name, None, "missing", "not available", 0)
    edges, words = thresholds(name, age), descriptors(name)
    if value < edges.marked_low:
        return Assessment(name, value, "low", words[0], 2)
    if value < edges.low:
        return Assessment(name, value, "low", words[1], 1)
    if value > edges.marked_high:
        return Assessment(name, value, "high", words[4], 2)
    if value > edges.high:
        return Assessment(name, value, "high", words[3], 1)
    return Assessment(name, value, "normal", words[2], 0)


def assess_all(biomarkers: Mapping[str, float | None], age: float | None = None) -> dict[str, Assessment]:
    """`describe` for every biomarker of the schema (missing ones included)."""
    return {spec.name: describe(spec.name, biomarkers.get(spec.name), age) for spec in BIOMARKERS}


# --- Words a report may use ----------------------------------------------------------------------------
# Descriptor phrases the verifier understands, mapped to the direction they assert. Severity comes from a
# modifier ("markedly", "mildly") in front. Bare "high/low/large/small" are left out on purpose: in free text
# they describe likelihoods and risks more often than measurements.
DESCRIPTOR_LEXICON: dict[str, Literal["low", "high", "normal", "abnormal"]] = {
    **dict.fromkeys(
        ("thinned", "thinning", "thin", "thinner", "reduced", "reduction", "decreased", "decrease", "diminished",
         "narrowed", "narrowing", "attenuated", "attenuation", "below the normal range", "below normal limits",
         "below the lower limit of normal", "below normal"),
        "low",
    ),
    **dict.fromkeys(
        ("thickened", "thickening", "thick", "thicker", "increased", "increase", "elevated", "enlarged",
         "enlargement", "widened", "raised", "above the normal range", "above normal limits",
         "above the upper limit of normal", "exceeds the upper limit of normal", "above normal"),
        "high",
    ),
    **dict.fromkeys(
        ("within normal limits", "within the normal range", "within normal range", "within the reference range",
         "normal", "unremarkable", "preserved"),
        "normal",
    ),
    **dict.fromkeys(("abnormal", "outside normal limits", "outside the normal range"), "abnormal"),
}
# Phrases that contain a descriptor word but assert nothing (consumed so that "normal" in them is not read).
NEUTRAL_PHRASES: tuple[str, ...] = (
    "upper limit of normal", "lower limit of normal", "normal range", "normal limits", "normal values",
    "normal value", "normative",
)
SEVERITY_MODIFIERS: dict[str, int] = {
    **dict.fromkeys(("markedly", "marked", "severely", "severe", "significantly", "significant", "substantially",
                     "substantial", "profoundly", "profound", "considerably", "very", "pronounced"), 2),
    **dict.fromkeys(("mildly", "mild", "slightly", "slight", "minimally", "minimal", "borderline", "modestly"), 1),
}


def _band_aliases() -> dict[str, tuple[str, ...]]:
    regions = {"central": ("central", "centre", "center"), "inner": ("inner ring", "inner"),
               "outer": ("outer ring", "outer"), "average": ("average", "mean")}
    out: dict[str, tuple[str, ...]] = {}
    for spec in BIOMARKERS:
        if spec.group != "band":
            continue
        band_name, region = spec.name.rsplit("_", 1)
        label = spec.display.split(" thickness")[0]  # e.g. "INL-ELM"
        phrases = []
        for word in regions[region]:
            phrases += [f"{label} thickness, {word}", f"{label} thickness ({word})", f"{label} ({word})",
                        f"{label}, {word}", f"{label} {word}", f"{word} {label} thickness", f"{word} {label}"]
        out[spec.name] = tuple(phrases)
    return out


def _etdrs_aliases() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for spec in BIOMARKERS:
        if spec.group == "etdrs":
            ring, quadrant = spec.name.split("_")
            out[spec.name] = tuple(
                f"{a} {b}{suffix}" for a, b in ((ring, quadrant), (quadrant, ring)) for suffix in
                (" subfield thickness", " subfield", " sector thickness", " sector", " thickness", "")
            )
    return out


# Free-text names of each biomarker besides its display name (matched case-insensitively, longest first).
BIOMARKER_ALIASES: dict[str, tuple[str, ...]] = {
    **_etdrs_aliases(),
    **_band_aliases(),
    "central_subfield": ("central subfield thickness", "central subfield", "CST", "central macular thickness",
                         "CMT", "central retinal thickness", "CRT", "centre-involved thickness"),
    "overall_macular": ("overall macular thickness", "average macular thickness", "mean macular thickness",
                        "overall macula", "macular thickness"),
    "rpe": ("RPE thickness", "RPE-Bruch complex", "RPE-Bruch's membrane complex", "retinal pigment epithelium",
            "RPE"),
    "inl": ("inner nuclear layer thickness", "inner nuclear layer", "INL thickness", "INL"),
    "gc_ipl": ("GC-IPL thickness", "GC-IPL", "GCIPL", "GCL-IPL", "ganglion cell-inner plexiform layer",
               "ganglion cell inner plexiform layer", "ganglion cell layer"),
    "rnfl": ("macular RNFL thickness", "macular RNFL", "RNFL thickness", "RNFL", "retinal nerve fibre layer",
             "retinal nerve fiber layer", "nerve fibre layer", "nerve fiber layer"),
    "vertical_disc_diameter": ("vertical disc diameter", "optic disc diameter", "disc diameter", "disc size"),
    "cup_to_disc_ratio": ("vertical cup-to-disc ratio", "cup-to-disc ratio", "cup to disc ratio", "cup-to-disc",
                          "cup/disc ratio", "C/D ratio", "C/D", "VCDR", "CDR"),
    "av_ratio": ("arteriolar-venular ratio", "arteriolar-to-venular ratio", "arteriole-to-venule ratio",
                 "arteriovenous ratio", "A/V ratio", "AV ratio", "AVR"),
    "arterial_tortuosity": ("arterial tortuosity", "arteriolar tortuosity"),
    "venular_tortuosity": ("venular tortuosity", "venous tortuosity"),
    "arterial_fractal_dimension": ("arterial fractal dimension", "arteriolar fractal dimension"),
    "venular_fractal_dimension": ("venular fractal dimension", "venous fractal dimension"),
}

# Phrases naming several biomarkers at once; a number next to one is resolved by its value.
AMBIGUOUS_ALIASES: dict[str, tuple[str, ...]] = {
    **{
        label: tuple(s.name for s in BIOMARKERS if s.display.startswith(f"{label} thickness"))
        for label in ("INL-ELM", "ELM-ISOS", "ISOS-RPE", "INL-RPE")
    },
    "tortuosity": ("arterial_tortuosity", "venular_tortuosity"),
    "fractal dimension": ("arterial_fractal_dimension", "venular_fractal_dimension"),
}


@cache
def mention_phrases() -> dict[str, tuple[str, ...]]:
    """Every phrase (lower case) that names a biomarker, display names included -> the names it may mean.
    Cached: do not mutate."""
    phrases: dict[str, tuple[str, ...]] = {}
    for spec in BIOMARKERS:
        for phrase in (spec.display, *BIOMARKER_ALIASES.get(spec.name, ())):
            phrases[phrase.lower()] = (spec.name,)
    phrases.update({phrase.lower(): names for phrase, names in AMBIGUOUS_ALIASES.items()})
    return phrases


# --- Evidence patterns ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvidenceItem:
    """One piece of evidence for a label: a biomarker deviating in ``direction`` (or staying normal),
    its ``weight`` in the score, what it ``means`` in a report, and the source."""

    biomarker: str
    direction: Direction
    weight: float
    meaning: str


@dataclass(frozen=True)
class LabelEvidence:
    items: tuple[EvidenceItem, ...]
    image_findings: tuple[str, ...]
    summary: str


LABEL_EVIDENCE: dict[str, LabelEvidence] = {
    "AMD": LabelEvidence(
        items=(
            # Drusen thicken the RPE-drusen complex (Farsiu et al., Ophthalmology 2014, AREDS2 SD-OCT study).
            EvidenceItem("rpe", "high", 2.0, "drusen or pigment epithelial elevation"),
            # Drusen lift the RPE away from the photoreceptor tips (Schuman et al., Ophthalmology 2009).
            EvidenceItem(
                "isos_rpe_central", "high", 1.0, "separation of the photoreceptors from the pigment epithelium"
            ),
            # Photoreceptor segment loss over drusen and atrophy (Schuman et al., Ophthalmology 2009).
            EvidenceItem("elm_isos_central", "low", 1.0, "photoreceptor inner-segment loss"),
            # Fluid thickens, atrophy thins the central macula (neovascular vs atrophic AMD; Keane et al., Surv
            # Ophthalmol 2012).
            EvidenceItem("central_subfield", "abnormal", 1.0, "disturbed central macular structure"),
        ),
        image_findings=("drusen", "pigmentary changes", "geographic atrophy"),
        summary="outer-retina and RPE changes centred on the macula",
    ),
    "Glaucoma": LabelEvidence(
        items=(
            # ISGEO structural criterion: VCDR >= 97.5th percentile (Foster et al., Br J Ophthalmol 2002).
            EvidenceItem("cup_to_disc_ratio", "high", 3.0, "glaucomatous cupping of the optic disc"),
            # Macular GC-IPL loss detects glaucoma as well as peripapillary RNFL (Mwanza et al., Ophthalmology 2012).
            EvidenceItem("gc_ipl", "low", 2.0, "ganglion cell loss"),
            # Macular RNFL thinning in glaucoma (Hood et al., Prog Retin Eye Res 2013).
            EvidenceItem("rnfl", "low", 2.0, "nerve fibre loss"),
            # The inferior macula is the "macular vulnerability zone" (Hood et al., Prog Retin Eye Res 2013).
            EvidenceItem("inner_inferior", "low", 1.0, "inferior macular ganglion cell loss"),
        ),
        image_findings=("enlarged cup", "neuroretinal rim thinning", "RNFL defects"),
        summary="optic disc cupping with inner-retinal (ganglion cell and nerve fibre) thinning",
    ),
    "Diabetes": LabelEvidence(
        items=(
            # Inner-retinal neurodegeneration precedes retinopathy (van Dijk et al., IOVS 2010).
            EvidenceItem("gc_ipl", "low", 1.0, "early diabetic neurodegeneration"),
            EvidenceItem("rnfl", "low", 1.0, "early diabetic neurodegeneration"),
            # Wider venules (lower AVR) in diabetes (Nguyen et al., Diabetes Care 2008).
            EvidenceItem("av_ratio", "low", 1.0, "venular widening"),
            # Greater venular tortuosity with diabetes (Sasongko et al., Diabetologia 2011).
            EvidenceItem("venular_tortuosity", "high", 1.0, "diabetic microvascular change"),
        ),
        image_findings=("no microaneurysms, haemorrhages or exudates",),
        summary="subtle inner-retinal thinning and venular changes without retinopathy",
    ),
    "Hypertension": LabelEvidence(
        items=(
            # Generalised arteriolar narrowing lowers the AVR (Wong & Mitchell, N Engl J Med 2004).
            EvidenceItem("av_ratio", "low", 3.0, "generalised arteriolar narrowing"),
            # Lower fractal dimension (sparser branching) with higher blood pressure (Liew et al., Ophthalmology 2008).
            EvidenceItem("arterial_fractal_dimension", "low", 1.0, "rarefaction of the arteriolar tree"),
            EvidenceItem("venular_fractal_dimension", "low", 0.5, "rarefaction of the vascular tree"),  # idem
        ),
        image_findings=("arteriolar narrowing", "arteriovenous nicking", "flame haemorrhages"),
        summary="arteriolar narrowing with a sparser retinal vascular tree",
    ),
    "Alzheimer": LabelEvidence(
        items=(
            # Thinner inner retina with cognitive decline in UK Biobank (Ko et al., JAMA Neurol 2018).
            EvidenceItem("gc_ipl", "low", 2.0, "neurodegenerative ganglion cell loss"),
            EvidenceItem("rnfl", "low", 2.0, "neurodegenerative nerve fibre loss"),
            # Reduced fractal dimension and more tortuous venules in AD (Cheung et al., Alzheimers Dement 2014).
            EvidenceItem("venular_fractal_dimension", "low", 1.0, "a sparser venular network"),
            EvidenceItem("arterial_fractal_dimension", "low", 1.0, "a sparser arteriolar network"),
            EvidenceItem("venular_tortuosity", "high", 0.5, "altered venular geometry"),
        ),
        image_findings=("no focal retinal lesions",),
        summary="diffuse inner-retinal thinning with a sparser vascular network and a normal optic disc",
    ),
    "DiabeticRetinopathy": LabelEvidence(
        items=(
            # DME is graded by OCT central subfield thickening (DRCR.net, Ophthalmology 2007).
            EvidenceItem("central_subfield", "high", 2.0, "centre-involving macular oedema"),
            EvidenceItem("inner_temporal", "high", 1.0, "parafoveal oedema"),
            EvidenceItem("inner_nasal", "high", 1.0, "parafoveal oedema"),
            # Fluid collects in the INL in diabetic macular oedema (Otani et al., Am J Ophthalmol 1999).
            EvidenceItem("inl", "high", 1.0, "intraretinal fluid in the inner retina"),
            # Greater venular tortuosity with retinopathy (Sasongko et al., Diabetologia 2011).
            EvidenceItem("venular_tortuosity", "high", 1.0, "venous tortuosity of retinopathy"),
            # Higher fractal dimension with early retinopathy (Cheung et al., Diabetes Care 2009).
            EvidenceItem("venular_fractal_dimension", "high", 0.5, "microvascular remodelling"),
        ),
        image_findings=("microaneurysms", "dot-blot haemorrhages", "hard exudates", "cotton-wool spots"),
        summary="macular thickening with microvascular changes of diabetic retinopathy",
    ),
    "Normal": LabelEvidence(
        items=(  # definitional: the key structural and vascular measures inside the schema's normal ranges
            EvidenceItem("central_subfield", "normal", 1.0, "a normal macular profile"),
            EvidenceItem("gc_ipl", "normal", 1.0, "an intact ganglion cell layer"),
            EvidenceItem("cup_to_disc_ratio", "normal", 1.0, "a healthy optic disc"),
            EvidenceItem("av_ratio", "normal", 1.0, "normal arteriolar calibre"),
        ),
        image_findings=("no retinal lesions",),
        summary="all structural and vascular measures within normal limits",
    ),
}
assert set(LABEL_EVIDENCE) == set(LABELS)

STRONG_EVIDENCE = 0.5  # a label score at or above this is a clear pattern (used for contradiction checks)
_STRENGTH = {1: 0.6, 2: 1.0}  # how much a mild / marked deviation in the expected direction counts


@dataclass(frozen=True)
class Finding:
    """An evidence item that the biomarkers show, with its assessment and strength in (0, 1]."""

    item: EvidenceItem
    assessment: Assessment
    strength: float


def _strength(item: EvidenceItem, assessment: Assessment) -> float:
    if assessment.status == "missing":
        return 0.0
    if item.direction == "normal":
        return 1.0 if assessment.status == "normal" else 0.0
    if item.direction == "abnormal" and assessment.abnormal or item.direction == assessment.status:
        return _STRENGTH[assessment.severity]
    return 0.0


def evidence_for(label: str, biomarkers: Mapping[str, float | None], age: float | None = None) -> list[Finding]:
    """The evidence items of ``label`` that ``biomarkers`` show, strongest first."""
    if label not in LABEL_EVIDENCE:
        raise ValueError(f"Unknown label {label!r}; valid labels are {', '.join(LABELS)}.")
    found = []
    for item in LABEL_EVIDENCE[label].items:
        assessment = describe(item.biomarker, biomarkers.get(item.biomarker), age)
        strength = _strength(item, assessment)
        if strength > 0:
            found.append(Finding(item, assessment, strength))
    return sorted(found, key=lambda f: -f.strength * f.item.weight)


def score_labels(biomarkers: Mapping[str, float | None], age: float | None = None) -> dict[str, float]:
    """Rule-based score in [0, 1] per label: the weighted share of its evidence pattern that the biomarkers
    show (missing biomarkers leave the pattern). ``Normal`` scores 1 minus the strongest disease score."""
    scores: dict[str, float] = {}
    for label, evidence in LABEL_EVIDENCE.items():
        if label == "Normal":
            continue
        total = matched = 0.0
        for item in evidence.items:
            assessment = describe(item.biomarker, biomarkers.get(item.biomarker), age)
            if assessment.status != "missing":
                total += item.weight
                matched += item.weight * _strength(item, assessment)
        scores[label] = matched / total if total else 0.0
    scores["Normal"] = 1.0 - max(scores.values())
    return {label: scores[label] for label in LABELS}
