"""Stage 0: measure the GROK biomarkers from the images (OCT layer thicknesses and fluid, CFP vessels and disc).

>>> from processing.measure import measure_biomarkers
>>> result = measure_biomarkers(cfp=photo, oct=bscan, eye="OD", oct_axial_um_per_px=3.87,
...                             oct_lateral_um_per_px=11.7, cfp_um_per_px=26.5)
>>> result["biomarkers"]["central_subfield"], result["reasons"]["inner_superior"]

Every value is measured, never guessed: what one horizontal B-scan or one photograph cannot give, or what
needs a scale that was not given, stays None with its reason. µm fields are filled only from given scales;
pixel measurements are kept apart (``extra``).
"""

from __future__ import annotations

from typing import Sequence

from ..biomarkers import BIOMARKER_NAMES, CFP_BIOMARKER_NAMES, OCT_BIOMARKER_NAMES
from .cfp import CFPMeasurement, measure_cfp
from .images import ImageLike, UnusableImageError
from .oct import OCTMeasurement, measure_oct
from .overlay import cfp_overlay, oct_overlay

__all__ = [
    "CFPMeasurement",
    "OCTMeasurement",
    "UnusableImageError",
    "cfp_overlay",
    "measure_biomarkers",
    "measure_cfp",
    "measure_oct",
    "oct_overlay",
]


def _central_scan(oct: ImageLike | Sequence[ImageLike]) -> ImageLike:
    """The central foveal B-scan: the image itself, or the first of a list (the schema's ``oct[0]``)."""
    if isinstance(oct, (list, tuple)):
        if not oct:
            raise ValueError("oct: the list of B-scans is empty; give at least the central foveal B-scan.")
        return oct[0]
    return oct


def measure_biomarkers(
    cfp: ImageLike | None = None,
    oct: ImageLike | Sequence[ImageLike] | None = None,
    *,
    eye: str | None = None,
    oct_axial_um_per_px: float | None = None,
    oct_lateral_um_per_px: float | None = None,
    cfp_um_per_px: float | None = None,
) -> dict:
    """Measure the 37 biomarkers from a fundus photograph and/or a horizontal foveal B-scan.

    ``oct`` may be one B-scan or the schema's list (the first, central one is measured). Returns a dict:

    - ``biomarkers``: all 37 names, None where not measured;
    - ``reasons``: name -> why it is missing; ``notes``: name -> how an approximate value was obtained;
    - ``quality``: per modality ``{"score": float in [0, 1], "flag": "good" | "fair: ..." | "poor: ..."}``
      or None when the modality was not given or could not be measured;
    - ``extra``: fluid flags and areas, vessel density, pixel measurements, box-counting dimensions;
    - ``measurements``: the `OCTMeasurement` / `CFPMeasurement` (for `oct_overlay` / `cfp_overlay`).
    """
    biomarkers: dict[str, float | None] = dict.fromkeys(BIOMARKER_NAMES)
    reasons: dict[str, str] = {}
    notes: dict[str, str] = {}
    quality: dict[str, dict | None] = {"oct": None, "cfp": None}
    extra: dict[str, object] = {}
    measured: dict[str, OCTMeasurement | CFPMeasurement | None] = {"oct": None, "cfp": None}

    if oct is None:
        reasons.update(dict.fromkeys(OCT_BIOMARKER_NAMES, "no OCT B-scan given"))
    else:
        try:
            m = measure_oct(_central_scan(oct), oct_axial_um_per_px, oct_lateral_um_per_px, eye)
        except UnusableImageError as error:
            reasons.update(dict.fromkeys(OCT_BIOMARKER_NAMES, f"OCT not measurable: {error}"))
        else:
            measured["oct"] = m
            biomarkers.update(m.biomarkers)
            reasons.update(m.reasons)
            notes.update(m.notes)
            quality["oct"] = {"score": m.quality, "flag": m.quality_flag}
            extra.update(m.extras())

    disc_names = (*CFP_BIOMARKER_NAMES, "vertical_disc_diameter")
    if cfp is None:
        reasons.update(dict.fromkeys(disc_names, "no fundus photograph given"))
    else:
        try:
            c = measure_cfp(cfp, cfp_um_per_px)
        except UnusableImageError as error:
            reasons.update(dict.fromkeys(disc_names, f"fundus photograph not measurable: {error}"))
        else:
            measured["cfp"] = c
            biomarkers.update(c.biomarkers)
            reasons.update(c.reasons)
            quality["cfp"] = {"score": c.quality, "flag": c.quality_flag}
            extra.update(c.extras())
    for name, value in biomarkers.items():
        if value is not None:
            reasons.pop(name, None)
    return {"biomarkers": biomarkers, "reasons": reasons, "notes": notes, "quality": quality, "extra": extra,
            "measurements": measured}
