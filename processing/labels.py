"""The GROK label set (Grounded Ophthalmic Understanding benchmark) and the words that name each label; the DR
grades and DME statuses of diabetic eyes and the words that name them."""

from __future__ import annotations

LABELS: tuple[str, ...] = ("AMD", "Glaucoma", "Diabetes", "Hypertension", "Alzheimer", "DiabeticRetinopathy", "Normal")

LABEL_DISPLAY: dict[str, str] = {
    "AMD": "age-related macular degeneration",
    "Glaucoma": "glaucoma",
    "Diabetes": "diabetes mellitus without retinopathy",
    "Hypertension": "systemic hypertension",
    "Alzheimer": "Alzheimer's disease",
    "DiabeticRetinopathy": "diabetic retinopathy",
    "Normal": "no ocular or systemic disease",
}

# Phrases that name a label in free text, longest first within each label (used by report parsing).
LABEL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "AMD": ("age-related macular degeneration", "age related macular degeneration", "macular degeneration", "amd"),
    "Glaucoma": ("glaucomatous optic neuropathy", "glaucoma", "glaucomatous"),
    "Diabetes": ("diabetes mellitus", "diabetes", "diabetic"),
    "Hypertension": ("hypertensive retinopathy", "systemic hypertension", "hypertension", "hypertensive"),
    "Alzheimer": ("alzheimer's disease", "alzheimers disease", "alzheimer disease", "alzheimer's", "alzheimer"),
    "DiabeticRetinopathy": (
        "diabetic retinopathy",
        "diabetic macular oedema",
        "diabetic macular edema",
        "diabetic maculopathy",
        "dme",
        "proliferative retinopathy",
        "non-proliferative retinopathy",
        "npdr",
        "pdr",
        "dr",
    ),
    "Normal": ("no ocular or systemic disease", "within normal limits", "healthy", "normal"),
}


def label_index(label: str) -> int:
    """Index of ``label`` in `LABELS`; raises a ValueError listing the valid labels."""
    try:
        return LABELS.index(label)
    except ValueError:
        raise ValueError(f"Unknown label {label!r}; valid labels are {', '.join(LABELS)}.") from None


def label_name(label: int | str) -> str:
    """A label given as its index in `LABELS` (a ClassLabel value) or as its name, checked."""
    if isinstance(label, int) and 0 <= label < len(LABELS):
        return LABELS[label]
    return LABELS[label_index(label)]


# --- DR grade and DME status (the real DME/DR set, `processing.dme_dr`) --------------------------------
DR_GRADES: tuple[str, ...] = ("0", "NPDR", "PDR")
DME_STATUSES: tuple[str, ...] = ("no", "yes")

DR_GRADE_DISPLAY: dict[str, str] = {
    "0": "no diabetic retinopathy",
    "NPDR": "non-proliferative diabetic retinopathy",
    "PDR": "proliferative diabetic retinopathy",
}
DME_DISPLAY: dict[str, str] = {"yes": "with diabetic macular oedema", "no": "without macular oedema"}

# Phrases that name a DR grade or macular oedema in free text (used by report parsing). Grade "0" is a
# negated mention of diabetic retinopathy ("no diabetic retinopathy"), so it has no phrase of its own.
DR_GRADE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "NPDR": (
        "non-proliferative diabetic retinopathy",
        "nonproliferative diabetic retinopathy",
        "non-proliferative retinopathy",
        "nonproliferative retinopathy",
        "background diabetic retinopathy",
        "non-proliferative dr",
        "npdr",
    ),
    "PDR": ("proliferative diabetic retinopathy", "proliferative retinopathy", "proliferative dr", "pdr"),
}
DME_SYNONYMS: tuple[str, ...] = (
    "clinically significant macular oedema",
    "clinically significant macular edema",
    "diabetic macular oedema",
    "diabetic macular edema",
    "diabetic maculopathy",
    "macular oedema",
    "macular edema",
    "dme",
    "dmo",
    "csme",
)


def dr_dme_names(dr_grade: int | str | None, dme: int | str | None) -> tuple[str | None, str | None]:
    """``(dr_grade, dme)`` as names; ClassLabel indices (the `processing.dme_dr` features, in `DR_GRADES` /
    `DME_STATUSES` order) are mapped to their names, None stays None."""
    out = []
    for field, value, names in (("dr_grade", dr_grade, DR_GRADES), ("dme", dme, DME_STATUSES)):
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < len(names):
                raise ValueError(f"{field} index {value} is out of range; the classes are {names}.")
            value = names[value]
        out.append(value)
    return out[0], out[1]


def _check_dr_dme_names(dr_grade: str | None, dme: str) -> None:
    """Raise a ValueError naming the field when ``dr_grade`` (None: ungraded) or ``dme`` is not a valid name."""
    if dr_grade is not None and dr_grade not in DR_GRADES:
        raise ValueError(f"dr_grade {dr_grade!r} is not one of {DR_GRADES}; use None when the grade is unknown.")
    if dme not in DME_STATUSES:
        raise ValueError(f"dme {dme!r} is not one of {DME_STATUSES}.")


def dr_dme_label(dr_grade: str | None, dme: str) -> str | None:
    """The GROK label of a diabetic eye: DiabeticRetinopathy with a grade of NPDR/PDR or with DME (a
    complication of diabetic retinopathy, graded as such by ETDRS), Normal with grade "0" and no DME; None
    when the grade is unknown and there is no DME (no diagnosis)."""
    _check_dr_dme_names(dr_grade, dme)
    if dme == "yes" or dr_grade in ("NPDR", "PDR"):
        return "DiabeticRetinopathy"
    return "Normal" if dr_grade == "0" else None


def check_dr_dme(label: str | None, dr_grade: str | None, dme: str | None) -> None:
    """Raise a ValueError naming the field when ``dr_grade`` / ``dme`` are not valid values or contradict
    ``label`` when it is given (the rule of `dr_dme_label`)."""
    if dr_grade is None and dme is None:
        return
    if dme is None:
        raise ValueError(f"dr_grade is {dr_grade!r} but dme is None; give the DME status ('no' or 'yes') too.")
    expected = dr_dme_label(dr_grade, dme)
    if label is None:
        return
    if expected is None:
        raise ValueError("dr_grade is None and dme is 'no': the eye has no diagnosis; give its DR grade.")
    if label != expected:
        raise ValueError(
            f"label {label!r} contradicts dr_grade={dr_grade!r}, dme={dme!r}, which mean {expected}; fix the label "
            "or the DR columns."
        )


def dr_dme_diagnosis(dr_grade: str | None, dme: str) -> str:
    """The diagnosis a conclusion names for a DR grade (None: ungraded) and a DME status, e.g.
    "non-proliferative diabetic retinopathy with diabetic macular oedema"."""
    _check_dr_dme_names(dr_grade, dme)
    if dr_grade == "0":
        return "diabetic macular oedema without diabetic retinopathy" if dme == "yes" else (
            f"{DR_GRADE_DISPLAY['0']} and no macular oedema"
        )
    return f"{DR_GRADE_DISPLAY.get(dr_grade, LABEL_DISPLAY['DiabeticRetinopathy'])} {DME_DISPLAY[dme]}"
