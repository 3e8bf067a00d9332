"""The GROK label set (Grounded Ophthalmic Understanding benchmark) and the words that name each label."""

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
