"""`measure_oct`: layer boundaries, fovea, schema thicknesses and fluid from one horizontal foveal B-scan."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..biomarkers import OCT_BIOMARKER_NAMES
from ..grok_dataset import Eye, normalise_eye
from .images import ImageLike, as_gray
from .oct_layers import LayerSegmentation, segment_layers
from .oct_metrics import FluidFinding, ThicknessProfile, detect_fluid, thickness_profile


# schema name -> (layer in oct_metrics.LAYERS, region); nasal/temporal regions are resolved with the eye
_SCHEMA: dict[str, tuple[str, str]] = {
    "central_subfield": ("retina", "central"),
    "overall_macular": ("retina", "average"),
    "inner_nasal": ("retina", "inner_nasal"),
    "inner_temporal": ("retina", "inner_temporal"),
    "outer_nasal": ("retina", "outer_nasal"),
    "outer_temporal": ("retina", "outer_temporal"),
    "rpe": ("rpe", "average"),
    "inl": ("inl", "average"),
    "gc_ipl": ("gc_ipl", "average"),
    "rnfl": ("rnfl", "average"),
    **{f"{band}_{region}": (band, region) for band in ("inl_elm", "elm_isos", "isos_rpe", "inl_rpe")
       for region in ("central", "inner", "outer", "average")},
}
NOT_ON_A_LINE = "not measurable from one horizontal B-scan (it crosses the nasal and temporal subfields only)"
NOTES = {
    "ring": "ring value = mean of the nasal and temporal halves along the scan line",
    "average": "ETDRS-grid average estimated from the scan line: ring means weighted by ring area",
}


@dataclass
class OCTMeasurement:
    """Everything measured on one B-scan. ``biomarkers`` holds µm values only when both scales were given;
    ``pixels`` holds the same measures in pixels (regions placed with an assumed 6 mm scan width when the
    lateral scale is unknown)."""

    segmentation: LayerSegmentation
    profile: ThicknessProfile
    fluid: FluidFinding
    axial_um_per_px: float | None
    lateral_um_per_px: float | None
    eye: Eye | None
    biomarkers: dict[str, float | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def quality(self) -> float:
        return self.segmentation.quality

    @property
    def quality_flag(self) -> str:
        issues = ", ".join(self.segmentation.issues)
        return f"{self.segmentation.quality_flag}: {issues}" if issues else self.segmentation.quality_flag

    @property
    def pixels(self) -> dict[str, dict[str, float | None]]:
        return self.profile.px

    @property
    def central_thickness_px(self) -> float | None:
        """Mean ILM-BM thickness (px) over the central 1 mm: the scale-free figure used on unscaled sets."""
        return self.profile.px["retina"]["central"]

    def extras(self) -> dict[str, object]:
        """Measures outside the 37-name schema: fluid flags and areas, the fovea, pixel thicknesses."""
        return {
            "intraretinal_fluid": self.fluid.intraretinal,
            "subretinal_fluid": self.fluid.subretinal,
            "intraretinal_fluid_area_px": self.fluid.intraretinal_area_px,
            "subretinal_fluid_area_px": self.fluid.subretinal_area_px,
            "intraretinal_fluid_area_mm2": self.fluid.area_mm2("intraretinal"),
            "subretinal_fluid_area_mm2": self.fluid.area_mm2("subretinal"),
            "central_thickness_px": self.central_thickness_px,
            "peak_thickness_px": self.profile.peak_px,
            "foveal_thickness_px": self.profile.fovea_px["retina"],
            "fovea_x": self.profile.fovea_x,
            "fovea_method": self.profile.fovea_method,
        }


def _region_name(region: str, eye: Eye | None) -> str | None:
    """Map inner_nasal/outer_temporal... to the image side: on a fundus-oriented B-scan the nasal side of a
    right eye (OD) is on the right of the image, of a left eye on the left."""
    if not region.endswith(("_nasal", "_temporal")):
        return region
    if eye is None:
        return None
    ring, side = region.split("_")
    right = (side == "nasal") == (eye == "OD")
    return f"{ring}_{'right' if right else 'left'}"


def measure_oct(image: ImageLike, axial_um_per_px: float | None = None, lateral_um_per_px: float | None = None,
                eye: str | None = None) -> OCTMeasurement:
    """Segment a horizontal foveal B-scan and measure the schema's OCT thicknesses and the fluid.

    µm biomarkers need both scales (axial for thickness, lateral to place the 0.5/1.5/3 mm regions);
    nasal/temporal subfields also need ``eye`` ('OD'/'OS'). Missing values come with a reason.
    """
    for name, value in (("axial_um_per_px", axial_um_per_px), ("lateral_um_per_px", lateral_um_per_px)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name}: must be a positive number of µm per pixel (or None when unknown), got {value!r}.")
    gray = as_gray(image, "oct")
    seg = segment_layers(gray, axial_um_per_px)
    profile = thickness_profile(seg, lateral_um_per_px)
    fluid = detect_fluid(gray, seg, lateral_um_per_px, axial_um_per_px)
    result = OCTMeasurement(seg, profile, fluid, axial_um_per_px, lateral_um_per_px, normalise_eye(eye))
    _fill_biomarkers(result)
    return result


def _fill_biomarkers(m: OCTMeasurement) -> None:
    scale_reason = None
    if m.axial_um_per_px is None and m.lateral_um_per_px is None:
        scale_reason = "OCT scales unknown (axial and lateral µm per pixel): thickness kept in pixels only"
    elif m.axial_um_per_px is None:
        scale_reason = "OCT axial scale unknown (µm per pixel): thickness kept in pixels only"
    elif m.lateral_um_per_px is None:
        scale_reason = "OCT lateral scale unknown: the 0.5/1.5/3 mm regions cannot be placed (pixel values only)"
    for name in OCT_BIOMARKER_NAMES:
        m.biomarkers[name] = None
        if name.endswith(("_superior", "_inferior")):
            m.reasons[name] = NOT_ON_A_LINE
            continue
        if name == "vertical_disc_diameter":
            m.reasons[name] = "measured on the fundus photograph (needs its µm-per-pixel scale), not on a macular B-scan"
            continue
        layer, region = _SCHEMA[name]
        side = _region_name(region, m.eye)
        if side is None:
            m.reasons[name] = "eye (OD/OS) unknown: nasal and temporal sides of the scan cannot be told apart"
            continue
        value = m.profile.px[layer][side]
        if value is None:
            m.reasons[name] = "region extends beyond the usable part of the scan"
        elif scale_reason:
            m.reasons[name] = scale_reason
        else:
            m.biomarkers[name] = round(value * m.axial_um_per_px, 1)
            if region in ("inner", "outer"):
                m.notes[name] = NOTES["ring"]
            elif region == "average":
                m.notes[name] = NOTES["average"]
