"""Retinal vessels in a colour fundus photograph: segmentation, calibre, artery/vein split, tortuosity, fractal
dimension.

- Segmentation: green channel, CLAHE, multi-scale Frangi vesselness (dark ridges), hysteresis threshold
  relative to the strongest vessels, small objects removed; skeleton.
- Segments: the skeleton cut at branch and crossing points; each segment's pixels are ordered by geodesic
  distance from one end (one sparse Dijkstra over all segments at once).
- Calibre: integrated contrast over peak contrast. Contrast = background (a grey closing that fills the
  vessels) minus green; each pixel near the skeleton counts for its contrast / the peak contrast of its
  nearest skeleton pixel; a segment's width = the sum over the pixels nearest to it / its arc length.
- Artery/vein: arteries are lighter red than veins: against the local background (a grey closing per
  channel) they darken the red channel little compared with green, veins darken both. Each segment gets the
  ratio of red to green darkening (median along its skeleton), which does not depend on how much of a pixel
  the vessel covers, so thin veins are not taken for arteries; segments of at least
  ``MIN_CLASSIFIED_LENGTH`` are split in two by Otsu's threshold on it, weighted by length. Limits: no use of
  connectivity through crossings, of width (which would bias the AVR) or of the disc; a saturated red
  channel hides the difference; the split assumes both classes are present.
- Tortuosity: arc / chord over consecutive pieces of ``TORTUOSITY_WINDOW`` pixels of each segment (so that
  a missed branch point, which merges segments, does not turn an arcade's gentle curve into tortuosity),
  arc on the ordered skeleton sampled every few pixels (removing the staircase of the pixel path);
  length-weighted mean per class.
- Fractal dimension: box counting on each class's skeleton.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from skimage.exposure import equalize_adapthist
from skimage.filters import apply_hysteresis_threshold, frangi, threshold_otsu
from skimage.morphology import skeletonize

ARTERY, VEIN = 1, 2
MIN_CLASSIFIED_LENGTH = 10.0  # px at 512 px: shorter segments keep class 0 (unclassified)
TORTUOSITY_WINDOW = 24  # px at 512 px (~0.6 mm in a 45° field): length of the pieces arc/chord is taken over
_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


@dataclass
class VesselSegments:
    """One row per skeleton segment (index i is label i + 1 in ``labels``), and the fixed-length pieces the
    segments are cut into for tortuosity (``piece_*``; ``piece_segment`` is the segment index)."""

    labels: np.ndarray  # int image: segment label on the skeleton, 0 elsewhere
    length: np.ndarray  # arc length, px
    width: np.ndarray  # calibre, px
    redness: np.ndarray  # red darkening / green darkening against the background, median along the skeleton
    centre: np.ndarray  # (n, 2) mean (row, col)
    cls: np.ndarray  # 0 unclassified, 1 artery, 2 vein
    piece_segment: np.ndarray
    piece_arc: np.ndarray
    piece_chord: np.ndarray
    piece_centre: np.ndarray  # (m, 2) mean (row, col)

    @classmethod
    def empty(cls, labels: np.ndarray) -> VesselSegments:
        z = np.zeros(0)
        return cls(labels, z, z, z, np.zeros((0, 2)), np.zeros(0, np.uint8), np.zeros(0, int), z, z, np.zeros((0, 2)))

    @property
    def piece_tortuosity(self) -> np.ndarray:
        return self.piece_arc / np.maximum(self.piece_chord, 1e-6)


@dataclass
class VesselSegmentation:
    """Masks and per-segment measures of one photograph."""

    fov: np.ndarray
    mask: np.ndarray
    skeleton: np.ndarray
    class_map: np.ndarray  # uint8 image: vessel pixels labelled 1 artery / 2 vein (by nearest skeleton segment)
    segments: VesselSegments
    cell: np.ndarray  # on skeleton pixels: summed membership of the pixels nearest to it (local width x step)
    scale: float  # image width / 512: pixel sizes below are given for a 512 px photograph

    def widths_in(self, zone: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per segment: calibre (px) measured only where its skeleton lies in ``zone``, and its arc length there."""
        segs = self.segments
        index = np.arange(1, segs.length.size + 1)
        inside = zone & (segs.labels > 0)
        share = np.asarray(ndi.sum(inside, segs.labels, index)) / np.maximum(ndi.sum(segs.labels > 0, segs.labels, index), 1)
        arc = segs.length * share
        return np.asarray(ndi.sum(self.cell * inside, segs.labels, index)) / np.maximum(arc, 1e-6), arc

    @property
    def density(self) -> float:
        """Vessel area as a fraction of the field of view."""
        return float(self.mask[self.fov].mean()) if self.fov.any() else 0.0


def field_of_view(rgb: np.ndarray) -> np.ndarray:
    """The circular camera aperture: pixels brighter than a tenth of the median brightness, largest blob,
    holes filled, eroded by 1.5% of the width so that the rim is not taken for a vessel."""
    lum = rgb.mean(axis=2)
    lit = lum > 0.1 * np.median(lum[lum > 0.02]) if (lum > 0.02).any() else np.ones_like(lum, bool)
    labels, n = ndi.label(lit)
    if n > 1:
        lit = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    lit = ndi.binary_fill_holes(lit)
    margin = max(1, int(round(0.015 * rgb.shape[1])))
    return ndi.binary_erosion(lit, iterations=margin, border_value=1)


def _fill_outside(channel: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """Outside the field of view, the value of the nearest pixel inside it (no rim edge for the filters)."""
    if fov.all():
        return channel
    _, (iy, ix) = ndi.distance_transform_edt(~fov, return_indices=True)
    return channel[iy, ix]


def vesselness(green: np.ndarray, fov: np.ndarray, scale: float) -> np.ndarray:
    """Multi-scale Frangi response to dark ridges of CLAHE-equalised green, normalised to its 99th percentile."""
    green = _fill_outside(green, fov)
    equal = equalize_adapthist(np.clip(green, 0, 1), kernel_size=max(8, green.shape[1] // 8), clip_limit=0.01)
    response = frangi(equal, sigmas=scale * np.array([1.0, 1.5, 2.0, 3.0]), black_ridges=True)
    response[~fov] = 0.0
    top = np.percentile(response[fov], 99) if fov.any() else 1.0
    return response / max(top, 1e-12)


def _closing_size(scale: float) -> tuple[int, int]:
    """Square grey-closing window that fills vessels up to ~14 px wide at 512 px (separable, so fast)."""
    side = 2 * max(3, int(round(7 * scale))) + 1
    return side, side


def _neighbour_count(skeleton: np.ndarray) -> np.ndarray:
    """Number of 8-neighbours of every skeleton pixel (0 off the skeleton)."""
    padded = np.pad(skeleton, 1).astype(np.int8)
    h, w = skeleton.shape
    count = sum(padded[1 + dy: 1 + dy + h, 1 + dx: 1 + dx + w] for dy, dx in _NEIGHBOURS)
    return np.where(skeleton, count, 0)


def _segments(skeleton: np.ndarray) -> tuple[np.ndarray, int]:
    """Skeleton cut at pixels with more than two neighbours (branch and crossing points), labelled."""
    junctions = ndi.binary_dilation(_neighbour_count(skeleton) > 2, structure=np.ones((3, 3), bool)) & skeleton
    return ndi.label(skeleton & ~junctions, structure=np.ones((3, 3), bool))


def _drop_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without its 8-connected components smaller than ``min_area`` pixels."""
    labels, _ = ndi.label(mask, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_area
    keep[0] = False
    return keep[labels]


def _ordered_paths(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of all segments ordered along each segment: (label, row, col, geodesic distance from the start)
    arrays sorted by label then by distance from one end of the segment. Loops without an end start anywhere."""
    ys, xs = np.nonzero(labels)
    index = -np.ones(labels.shape, np.int64)
    index[ys, xs] = np.arange(ys.size)
    lab = labels[ys, xs]
    src, dst, w = [], [], []
    for dy, dx in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        ok = (ny >= 0) & (ny < labels.shape[0]) & (nx >= 0) & (nx < labels.shape[1])
        j = np.full(ys.size, -1)
        j[ok] = index[ny[ok], nx[ok]]
        ok &= j >= 0
        ok[ok] = lab[ok] == lab[j[ok]]
        src.append(np.flatnonzero(ok))
        dst.append(j[ok])
        w.append(np.full(ok.sum(), np.hypot(dy, dx)))
    src, dst, w = np.concatenate(src), np.concatenate(dst), np.concatenate(w)
    degree = np.bincount(src, minlength=ys.size)
    graph = coo_matrix((w, (src, dst)), shape=(ys.size, ys.size)).tocsr()
    # one start per segment: an end pixel (degree 1) if it has one, else its first pixel
    order = np.lexsort((degree != 1, lab))
    first = np.r_[True, lab[order][1:] != lab[order][:-1]]
    starts = order[first]
    dist = dijkstra(graph, directed=False, indices=starts, min_only=True)
    dist[~np.isfinite(dist)] = 0.0
    path = np.lexsort((dist, lab))
    return lab[path], ys[path], xs[path], dist[path]


def _arc_and_chord(group: np.ndarray, ys: np.ndarray, xs: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Arc length (path sampled every ``step`` pixels plus its last pixel) and chord of each run of equal
    ``group`` ids in the ordered pixel arrays, in order of appearance."""
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], group.size] - 1
    run = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, group.size]))
    rank = np.arange(group.size) - starts[run]
    keep = rank % step == 0
    keep[ends] = True
    kr, ky, kx = run[keep], ys[keep].astype(float), xs[keep].astype(float)
    same = kr[1:] == kr[:-1]
    hops = np.hypot(np.diff(ky), np.diff(kx))[same]
    arc = np.bincount(kr[1:][same], weights=hops, minlength=starts.size)
    chord = np.hypot(ys[ends] - ys[starts], xs[ends] - xs[starts])
    return arc, chord


def _pieces(lab: np.ndarray, dist: np.ndarray, window: float) -> np.ndarray:
    """Piece id of every ordered pixel: each segment cut by geodesic distance into round(length / window)
    pieces of ``window`` pixels (at least one; the remainder joins the last piece)."""
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    seg = np.repeat(np.arange(starts.size), np.diff(np.r_[starts, lab.size]))
    length = np.maximum.reduceat(dist, starts)
    n_pieces = np.maximum(np.round(length / window).astype(int), 1)
    piece = np.r_[0, np.cumsum(n_pieces)][seg] + np.minimum((dist // window).astype(int), n_pieces[seg] - 1)
    return np.unique(piece, return_inverse=True)[1]  # consecutive ids, in path order


def _membership(green: np.ndarray, skeleton: np.ndarray, fov: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft vessel membership of every pixel near the skeleton, and the index of its nearest skeleton pixel.

    Contrast = background (grey closing, which fills the dark vessels) minus green; membership = contrast /
    the peak contrast at the nearest skeleton pixel (the local mean of the contrast along the skeleton,
    Gaussian-weighted over ~3 px: a per-pixel maximum would be biased up by noise, a whole-segment value by
    the disc), clipped to [0, 1], zero below 0.1 (noise) or beyond 1.5
    half-widths at half contrast (+1.5 px) from the skeleton. Summed across a vessel it gives its width with
    sub-pixel precision (the exact width for a flat profile with soft edges, ~1.06 FWHM for a Gaussian one).
    """
    contrast = ndi.grey_closing(_fill_outside(green, fov), size=_closing_size(scale)) - green
    on = skeleton.astype(float)
    sigma = 3.0 * scale
    local = ndi.gaussian_filter(contrast * on, sigma) / np.maximum(ndi.gaussian_filter(on, sigma), 1e-9)
    peak = np.where(skeleton, local, 0.0)
    dist, (iy, ix) = ndi.distance_transform_edt(~skeleton, return_indices=True)
    share = contrast / np.maximum(peak[iy, ix], 1e-6)
    half_width = ndi.distance_transform_edt((share >= 0.5) & (dist <= 8 * scale))[iy, ix]
    near = (share >= 0.1) & (dist <= 1.5 * half_width + 1.5) & (peak[iy, ix] > 0)
    return np.where(near, np.minimum(share, 1.0), 0.0), iy * skeleton.shape[1] + ix


def _otsu_weighted(values: np.ndarray, weights: np.ndarray) -> float:
    """Otsu's threshold of ``values`` with each value counted ``weights`` (rounded) times."""
    reps = np.maximum(np.round(weights).astype(int), 1)
    return float(threshold_otsu(np.repeat(values, reps)))


def segment_vessels(rgb: np.ndarray, fov: np.ndarray | None = None) -> VesselSegmentation:
    """Vessel mask, skeleton, segments with calibre, redness, tortuosity pieces and artery/vein class."""
    scale = rgb.shape[1] / 512.0
    fov = field_of_view(rgb) if fov is None else fov
    green = rgb[..., 1]
    response = vesselness(green, fov, scale)
    mask = _drop_small(apply_hysteresis_threshold(response, 0.08, 0.2) & fov, int(60 * scale**2))
    skeleton = skeletonize(mask)
    labels, n = _segments(skeleton)
    share, nearest = _membership(green, skeleton, fov, scale)
    cell = np.bincount(nearest.ravel(), weights=share.ravel(), minlength=share.size).reshape(share.shape)
    if n == 0:
        return VesselSegmentation(fov, mask, skeleton, np.zeros(mask.shape, np.uint8), VesselSegments.empty(labels), cell, scale)
    lab, ys, xs, dist = _ordered_paths(labels, n)
    step = max(2, int(round(4 * scale)))
    arc, _ = _arc_and_chord(lab, ys, xs, step)
    piece = _pieces(lab, dist, TORTUOSITY_WINDOW * scale)
    piece_arc, piece_chord = _arc_and_chord(piece, ys, xs, step)
    first = np.flatnonzero(np.r_[True, piece[1:] != piece[:-1]])
    count = np.bincount(piece).astype(float)
    piece_centre = np.stack([np.bincount(piece, weights=c) / count for c in (ys, xs)], axis=1)

    index = np.arange(1, n + 1)
    darkening = []
    for channel in (rgb[..., 0], green):
        background = ndi.grey_closing(_fill_outside(channel, fov), size=_closing_size(scale))
        darkening.append(np.asarray(ndi.median(1.0 - channel / np.maximum(background, 1e-3), labels, index)))
    redness = darkening[0] / np.maximum(darkening[1], 1e-3)
    widths = np.asarray(ndi.sum(cell, labels, index)) / np.maximum(arc, 1e-6)
    centre = np.stack([ndi.mean(np.indices(labels.shape)[k], labels, index) for k in (0, 1)], axis=1)
    cls = np.zeros(n, np.uint8)
    use = arc >= MIN_CLASSIFIED_LENGTH * scale
    if use.sum() >= 4:
        cut = _otsu_weighted(redness[use], arc[use] / scale)
        cls[use] = np.where(redness[use] < cut, ARTERY, VEIN)
    segs = VesselSegments(labels, arc, widths, redness, centre, cls, lab[first] - 1, piece_arc, piece_chord, piece_centre)
    _, (iy, ix) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    class_map = np.where(mask, np.r_[0, cls][labels[iy, ix]], 0).astype(np.uint8)
    return VesselSegmentation(fov, mask, skeleton, class_map, segs, cell, scale)


def box_counting_dimension(points: np.ndarray, shape: tuple[int, int]) -> float | None:
    """Box-counting (Minkowski-Bouligand) dimension of a binary image: slope of log N(s) against log 1/s for
    box sizes s = 2, 4, ... up to a quarter of the shorter side; None with fewer than 3 sizes or no pixels."""
    if not points.any():
        return None
    sizes = 2 ** np.arange(1, int(np.log2(min(shape) / 4)) + 1)
    if sizes.size < 3:
        return None
    ys, xs = np.nonzero(points)
    counts = [np.unique((ys // s) * (shape[1] // s + 1) + xs // s).size for s in sizes]
    slope = np.polyfit(np.log(1.0 / sizes), np.log(counts), 1)[0]
    return float(slope)
