"""The 37 GROK biomarkers: one schema (name, unit, modality, ranges), validation and the prompt block.

31 OCT measures follow UK Biobank category 100079 (Topcon 3D OCT-1000, ILM-RPE segmentation, in µm);
6 CFP measures follow the fundus vasculometry used by GROK. Normal ranges are mean +- 2 SD of adult
population data (OCT: Ko et al., Ophthalmology 2017, UK Biobank normative macular data; Patel et al.,
IOVS 2016; CFP: Wong et al., Ophthalmology 2004 (AVR); Cheung et al., IOVS 2011 (tortuosity, fractal
dimension); Varma et al., Ophthalmology 1994 (cup-to-disc)). Plausible ranges bound what a measurement
can physically be; values outside them are rejected as data errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Literal, Mapping

Modality = Literal["oct", "cfp"]


class BiomarkerError(ValueError):
    """A biomarker value or name that cannot be used; the message names the field and the fix."""


@dataclass(frozen=True)
class Biomarker:
    """One biomarker: key, human-readable name, unit, modality, normal and plausible ranges."""

    name: str
    display: str
    unit: str
    modality: Modality
    normal: tuple[float, float]
    plausible: tuple[float, float]
    group: str

    @property
    def decimals(self) -> int:
        """Decimals shown in prompts: one for µm values, three for ratios."""
        return 1 if self.unit == "µm" else 3

    def format_value(self, value: float) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{value:.{self.decimals}f}{unit}"


def _um(name: str, display: str, normal: tuple[float, float], group: str, plausible=(0.0, 1000.0)) -> Biomarker:
    return Biomarker(name, display, "µm", "oct", normal, plausible, group)


_ETDRS = [
    # Ko et al. 2017, UK Biobank (Topcon), ETDRS subfield thickness mean +- 2 SD.
    ("inner_superior", "Inner superior subfield thickness", (283.0, 347.0)),
    ("inner_inferior", "Inner inferior subfield thickness", (279.0, 343.0)),
    ("inner_nasal", "Inner nasal subfield thickness", (285.0, 351.0)),
    ("inner_temporal", "Inner temporal subfield thickness", (271.0, 333.0)),
    ("outer_superior", "Outer superior subfield thickness", (246.0, 306.0)),
    ("outer_inferior", "Outer inferior subfield thickness", (234.0, 292.0)),
    ("outer_nasal", "Outer nasal subfield thickness", (259.0, 321.0)),
    ("outer_temporal", "Outer temporal subfield thickness", (231.0, 289.0)),
]

# Outer-retina layer bands (Ko et al. 2017; Khawaja et al., IOVS 2020): central / inner ring / outer ring / average.
_BANDS = {
    "inl_elm": ("INL-ELM", {"central": (78.0, 112.0), "inner": (72.0, 98.0), "outer": (58.0, 82.0), "average": (64.0, 90.0)}),
    "elm_isos": ("ELM-ISOS", {"central": (20.0, 30.0), "inner": (18.0, 26.0), "outer": (17.0, 25.0), "average": (18.0, 26.0)}),
    "isos_rpe": ("ISOS-RPE", {"central": (33.0, 47.0), "inner": (30.0, 42.0), "outer": (29.0, 41.0), "average": (30.0, 42.0)}),
    "inl_rpe": ("INL-RPE", {"central": (140.0, 180.0), "inner": (126.0, 160.0), "outer": (110.0, 142.0), "average": (118.0, 152.0)}),
}

BIOMARKERS: tuple[Biomarker, ...] = (
    *(_um(k, d, n, "etdrs") for k, d, n in _ETDRS),
    _um("central_subfield", "Central subfield thickness", (225.0, 305.0), "macula"),  # Ko 2017: 264.5 +- 20
    _um("overall_macular", "Overall macular thickness", (253.0, 301.0), "macula"),  # Ko 2017: 277 +- 12
    _um("rpe", "RPE thickness", (15.0, 27.0), "layer"),  # Ko 2017 RPE-Bruch complex
    _um("inl", "Inner nuclear layer thickness", (27.0, 41.0), "layer"),  # Khawaja 2020
    _um("gc_ipl", "GC-IPL thickness", (63.0, 84.0), "layer"),  # Ko 2017: 73.6 +- 5.2
    _um("rnfl", "Macular RNFL thickness", (21.0, 37.0), "layer"),  # Ko 2017: 29.1 +- 4.0
    _um("vertical_disc_diameter", "Vertical disc diameter", (1500.0, 2260.0), "disc", plausible=(500.0, 4000.0)),
    *(
        _um(f"{band}_{region}", f"{label} thickness, {region}", rng, "band")
        for band, (label, regions) in _BANDS.items()
        for region, rng in regions.items()
    ),
    Biomarker("cup_to_disc_ratio", "Vertical cup-to-disc ratio", "", "cfp", (0.2, 0.6), (0.0, 1.0), "disc"),  # Varma 1994
    Biomarker("av_ratio", "Arteriolar-venular ratio", "", "cfp", (0.65, 0.85), (0.2, 1.5), "vessels"),  # Wong 2004
    Biomarker("arterial_tortuosity", "Arterial tortuosity", "", "cfp", (1.02, 1.10), (1.0, 2.0), "vessels"),  # Cheung 2011
    Biomarker("venular_tortuosity", "Venular tortuosity", "", "cfp", (1.02, 1.12), (1.0, 2.0), "vessels"),  # Cheung 2011
    Biomarker("arterial_fractal_dimension", "Arterial fractal dimension", "", "cfp", (1.30, 1.48), (1.0, 2.0), "vessels"),
    Biomarker("venular_fractal_dimension", "Venular fractal dimension", "", "cfp", (1.33, 1.50), (1.0, 2.0), "vessels"),
)

BIOMARKER_NAMES: tuple[str, ...] = tuple(b.name for b in BIOMARKERS)
OCT_BIOMARKER_NAMES: tuple[str, ...] = tuple(b.name for b in BIOMARKERS if b.modality == "oct")
CFP_BIOMARKER_NAMES: tuple[str, ...] = tuple(b.name for b in BIOMARKERS if b.modality == "cfp")
BIOMARKERS_BY_NAME: dict[str, Biomarker] = {b.name: b for b in BIOMARKERS}

assert len(BIOMARKERS) == 37 and len(OCT_BIOMARKER_NAMES) == 31 and len(CFP_BIOMARKER_NAMES) == 6


def get_biomarker(name: str) -> Biomarker:
    """The schema entry for ``name``; raises a `BiomarkerError` that suggests close names."""
    try:
        return BIOMARKERS_BY_NAME[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), BIOMARKER_NAMES, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise BiomarkerError(
            f"Unknown biomarker name {name!r}.{hint} Valid names are listed in processing.biomarkers.BIOMARKER_NAMES."
        ) from None


def validate_biomarkers(
    values: Mapping[str, object] | None, *, check_range: bool = True, where: str = "biomarkers"
) -> dict[str, float | None]:
    """Check names and values and return all 37 keys, missing ones as None.

    Rejects anything but a mapping, unknown names, non-numeric values, inf and (with ``check_range``) values
    outside the plausible range; NaN counts as missing. ``where`` names the record in the error (a row, a file).
    """
    if values is not None and not isinstance(values, Mapping):
        raise BiomarkerError(
            f"{where}: expected a mapping of biomarker names to numbers, e.g. {{'rnfl': 28.5}}, "
            f"got a {type(values).__name__}."
        )
    out: dict[str, float | None] = dict.fromkeys(BIOMARKER_NAMES)
    for name, raw in (values or {}).items():
        spec = get_biomarker(name)
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in {"", "na", "nan", "none", "missing"}):
            continue
        if isinstance(raw, bool):
            raise BiomarkerError(f"{where}: {name} must be a number in {spec.unit or 'ratio units'}, got a boolean {raw!r}.")
        if isinstance(raw, Real):
            value = float(raw)
            if math.isnan(value):
                continue
        else:
            try:
                value = float(str(raw).strip())
            except ValueError:
                raise BiomarkerError(
                    f"{where}: {name} must be a number in {spec.unit or 'ratio units'} (or empty when missing), got {raw!r}."
                ) from None
        if math.isnan(value):
            continue
        if math.isinf(value):
            raise BiomarkerError(f"{where}: {name} is infinite; give a finite value or leave it empty when missing.")
        low, high = spec.plausible
        if check_range and not low <= value <= high:
            unit = f" {spec.unit}" if spec.unit else ""
            raise BiomarkerError(
                f"{where}: {name}={value:g}{unit} is outside the plausible range [{low:g}, {high:g}]{unit}; "
                "check the unit and the measurement, or leave it empty when unknown."
            )
        out[name] = value
    return out


def biomarker_status(name: str, value: float | None) -> Literal["low", "normal", "high", "missing"]:
    """Where ``value`` lies against the schema's normal range."""
    if value is None:
        return "missing"
    low, high = get_biomarker(name).normal
    return "low" if value < low else "high" if value > high else "normal"


def format_biomarkers(values: Mapping[str, object] | None, *, missing: str = "not available") -> str:
    """Render a sample's biomarkers as the quantitative block of a prompt, grouped by modality."""
    checked = validate_biomarkers(values)
    lines: list[str] = []
    for modality, title in (("oct", "OCT biomarkers"), ("cfp", "Fundus (CFP) biomarkers")):
        lines.append(f"{title}:")
        for spec in BIOMARKERS:
            if spec.modality != modality:
                continue
            value = checked[spec.name]
            shown = missing if value is None else spec.format_value(value)
            lines.append(f"- {spec.display}: {shown}")
    return "\n".join(lines)
