"""Data side of grok-retina: the biomarker schema, the label set, datasets, the phantom and measurement."""

from .biomarkers import (
    BIOMARKER_NAMES,
    BIOMARKERS,
    CFP_BIOMARKER_NAMES,
    OCT_BIOMARKER_NAMES,
    Biomarker,
    BiomarkerError,
    biomarker_status,
    format_biomarkers,
    get_biomarker,
    validate_biomarkers,
)
from .labels import LABELS, label_index, label_name

__all__ = [
    "BIOMARKERS",
    "BIOMARKER_NAMES",
    "CFP_BIOMARKER_NAMES",
    "OCT_BIOMARKER_NAMES",
    "Biomarker",
    "BiomarkerError",
    "LABELS",
    "biomarker_status",
    "format_biomarkers",
    "get_biomarker",
    "label_index",
    "label_name",
    "validate_biomarkers",
]
