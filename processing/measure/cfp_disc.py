"""Optic disc and cup in a colour fundus photograph.

- Works on the green channel (it shows both the disc rim and the pale cup; red is often saturated or barely
  brighter than the fundus) with the segmented vessels replaced by the nearest vessel-free pixel and a small
  grey closing for the faint vessels the segmentation missed.
- Location: the maximum, inside the field of view, of smoothed brightness (at the scale of a disc) plus
  smoothed vessel density (the vessels converge on the disc), each as a z-score; bright lesions such as
  exudate clusters are small or vessel-free and lose.
- Disc: in a window of about four expected radii, Otsu's threshold splits the fundus from the disc; the
  connected region at the location, holes filled, is the disc. A soft membership (0 at the fundus level,
  1 at the disc level) gives sub-pixel moments; an ellipse with the same second moments gives the centre
  and the radii, so the vertical diameter is 4 x the vertical standard deviation.
- Cup: within the disc (its edge ramp left out), pallor is brighter than half-way from the rim level (the
  median of the disc's outer 15%) to the brightest level (95th percentile); the pale region containing the
  brightest point, with the same soft moments. Vertical cup-to-disc ratio = vertical cup / vertical disc
  diameter.
- Contrast: for the disc, Otsu's between-class variance over the total variance in the window; for the cup,
  (brightest - rim) / (disc - fundus).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

DISC_DIAMETER_FOV = 0.14  # a typical disc diameter as a share of the 45° field-of-view diameter


@dataclass
class DiscMeasurement:
    """Disc and cup ellipses (pixels, centres as row cy / column cx); radii are half the moment diameters."""

    cy: float
    cx: float
    ry: float
    rx: float
    cup_cy: float
    cup_cx: float
    cup_ry: float
    cup_rx: float
    disc_contrast: float
    cup_contrast: float

    @property
    def radius(self) -> float:
        return 0.5 * (self.ry + self.rx)

    @property
    def vertical_diameter_px(self) -> float:
        return 2.0 * self.ry

    @property
    def cup_to_disc_ratio(self) -> float:
        return float(np.clip(self.cup_ry / self.ry, 0.0, 1.0)) if self.ry > 0 else 0.0



def _zscore(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    inside = values[where]
    return (values - inside.mean()) / max(inside.std(), 1e-9)


def _soft_moments(weight: np.ndarray, y0: int, x0: int) -> tuple[float, float, float, float]:
    """Centre (row, col) and vertical / horizontal radii (2 SD) of a soft region."""
    total = weight.sum()
    yy, xx = np.indices(weight.shape)
    cy, cx = (weight * yy).sum() / total, (weight * xx).sum() / total
    vy = (weight * (yy - cy) ** 2).sum() / total
    vx = (weight * (xx - cx) ** 2).sum() / total
    return float(cy + y0), float(cx + x0), 2.0 * float(np.sqrt(vy)), 2.0 * float(np.sqrt(vx))


def _soft(region: np.ndarray, values: np.ndarray, low: float, high: float, allowed: np.ndarray) -> np.ndarray:
    """Membership of ``region``: 1 two pixels inside its edge, (value - low) / (high - low) clipped to [0, 1] in
    the 2-pixel band either side of the edge (partial-volume pixels count for their share), 0 beyond."""
    core = ndi.binary_erosion(region, iterations=2)
    band = ndi.binary_dilation(region, iterations=2) & ~core & allowed
    soft = np.where(band, np.clip((values - low) / max(high - low, 1e-6), 0.0, 1.0), 0.0)
    soft[core] = 1.0
    return soft


def _separation(values: np.ndarray, threshold: float) -> float:
    """Otsu's criterion: between-class variance over total variance, in [0, 1]."""
    low, high = values[values <= threshold], values[values > threshold]
    if low.size == 0 or high.size == 0 or values.var() <= 0:
        return 0.0
    w = low.size / values.size
    return float(w * (1 - w) * (high.mean() - low.mean()) ** 2 / values.var())


def _level_split(values: np.ndarray) -> tuple[float, float, float]:
    """Otsu threshold and the medians of the two classes it makes."""
    t = float(threshold_otsu(values))
    return t, float(np.median(values[values <= t])), float(np.median(values[values > t]))


def inpaint(channel: np.ndarray, vessel_mask: np.ndarray, valley_size: int) -> np.ndarray:
    """``channel`` with its vessels replaced by the nearest vessel-free pixel. Only mask pixels in a dark
    valley (>= 0.03 below a grey closing of ``valley_size``) count: the vesselness filter also answers on the
    dark side of the disc's edge, and filling that from inside would grow the disc."""
    valley = ndi.grey_closing(channel, size=(valley_size, valley_size)) - channel
    covered = ndi.binary_dilation(vessel_mask & (valley >= 0.03))
    if not covered.any() or covered.all():
        return channel
    _, (iy, ix) = ndi.distance_transform_edt(covered, return_indices=True)
    return channel[iy, ix]


def find_disc(rgb: np.ndarray, fov: np.ndarray, vessel_mask: np.ndarray) -> DiscMeasurement | None:
    """Locate and measure the disc and cup; None when no bright, separable disc is found."""
    height, width = fov.shape
    rows = np.flatnonzero(fov.any(axis=1))
    if rows.size == 0:
        return None
    fov_diameter = rows[-1] - rows[0] + 1
    radius = 0.5 * DISC_DIAMETER_FOV * fov_diameter
    side = 2 * max(2, int(round(0.06 * radius))) + 1
    valley = 2 * max(3, int(round(0.2 * radius))) + 1
    green = ndi.grey_closing(inpaint(rgb[..., 1], vessel_mask, valley), size=(side, side))
    sigma = 0.5 * radius
    bright = ndi.gaussian_filter(np.where(fov, green, 0.0), sigma) / np.maximum(ndi.gaussian_filter(fov.astype(float), sigma), 1e-3)
    density = ndi.gaussian_filter(vessel_mask.astype(float), sigma)
    score = _zscore(bright, fov) + _zscore(density, fov)
    score[~fov] = -np.inf
    cy, cx = np.unravel_index(int(np.argmax(score)), score.shape)

    half = int(round(2.2 * radius))
    y0, y1, x0, x1 = max(cy - half, 0), min(cy + half + 1, height), max(cx - half, 0), min(cx + half + 1, width)
    window, inside = green[y0:y1, x0:x1], fov[y0:y1, x0:x1]
    if inside.sum() < 50:
        return None
    t_disc, fundus, disc_level = _level_split(window[inside])
    region, _ = ndi.label((window > t_disc) & inside)
    seed = region[cy - y0, cx - x0]
    if seed == 0:  # the location fell on a gap: take the bright region nearest to it
        dist, (iy, ix) = ndi.distance_transform_edt(region == 0, return_indices=True)
        seed = region[iy[cy - y0, cx - x0], ix[cy - y0, cx - x0]]
    disc = ndi.binary_fill_holes(region == seed)
    dcy, dcx, dry, drx = _soft_moments(_soft(disc, window, fundus, disc_level, inside), y0, x0)

    core = ndi.binary_erosion(disc, iterations=3)  # without the disc's edge ramp, which is neither rim nor cup
    values = window[core]
    if values.size < 20:
        return None
    margin = core & ~ndi.binary_erosion(core, iterations=max(1, int(round(0.15 * radius))))
    rim, top = float(np.median(window[margin])), float(np.percentile(values, 95))
    t_cup = 0.5 * (rim + top)
    pallor = float(np.median(values[values > t_cup])) if (values > t_cup).any() else top
    cup_region, _ = ndi.label(core & (window > t_cup))
    peak = np.unravel_index(int(np.argmax(np.where(core, ndi.gaussian_filter(window, 1.0), -np.inf))), window.shape)
    cup = ndi.binary_fill_holes(cup_region == cup_region[peak]) if cup_region[peak] else np.zeros_like(disc)
    soft_cup = _soft(cup, window, rim, pallor, disc)
    ccy, ccx, cry, crx = _soft_moments(soft_cup, y0, x0) if soft_cup.sum() > 0 else (dcy, dcx, 0.0, 0.0)
    return DiscMeasurement(dcy, dcx, dry, drx, ccy, ccx, cry, crx,
                           _separation(window[inside], t_disc), float(np.clip((top - rim) / max(disc_level - fundus, 1e-6), 0, 1)))
