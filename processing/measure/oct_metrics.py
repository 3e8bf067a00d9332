"""Thicknesses, fovea and fluid from the layer boundaries of one horizontal foveal B-scan.

Regions follow the ETDRS grid along the scan line: central |x| <= 0.5 mm, inner 0.5-1.5 mm, outer 1.5-3 mm
from the fovea. One horizontal B-scan crosses the nasal and temporal subfields only; ring values are the
means of its nasal and temporal halves and grid averages weight the rings by their areas, which assumes the
ring is as thick above and below the line as along it. Superior and inferior subfields are never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .oct_layers import LayerSegmentation

ETDRS_RADII_MM = (0.5, 1.5, 3.0)
RING_AREAS = (0.25, 2.0, 6.75)  # central disc, inner ring, outer ring: pi * (r_out^2 - r_in^2) / pi
ASSUMED_SCAN_WIDTH_MM = 6.0  # places the regions (pixel results only) when the lateral scale is unknown
MIN_REGION_COVERAGE = 0.6  # share of a region's columns that must lie in the scan and be usable
PEAK_RADIUS_MM, PEAK_WINDOW_MM = 1.5, 0.2  # peak thickness: within the central 3 mm, as a 0.2 mm running mean
FLUID_DARKNESS = {"retina": 0.3, "onl": 0.6}  # fluid: below these shares of the way from the vitreous to each median
CYST_CORE_UM = 30.0  # a fluid region holds a square this wide
MIN_CYST_HEIGHT_UM = 60.0  # an intraretinal region is at least this tall

# thickness name -> (upper boundary, lower boundary). Retina is ILM to Bruch's membrane; INL-ELM runs from the
# INL/OPL boundary to the ELM (OPL + ONL) and INL-RPE from there to the OS/RPE interface, as in the phantom.
LAYERS: dict[str, tuple[str, str]] = {
    "retina": ("ilm", "bm"),
    "rnfl": ("ilm", "rnfl_gcl"),
    "gc_ipl": ("rnfl_gcl", "ipl_inl"),
    "inl": ("ipl_inl", "inl_opl"),
    "inl_elm": ("inl_opl", "elm"),
    "elm_isos": ("elm", "isos"),
    "isos_rpe": ("isos", "rpe"),
    "inl_rpe": ("inl_opl", "rpe"),
    "rpe": ("rpe", "bm"),
}


@dataclass
class FluidFinding:
    """Dark cystoid spaces inside the retina (intraretinal) or between the retina and the RPE (subretinal)."""

    labels: np.ndarray  # uint8 image: 0 none, 1 intraretinal, 2 subretinal
    intraretinal_area_px: int
    subretinal_area_px: int
    mm2_per_px: float | None

    @property
    def intraretinal(self) -> bool:
        return self.intraretinal_area_px > 0

    @property
    def subretinal(self) -> bool:
        return self.subretinal_area_px > 0

    def area_mm2(self, kind: str) -> float | None:
        """Area in mm² of ``kind`` ("intraretinal" or "subretinal"); None without both scales."""
        px = self.intraretinal_area_px if kind == "intraretinal" else self.subretinal_area_px
        return None if self.mm2_per_px is None else round(px * self.mm2_per_px, 5)


@dataclass
class ThicknessProfile:
    """Per-region mean thickness in pixels (None where the region is outside the scan), and the fovea."""

    fovea_x: int
    fovea_method: str
    lateral_um_per_px: float
    lateral_assumed: bool
    px: dict[str, dict[str, float | None]] = field(default_factory=dict)
    fovea_px: dict[str, float | None] = field(default_factory=dict)  # at the fovea (3 columns)
    peak_px: float | None = None  # see `peak_thickness`


def find_fovea(seg: LayerSegmentation, px_per_mm: float) -> tuple[int, str]:
    """Column of the fovea: the deepest pit of the ILM-BM thickness in the central half of the scan (depth =
    the lower of the highest points within 1.5 mm on either side, minus the thickness there) when it is a
    real pit (at least 8% deep), else the centre of the usable columns (e.g. a swollen DME fovea). Depth, not
    the plain minimum, so that a thin periphery does not pass for the fovea."""
    cols = np.flatnonzero(seg.valid)
    centre = int(round((cols[0] + cols[-1]) / 2))
    total = np.interp(np.arange(seg.width), cols, (seg.boundaries["bm"] - seg.boundaries["ilm"])[cols])
    smooth = ndi.gaussian_filter1d(total, sigma=max(1.0, 0.05 * px_per_mm), mode="nearest")
    reach = max(2, int(round(1.5 * px_per_mm)))
    pad = np.full(reach, -np.inf)
    left = np.lib.stride_tricks.sliding_window_view(np.r_[pad, smooth], reach + 1).max(axis=1)  # max of x-reach..x
    right = np.lib.stride_tricks.sliding_window_view(np.r_[smooth, pad], reach + 1).max(axis=1)  # max of x..x+reach
    depth = np.minimum(left, right) - smooth
    span = cols[-1] - cols[0]
    lo, hi = int(cols[0] + 0.25 * span), int(cols[0] + 0.75 * span)
    x = lo + int(np.argmax(depth[lo:hi + 1]))
    return (x, "pit") if depth[x] >= 0.08 * smooth[x] else (centre, "scan centre")


def _region_masks(width: int, fovea_x: int, px_per_mm: float) -> dict[str, np.ndarray]:
    d = (np.arange(width) - fovea_x) / px_per_mm
    r0, r1, r2 = ETDRS_RADII_MM
    a = np.abs(d)
    return {
        "central": a <= r0,
        "inner_left": (d < 0) & (a > r0) & (a <= r1),
        "inner_right": (d > 0) & (a > r0) & (a <= r1),
        "outer_left": (d < 0) & (a > r1) & (a <= r2),
        "outer_right": (d > 0) & (a > r1) & (a <= r2),
    }


def _region_mean(values: np.ndarray, mask: np.ndarray, valid: np.ndarray, expected: float) -> float | None:
    """Mean over the usable columns of a region, or None when less than MIN_REGION_COVERAGE of it is there."""
    use = mask & valid & np.isfinite(values)
    if use.sum() < max(1.0, MIN_REGION_COVERAGE * expected):
        return None
    return float(values[use].mean())


def peak_thickness(seg: LayerSegmentation, fovea_x: int, px_per_mm: float) -> float | None:
    """Highest ILM-BM thickness (px, running mean over `PEAK_WINDOW_MM`) within `PEAK_RADIUS_MM` of the fovea:
    where the oedema is thickest, which need not be at the pit. None when no usable column is that close."""
    cols = np.flatnonzero(seg.valid)
    near = seg.valid & (np.abs(np.arange(seg.width) - fovea_x) <= PEAK_RADIUS_MM * px_per_mm)
    if not near.any():
        return None
    total = np.interp(np.arange(seg.width), cols, (seg.boundaries["bm"] - seg.boundaries["ilm"])[cols])
    running = ndi.uniform_filter1d(total, max(1, int(round(PEAK_WINDOW_MM * px_per_mm))), mode="nearest")
    return float(running[near].max())


def thickness_profile(seg: LayerSegmentation, lateral_um_per_px: float | None = None) -> ThicknessProfile:
    """Mean thickness (px) of every layer in `LAYERS` over the central disc, the inner and outer rings' left and
    right halves, the rings (mean of the halves) and the grid average (rings weighted by area); and the retina's
    `peak_thickness`."""
    assumed = lateral_um_per_px is None
    lateral = ASSUMED_SCAN_WIDTH_MM * 1000.0 / seg.width if assumed else float(lateral_um_per_px)
    px_per_mm = 1000.0 / lateral
    fovea_x, method = find_fovea(seg, px_per_mm)
    masks = _region_masks(seg.width, fovea_x, px_per_mm)
    r0, r1, r2 = ETDRS_RADII_MM
    expected = {"central": 2 * r0 * px_per_mm, "inner_left": (r1 - r0) * px_per_mm, "inner_right": (r1 - r0) * px_per_mm,
                "outer_left": (r2 - r1) * px_per_mm, "outer_right": (r2 - r1) * px_per_mm}
    profile = ThicknessProfile(fovea_x, method, lateral, assumed, peak_px=peak_thickness(seg, fovea_x, px_per_mm))
    for name, (upper, lower) in LAYERS.items():
        values = seg.boundaries[lower] - seg.boundaries[upper]
        region = {key: _region_mean(values, masks[key], seg.valid, expected[key]) for key in masks}
        for ring in ("inner", "outer"):
            halves = [region[f"{ring}_left"], region[f"{ring}_right"]]
            region[ring] = None if None in halves else float(np.mean(halves))
        rings = [region["central"], region["inner"], region["outer"]]
        region["average"] = None if None in rings else float(np.dot(rings, RING_AREAS) / sum(RING_AREAS))
        profile.px[name] = region
        near = values[max(0, fovea_x - 1):fovea_x + 2]
        near = near[np.isfinite(near)]
        profile.fovea_px[name] = float(near.mean()) if near.size else None
    return profile


def _flag_labels(labels: np.ndarray, count: int, where: np.ndarray) -> np.ndarray:
    """Per label 1..count: whether any of its pixels lies where ``where`` is True."""
    flag = np.zeros(count + 1, bool)
    flag[np.unique(labels[where])] = True
    return flag[1:]


def detect_fluid(gray: np.ndarray, seg: LayerSegmentation, lateral_um_per_px: float | None = None,
                 axial_um_per_px: float | None = None) -> FluidFinding:
    """Dark, compact regions inside the retina: intraretinal cysts and subretinal fluid.

    Dark: after light smoothing (4 µm axially, 8 µm laterally), below both of `FLUID_DARKNESS`'s bars: 30% of
    the way from the vitreous to the median brightness of the retina (ILM to BM) and 60% of the way to that of
    the outer nuclear layer, the darkest normal layer (each bar alone let normal tissue through on some real
    scans). Searched between the ILM (+15 µm, away from the vitreous) and the OS/RPE edge; a region whose
    bottom lies within 20 µm of the RPE is subretinal, any other one intraretinal. A region is kept when it is

    - compact: at least (40 µm)² and holding a `CYST_CORE_UM` square (speckle and thin dark bands along a
      layer do not);
    - intraretinal and at least `MIN_CYST_HEIGHT_UM` tall (a normal outer nuclear layer is about as dark in a
      thinner band), or subretinal;
    - enclosed by retina: not reaching the top of the search band (vitreous under a missed ILM) nor the first
      or last usable column (where the boundaries go astray at the edge of the scan).
    """
    height, width = gray.shape
    um = seg.px_per_um
    smooth = ndi.gaussian_filter(gray, (max(0.7, 4 * um), max(1.0, 8 * um)))
    rows = np.arange(height)[:, None]
    ilm, rpe, bm = (np.nan_to_num(seg.boundaries[k], nan=-1.0) for k in ("ilm", "rpe", "bm"))
    top = np.ceil(ilm + 15 * um + 1)
    inside = seg.valid & (rows >= top) & (rows < rpe)
    retina = seg.valid & (rows >= ilm) & (rows <= bm)
    vitreous = seg.valid & (rows < ilm - 20 * um - 2) & (rows >= ilm - 150 * um)
    if not inside.any() or not vitreous.any():
        return FluidFinding(np.zeros((height, width), np.uint8), 0, 0, None)
    onl_top, elm = (np.nan_to_num(seg.boundaries[k], nan=-1.0) for k in ("opl_onl", "elm"))
    onl = seg.valid & (rows >= onl_top) & (rows < elm)
    dark_level = np.median(smooth[vitreous])
    medians = {"retina": np.median(smooth[retina]), "onl": np.median(smooth[onl]) if onl.sum() > 50 else np.inf}
    bar = min(dark_level + share * (medians[name] - dark_level) for name, share in FLUID_DARKNESS.items())
    dark = ndi.binary_opening(inside & (smooth < bar), structure=np.ones((2, 2), bool))
    labels, count = ndi.label(dark)
    index = np.arange(1, count + 1)
    slices = ndi.find_objects(labels)
    tall = np.array([s[0].stop - s[0].start for s in slices]) if count else np.zeros(0)
    side = max(2, int(round(CYST_CORE_UM * um)))
    core = ndi.binary_opening(dark, structure=np.ones((side, side), bool))
    edge = np.zeros_like(dark)
    edge[:, np.flatnonzero(seg.valid)[[0, -1]]] = True
    keep = (ndi.sum_labels(dark, labels, index) >= max(6.0, (40 * um) ** 2)) & _flag_labels(labels, count, core)
    keep &= ~_flag_labels(labels, count, rows == top) & ~_flag_labels(labels, count, edge)
    # gap between each region's lowest pixel and the RPE line in that column
    gap = np.where(labels > 0, rpe[None, :] - rows, np.inf)
    closest = ndi.minimum(gap, labels, index) if count else np.zeros(0)
    sub = keep & (closest <= 20 * um + 1)
    keep &= sub | (tall >= MIN_CYST_HEIGHT_UM * um)
    kind = np.zeros(count + 1, np.uint8)
    kind[1:][keep] = 1
    kind[1:][sub] = 2
    out = kind[labels]
    mm2 = None if lateral_um_per_px is None or axial_um_per_px is None else lateral_um_per_px * axial_um_per_px / 1e6
    return FluidFinding(out, int((out == 1).sum()), int((out == 2).sum()), mm2)
