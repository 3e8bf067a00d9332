"""`measure_cfp`: vessels, optic disc and cup, and the schema's fundus biomarkers (+ the disc diameter).

Filled: cup-to-disc ratio, AVR, arterial and venular tortuosity, and the vertical disc diameter when the
scale is known. The fractal dimensions are measured but left out of the schema fields (see FRACTAL_REASON).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..biomarkers import CFP_BIOMARKER_NAMES
from .cfp_disc import DiscMeasurement, find_disc
from .cfp_vessels import ARTERY, VEIN, VesselSegmentation, box_counting_dimension, field_of_view, segment_vessels
from .images import ImageLike, UnusableImageError, as_rgb

AVR_ZONE = (2.0, 3.0)  # zone B: 0.5 to 1 disc diameter beyond the margin = 2 to 3 disc radii from the centre
AVR_VESSELS = 6  # the widest arterioles and venules in the zone (as Knudtson et al. 2003 take six of each)
MIN_ZONE_ARC = 4.0  # px at 512 px: in-zone skeleton length for a segment to count in the AVR
MIN_TORTUOSITY_CHORD = 12.0  # px at 512 px: shorter pieces are too pixelated for arc/chord
FRACTAL_REASON = (
    "box-counting dimension of the segmented skeleton is measured (extras: *_fractal_dimension_boxcount) but "
    "depends on resolution and on how many small vessels are found, and is not on the SIVA scale of the "
    "schema's normal range, so the biomarker is not filled"
)
MIN_AV_BALANCE = 0.25  # below it the artery/vein split is taken as failed
AV_SPLIT_REASON = ("artery/vein split failed: one class has only {balance:.0%} of the other's vessel length "
                   "(the colour difference the split relies on is not visible in this photograph)")
MAX_AVR = 1.0  # above it the "arteries" are wider than the "veins": the split is taken as failed
AV_CALIBRE_REASON = ("artery/vein split failed: the vessels classed as arterioles are wider than the venules "
                     "(AVR {avr:.2f} > 1), so the colour split does not match the vessels")
DISC_EXCLUSION = 1.5  # disc radii: tortuosity and fractal dimension leave out the vessels on and at the disc


@dataclass
class CFPMeasurement:
    """Everything measured on one photograph; ``pixels`` holds calibres and diameters in pixels."""

    vessels: VesselSegmentation
    disc: DiscMeasurement | None
    um_per_px: float | None
    biomarkers: dict[str, float | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    pixels: dict[str, float | None] = field(default_factory=dict)
    fractal_dimension: dict[str, float | None] = field(default_factory=dict)  # box counting, "arterial"/"venular"
    quality: float = 0.0
    quality_flag: str = "poor"

    def extras(self) -> dict[str, object]:
        """Measures outside the 37-name schema."""
        return {
            "vessel_density": round(self.vessels.density, 4),
            "disc_found": self.disc is not None,
            **{f"{k}_fractal_dimension_boxcount": None if v is None else round(v, 4) for k, v in self.fractal_dimension.items()},
            **{f"{k}_px": None if v is None else round(v, 3) for k, v in self.pixels.items()},
        }


def _length_weighted(values: np.ndarray, weights: np.ndarray) -> float | None:
    return float(np.average(values, weights=weights)) if weights.sum() > 0 else None


def _av_balance(segs) -> float:
    """Classified length of the rarer class over that of the commoner one (0 when a class is empty)."""
    lengths = [float(segs.length[segs.cls == cls].sum()) for cls in (ARTERY, VEIN)]
    return min(lengths) / max(lengths) if max(lengths) > 0 else 0.0


def _avr(v: VesselSegmentation, disc: DiscMeasurement) -> tuple[float | None, float | None, float | None]:
    """Mean calibre (px) of the widest arterioles and venules in zone B, and their ratio."""
    yy, xx = np.indices(v.mask.shape)
    r = np.hypot(yy - disc.cy, xx - disc.cx) / max(disc.radius, 1e-6)
    width, arc = v.widths_in((r >= AVR_ZONE[0]) & (r <= AVR_ZONE[1]))
    means = []
    for cls in (ARTERY, VEIN):
        pick = (v.segments.cls == cls) & (arc >= MIN_ZONE_ARC * v.scale)
        widest = np.sort(width[pick])[::-1][:AVR_VESSELS]
        means.append(float(widest.mean()) if widest.size >= 2 else None)
    ratio = means[0] / means[1] if None not in means and means[1] > 0 else None
    return means[0], means[1], ratio


def measure_cfp(image: ImageLike, um_per_px: float | None = None) -> CFPMeasurement:
    """Segment vessels, split arteries and veins, find the disc and cup, measure AVR, tortuosity, fractal
    dimension and the vertical cup-to-disc ratio (all scale-free); the vertical disc diameter in µm needs
    ``um_per_px``. Missing values come with a reason."""
    if um_per_px is not None and not (np.isfinite(um_per_px) and um_per_px > 0):
        raise ValueError(f"cfp_um_per_px: must be a positive number of µm per pixel (or None when unknown), got {um_per_px!r}.")
    rgb = as_rgb(image, "cfp")
    fov = field_of_view(rgb)
    if fov.mean() < 0.05 or np.ptp(rgb[fov]) < 0.05:
        raise UnusableImageError("cfp: no lit field of view with contrast (blank or black photograph); "
                                 "give a colour fundus photograph.")
    vessels = segment_vessels(rgb, fov)
    disc = find_disc(rgb, fov, vessels.mask)
    m = CFPMeasurement(vessels, disc, um_per_px)
    segs = vessels.segments
    values: dict[str, float | None] = dict.fromkeys(CFP_BIOMARKER_NAMES)
    shape = vessels.mask.shape
    off_disc = np.ones(shape, bool)
    if disc is not None:  # vessels on the disc bend over its rim and cross its edges: left out
        yy, xx = np.indices(shape)
        off_disc = np.hypot(yy - disc.cy, xx - disc.cx) > DISC_EXCLUSION * disc.radius
    piece_off = off_disc[tuple(np.round(segs.piece_centre).astype(int).T)] if segs.piece_arc.size else np.zeros(0, bool)
    piece_cls = segs.cls[segs.piece_segment] if segs.piece_arc.size else np.zeros(0, np.uint8)
    for cls, kind in ((ARTERY, "arterial"), (VEIN, "venular")):
        pieces = (piece_cls == cls) & piece_off & (segs.piece_chord >= MIN_TORTUOSITY_CHORD * vessels.scale)
        values[f"{kind}_tortuosity"] = _length_weighted(segs.piece_tortuosity[pieces], segs.piece_arc[pieces])
        skeleton = np.isin(segs.labels, np.flatnonzero(segs.cls == cls) + 1) & off_disc
        m.fractal_dimension[kind] = box_counting_dimension(skeleton, shape)
        if values[f"{kind}_tortuosity"] is None:
            m.reasons[f"{kind}_tortuosity"] = f"no {kind} segment long enough was found"
        m.reasons[f"{kind}_fractal_dimension"] = FRACTAL_REASON
    if disc is None:
        for name in ("cup_to_disc_ratio", "av_ratio"):
            m.reasons[name] = "optic disc not found in the photograph"
        m.pixels.update(artery_calibre=None, vein_calibre=None, disc_vertical_diameter=None)
    else:
        values["cup_to_disc_ratio"] = disc.cup_to_disc_ratio
        artery, vein, values["av_ratio"] = _avr(vessels, disc)
        if values["av_ratio"] is None:
            m.reasons["av_ratio"] = "fewer than two arterioles or venules classified in the zone 0.5-1 disc diameter from the disc"
        m.pixels.update(artery_calibre=artery, vein_calibre=vein, disc_vertical_diameter=disc.vertical_diameter_px)
    balance = _av_balance(segs)
    m.pixels["av_length_balance"] = balance
    failed = None
    if balance < MIN_AV_BALANCE:  # one class holds nearly all the vessel length
        failed = AV_SPLIT_REASON.format(balance=balance)
    elif values["av_ratio"] is not None and values["av_ratio"] > MAX_AVR:  # arterioles are narrower than venules
        failed = AV_CALIBRE_REASON.format(avr=values["av_ratio"])
    if failed:
        for name in ("av_ratio", "arterial_tortuosity", "venular_tortuosity"):
            values[name] = None
            m.reasons[name] = failed
    m.biomarkers = {k: None if v is None else round(float(v), 4) for k, v in values.items()}
    if disc is None:
        m.reasons["vertical_disc_diameter"] = "optic disc not found in the photograph"
        m.biomarkers["vertical_disc_diameter"] = None
    elif um_per_px is None:
        m.reasons["vertical_disc_diameter"] = "fundus scale unknown (µm per pixel): disc diameter kept in pixels only"
        m.biomarkers["vertical_disc_diameter"] = None
    else:
        m.biomarkers["vertical_disc_diameter"] = round(disc.vertical_diameter_px * um_per_px, 1)
    _score(m)
    return m


def _score(m: CFPMeasurement) -> None:
    """Quality in [0, 1] and a flag, the mean of three checks: vessel density (a sharp, well-lit photograph
    shows >= 6% vessels), the disc's separability from the fundus, and the artery/vein balance (the rarer
    class at least 40% of the other's vessel length, else the split probably failed)."""
    density = m.vessels.density
    q_vessels = float(np.clip(density / 0.06, 0, 1)) * (1.0 if density < 0.3 else 0.5)
    q_disc = float(np.clip(m.disc.disc_contrast, 0, 1)) if m.disc is not None else 0.0
    q_av = float(np.clip(_av_balance(m.vessels.segments) / 0.4, 0, 1))
    m.quality = round((q_vessels + q_disc + q_av) / 3.0, 3)
    issues = [text for bad, text in (
        (q_vessels < 0.5, "few vessels found" if density < 0.3 else "implausibly dense vessels"),
        (m.disc is None, "no optic disc"),
        (m.disc is not None and q_disc < 0.5, "faint disc"),
        (q_av < 0.5, "unbalanced artery/vein split"),
        (q_av >= 0.5 and m.reasons.get("av_ratio", "").startswith(AV_CALIBRE_REASON[:25]), "artery/vein split contradicts calibre"),
    ) if bad]
    flag = "good" if m.quality >= 0.6 and not issues else "fair" if m.quality >= 0.35 else "poor"
    m.quality_flag = f"{flag}: {', '.join(issues)}" if issues else flag
