"""Retinal layer boundaries in one OCT B-scan by graph search (Chiu et al., Opt. Express 2010, simplified).

Each boundary is the cheapest left-to-right path through a cost image built from the vertical intensity
gradient (dark-to-bright or bright-to-dark), found by dynamic programming with at most ``max_step`` rows of
change per column. Free start and end rows play the role of Chiu's zero-cost columns at each side. Boundaries
are found in order, each one searched only in the band that the earlier ones leave for it:

1. ILM: below the vitreous, i.e. the dark space open to the top or a side of the scan (so a detached
   posterior hyaloid or a floater is stepped over while cysts, enclosed by retina, are not), refined on the
   dark-to-bright gradient;
2. the outer bright complex (IS/OS + RPE): the cheapest path through bright *thin* lines (brightness times
   ridge strength), taking a deeper line when it scores at least half as well (the RPE is the deepest);
   then BM (the bright-to-dark edge under it), IS/OS (the top dark-to-bright edge of the complex) and the
   OS/RPE edge between them;
3. ELM above IS/OS; the ONL (darkest band between ILM and ELM), OPL/ONL above it, then INL/OPL, IPL/INL
   and RNFL/GCL, each in a window above the boundary found before it.

Rows are pixel-centre coordinates (row i is the centre of the i-th pixel row), refined to sub-pixel by a
parabola through the cost around the path.
Band widths are in µm, turned into pixels with the axial scale when given, else with a scale estimated from
the rough retinal thickness (its lower quartile along the scan taken as 265 µm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .images import UnusableImageError

BOUNDARIES: tuple[str, ...] = ("ilm", "rnfl_gcl", "ipl_inl", "inl_opl", "opl_onl", "elm", "isos", "rpe", "bm")
TYPICAL_RETINA_UM = 265.0  # ILM to the RPE line, lower quartile along a macular scan: guesses an unknown axial scale
_BIG = 1e3  # cost outside the allowed band


@dataclass
class LayerSegmentation:
    """Boundary rows per column (float, NaN outside ``valid``), with the axial scale used to size the bands."""

    boundaries: dict[str, np.ndarray]
    valid: np.ndarray
    px_per_um: float
    px_per_um_estimated: bool
    quality: float = 0.0
    quality_flag: str = "poor"
    issues: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.valid.size)


def shortest_path(cost: np.ndarray, max_step: int = 1, step_penalty: float = 0.0) -> np.ndarray:
    """Row per column of the cheapest left-to-right path through ``cost`` (rows x columns).

    The path may move at most ``max_step`` rows between neighbouring columns, paying ``step_penalty`` per row
    moved; start and end rows are free. Vectorised over rows, one step per column.
    """
    height, width = cost.shape
    steps = np.arange(-max_step, max_step + 1)
    penalty = step_penalty * np.abs(steps)
    buffer = np.full(height + 2 * max_step, np.inf)  # acc padded with inf; the view below sees its updates
    window_view = np.lib.stride_tricks.as_strided(buffer, (height, steps.size), (buffer.strides[0],) * 2, writeable=False)
    acc = cost[:, 0].astype(np.float64)
    back = np.zeros((width, height), dtype=np.int8)
    rows = np.arange(height)
    for x in range(1, width):
        buffer[max_step: max_step + height] = acc
        window = window_view + penalty  # window[y, j] = acc[y + steps[j]] + penalty[j]
        best = window.argmin(axis=1)
        back[x] = best
        acc = window[rows, best] + cost[:, x]
    path = np.empty(width, dtype=np.int64)
    path[-1] = int(acc.argmin())
    for x in range(width - 1, 0, -1):
        path[x - 1] = path[x] + steps[back[x, path[x]]]
    return path


def _band_path(cost: np.ndarray, top: np.ndarray, bottom: np.ndarray, max_step: int, step_penalty: float = 0.02,
               prefer_top: float = 0.0) -> np.ndarray:
    """Cheapest path restricted to rows ``top <= y <= bottom`` per column (``bottom`` is raised to ``top``);
    ``prefer_top`` adds a cost rising linearly by that much from the top to the bottom of the band."""
    height = cost.shape[0]
    top = np.clip(np.round(top), 0, height - 1)
    bottom = np.clip(np.maximum(np.round(bottom), top), 0, height - 1)
    rows = np.arange(height)[:, None]
    inside = (rows >= top) & (rows <= bottom)
    lo, hi = int(top.min()), int(bottom.max()) + 1
    depth = prefer_top * (rows - top) / np.maximum(bottom - top, 1.0) if prefer_top else 0.0
    path = shortest_path(np.where(inside, cost + depth, _BIG)[lo:hi], max_step, step_penalty) + lo
    return np.clip(path + _subpixel(cost, path), top, bottom)


def _subpixel(cost: np.ndarray, path: np.ndarray) -> np.ndarray:
    """Offset (within +-0.5 row) of the cost minimum around each path row, from a parabola through 3 rows."""
    cols = np.arange(path.size)
    r = np.clip(path, 1, cost.shape[0] - 2)
    above, here, below = cost[r - 1, cols], cost[r, cols], cost[r + 1, cols]
    curvature = above - 2.0 * here + below
    offset = np.where(curvature > 1e-9, 0.5 * (above - below) / np.where(curvature > 1e-9, curvature, 1.0), 0.0)
    return np.clip(offset, -0.5, 0.5)


def _edge_cost(gradient: np.ndarray, sign: int, valid: np.ndarray) -> np.ndarray:
    """1 - normalised edge strength: ``sign`` +1 for dark-to-bright going down, -1 for bright-to-dark."""
    edge = np.clip(sign * gradient, 0, None)
    scale = np.percentile(edge[:, valid], 99.5) if valid.any() else 1.0
    return 1.0 - np.clip(edge / max(scale, 1e-6), 0, 1)


def usable_columns(gray: np.ndarray) -> np.ndarray:
    """Columns that hold tissue: not padding (runs of exact black) and with some bright signal."""
    black = (gray <= 1.5 / 255).mean(axis=0)
    bright = np.percentile(gray, 99, axis=0)
    return (black < 0.8) & (bright > 0.25 * np.percentile(bright, 90))


def _rough_ilm(smooth: np.ndarray, valid: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Row below the vitreous. Tissue is brighter than the vitreous level by 4 noise SD or 3% of the dynamic
    range (level and noise from a Gaussian fit to the 10th and 25th percentiles of the upper 60% of the space
    above ``floor``, the outer bright band, padding excluded), opened vertically to drop thin lines. The
    vitreous is the dark space above ``floor`` that is open to the top or to a side of the scan: dark gaps
    under a posterior hyaloid or a floater belong to it, cysts enclosed by retina do not."""
    height, width = smooth.shape
    rows = np.arange(height)[:, None]
    upper = valid & (rows < 0.6 * floor) & (smooth > 1.5 / 255)
    top = smooth[upper] if upper.sum() > 100 else smooth[: max(4, height // 10)][:, valid].ravel()
    p10, p25 = np.percentile(top, [10, 25])  # low quantiles: robust to retina inside the region
    noise = float(p25 - p10) / 0.607
    level = float(p25) + 0.674 * noise
    threshold = level + max(4.0 * noise, 0.03 * (float(np.percentile(smooth[:, valid], 99)) - level))
    run = max(3, height // 60)
    tissue = ndi.binary_opening(smooth > threshold, structure=np.ones((run, 1), bool))
    above = ~tissue & (rows < floor[None, :])
    labels, _ = ndi.label(above)
    border = np.unique(np.r_[labels[0], labels[:, 0], labels[:, -1]])
    outside = np.isin(labels, border[border > 0])  # vitreous: dark and open to the top or a side of the scan
    last = np.where(outside.any(axis=0), height - 1 - np.argmax(outside[::-1], axis=0), -1)
    return ndi.median_filter(last + 1.0, size=max(5, width // 60) | 1, mode="nearest")


def _line_cost(gray: np.ndarray, valid: np.ndarray, base: float) -> np.ndarray:
    """Cost of the outer bright complex (IS/OS + RPE): 1 - sqrt(brightness x thin-line ridge strength), each
    normalised to its 99.5th percentile. The ridge term (minus the second vertical derivative) favours the
    thin RPE line over thick bright tissue (a choroid, an inner retina full of exudates)."""
    bright = ndi.gaussian_filter(gray, (2.0 * base, 6.0 * base))
    ridge = np.clip(-ndi.gaussian_filter(gray, (2.5 * base, 6.0 * base), order=(2, 0)), 0, None)
    score = np.ones_like(gray)
    for part in (bright, ridge):
        score *= np.clip(part / max(np.percentile(part[:, valid], 99.5), 1e-9), 0, 1)
    return 1.0 - np.sqrt(score)


def _outer_band(cost: np.ndarray, top: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The cheapest band below ``top``, or the cheapest one below that (at least 1/20 of the height deeper)
    when it scores at least half as well: the RPE is the deepest bright line, and a thin ILM reflex or a
    band of exudates above it can outscore it, while the choroid below a true RPE scores < 0.45 of it."""
    height, width = cost.shape
    bottom = np.full(width, height - 1.0)
    first = _band_path(cost, top, bottom, max_step=2)
    second = _band_path(cost, np.minimum(first + height / 20.0, height - 1.0), bottom, max_step=2)
    cols = np.flatnonzero(valid)
    score = [1.0 - cost[np.round(p[cols]).astype(int), cols].mean() for p in (first, second)]
    return second if score[1] >= 0.5 * score[0] else first


def _fill_invalid(line: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``line`` across unusable columns (so search bands stay continuous)."""
    x = np.arange(line.size)
    return np.interp(x, x[valid], line[valid]) if valid.any() else line


def segment_layers(gray: np.ndarray, axial_um_per_px: float | None = None) -> LayerSegmentation:
    """Find the nine `BOUNDARIES` in a B-scan (2-D float array in [0, 1], rows = depth)."""
    height, width = gray.shape
    valid = usable_columns(gray)
    if valid.sum() < max(16, width // 10):
        raise UnusableImageError("oct: fewer than 10% of the B-scan columns hold retina (blank or saturated "
                                 "image); give a macular B-scan with visible layers.")
    base = height / 300.0  # a resolution-relative pixel unit for the first, scale-free steps
    smooth = ndi.gaussian_filter(gray, (1.5 * base, 3.0 * base))
    bright_cost = _line_cost(gray, valid, base)
    first_band = _outer_band(bright_cost, np.zeros(width), valid)
    heavy = ndi.gaussian_filter(gray, (3.0 * base, 4.0 * base))  # less speckle, yet narrow enough for the pit
    ilm0 = _fill_invalid(_rough_ilm(heavy, valid, first_band), valid)
    centre0 = _outer_band(bright_cost, ilm0 + 6 * base, valid)

    if axial_um_per_px:
        px_per_um, estimated = 1.0 / float(axial_um_per_px), False
    else:
        thickness = np.clip(np.percentile((centre0 - ilm0)[valid], 25), 0.06 * height, 0.5 * height)
        px_per_um, estimated = thickness / TYPICAL_RETINA_UM, True  # lower quartile: oedema inflates less

    def um(value: float) -> float:
        """``value`` µm in pixels, at least one pixel plus the blur of the gradient filter."""
        return value * px_per_um + 1.5 * blur

    blur = max(0.8, 4.0 * px_per_um)
    step = int(np.clip(round(12.0 * px_per_um), 2, 3 if estimated else 6))  # rows per column a boundary may move
    grad = ndi.gaussian_filter(gray, (blur, max(1.0, 2.0 * base)), order=(1, 0))
    up, down = _edge_cost(grad, +1, valid), _edge_cost(grad, -1, valid)

    ilm = _band_path(up, ilm0 - um(30), ilm0 + um(60), max_step=step + 1)  # deeper: smoothing fills the pit
    centre = _band_path(bright_cost, ilm + um(40), np.minimum(centre0 + um(60), height - 1), max_step=step)
    bm = _band_path(down, centre, centre + um(45), max_step=step)
    isos = _band_path(up, np.maximum(centre - um(60), ilm + um(30)), np.minimum(centre + um(4), bm - um(12)),
                      max_step=step, prefer_top=0.3)  # the top edge of the complex, not the RPE's own top
    rpe = _band_path(up, isos + 0.35 * (bm - isos), bm - 0.2 * (bm - isos), max_step=step)
    elm = _band_path(up, np.maximum(isos - um(45), ilm + um(20)), isos - um(10), max_step=step)

    dark_cost = np.clip(smooth / max(np.percentile(smooth[:, valid], 99.5), 1e-6), 0, 1)
    onl = _band_path(dark_cost, ilm + um(15), elm - um(10), max_step=step)
    opl_onl = _band_path(down, np.maximum(ilm + um(5), onl - um(60)), onl, max_step=step)
    inl_opl = _band_path(up, np.maximum(ilm + um(5), opl_onl - um(45)), opl_onl - um(8), max_step=step)
    ipl_inl = _band_path(down, np.maximum(ilm + um(4), inl_opl - um(50)), inl_opl - um(15), max_step=step)
    rnfl_gcl = _band_path(down, ilm + um(4), ipl_inl - um(40), max_step=step)

    found = {"ilm": ilm, "rnfl_gcl": rnfl_gcl, "ipl_inl": ipl_inl, "inl_opl": inl_opl, "opl_onl": opl_onl,
             "elm": elm, "isos": isos, "rpe": rpe, "bm": bm}
    boundaries = {name: np.where(valid, found[name], np.nan) for name in BOUNDARIES}
    seg = LayerSegmentation(boundaries, valid, px_per_um, estimated)
    _score(seg, gray, smooth, up, down)
    return seg


def _score(seg: LayerSegmentation, gray: np.ndarray, smooth: np.ndarray, up: np.ndarray, down: np.ndarray) -> None:
    """Fill ``quality`` in [0, 1], ``quality_flag`` and ``issues`` from contrast, edge strength and smoothness."""
    valid = seg.valid
    cols = np.flatnonzero(valid)
    ilm = np.round(seg.boundaries["ilm"][cols]).astype(int)
    bm = np.round(seg.boundaries["bm"][cols]).astype(int)
    rows = np.arange(gray.shape[0])[:, None]
    retina = (rows >= ilm) & (rows <= bm)
    vitreous = (rows < ilm - seg.px_per_um * 20) & (rows >= ilm - seg.px_per_um * 150)
    sub = smooth[:, cols]
    noise = float(np.std(gray[:, cols][vitreous])) if vitreous.sum() > 50 else float(np.std(gray[:, cols]))
    contrast = (float(np.median(sub[retina])) - float(np.median(sub[vitreous])) if vitreous.any() else 0.0) / max(noise, 1e-3)
    q_contrast = float(np.clip((contrast - 1.0) / 4.0, 0, 1))
    q_edge = float(np.clip(1.0 - 0.5 * (up[ilm, cols].mean() + down[bm, cols].mean()), 0, 1) / 0.6)
    wiggle = np.median(np.abs(np.diff(seg.boundaries["ilm"][cols], 2))) + np.median(np.abs(np.diff(seg.boundaries["bm"][cols], 2)))
    q_smooth = float(np.exp(-wiggle / max(seg.px_per_um * 10.0, 0.5)))
    coverage = float(valid.mean())
    seg.quality = round(float(np.clip(coverage * (q_contrast + min(q_edge, 1.0) + q_smooth) / 3.0, 0, 1)), 3)
    seg.issues = [text for bad, text in (
        (q_contrast < 0.5, "low contrast"),
        (q_edge < 0.5, "weak ILM/BM edges"),
        (q_smooth < 0.5, "ragged boundaries"),
        (coverage < 0.8, f"only {coverage:.0%} of columns usable"),
    ) if bad]
    seg.quality_flag = "good" if seg.quality >= 0.6 and not seg.issues else "fair" if seg.quality >= 0.35 else "poor"
