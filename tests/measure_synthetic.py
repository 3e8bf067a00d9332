"""Synthetic OCT B-scans and fundus photographs with known geometry, for the stage 0 measurement tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# reflectivity below each boundary, top to bottom (vitreous above the ILM)
_LEVELS = {"vitreous": 0.03, "ilm": 0.65, "rnfl_gcl": 0.35, "ipl_inl": 0.2, "inl_opl": 0.5, "opl_onl": 0.12,
           "elm": 0.22, "isos": 0.85, "ez_end": 0.35, "rpe": 1.0, "bm": 0.4}
_ORDER = ("ilm", "rnfl_gcl", "ipl_inl", "inl_opl", "opl_onl", "elm", "isos", "ez_end", "rpe", "bm")


@dataclass
class SyntheticBScan:
    image: Image.Image
    boundaries: dict[str, np.ndarray]  # row per column (float)
    fovea_x: int
    axial_um_per_px: float
    lateral_um_per_px: float

    def mean_thickness(self, upper: str, lower: str, lo_mm: float, hi_mm: float, side: int = 0) -> float:
        """Mean ``lower - upper`` (px) over columns lo_mm < |x - fovea| <= hi_mm (or the central disc when
        lo_mm == 0, which includes |x| = 0); ``side`` -1/+1 keeps the left/right half only."""
        x = (np.arange(self.image.width) - self.fovea_x) * self.lateral_um_per_px / 1000.0
        mask = (np.abs(x) <= hi_mm) & ((np.abs(x) > lo_mm) if lo_mm > 0 else True)
        if side:
            mask &= np.sign(x) == side
        return float((self.boundaries[lower] - self.boundaries[upper])[mask].mean())


CYST = (-1.0, 9.0, 14.0)  # 1 mm left of the fovea, 18 px (72 µm) tall, 28 px wide


def synthetic_bscan(height: int = 320, width: int = 400, pit_depth: float = 22.0, cyst: bool = False,
                    subretinal: bool = False, seed: int = 0,
                    cysts: tuple[tuple[float, float, float], ...] = ()) -> SyntheticBScan:
    """A 6 mm horizontal B-scan (4 µm/px axial, 15 µm/px lateral) with flat layers, a foveal pit (Gaussian
    dip of the inner layers at the centre), speckle, and optionally intraretinal cysts or subretinal fluid (the
    neurosensory retina lifted off the RPE over the central 1.2 mm). Cysts are dark ellipses in the ONL, each
    ``(mm from the fovea, half height px, half width px)`` in ``cysts``; ``cyst=True`` adds `CYST`."""
    rng = np.random.default_rng(seed)
    x = np.arange(width, dtype=float)
    fovea = width // 2
    dip = pit_depth * np.exp(-0.5 * ((x - fovea) / 28.0) ** 2)
    lift = 14.0 * np.clip(1.0 - ((x - fovea) / 40.0) ** 2, 0.0, None) if subretinal else np.zeros(width)
    bm = 205.0 + 0.03 * (x - fovea)
    rows = {"bm": bm, "rpe": bm - 6.0}
    rows["isos"] = rows["rpe"] - 9.0 - lift
    rows["elm"] = rows["isos"] - 6.0
    rows["ez_end"] = rows["isos"] + 3.0  # the ellipsoid zone, then darker outer segments down to the RPE
    rows["opl_onl"] = rows["elm"] - 20.0
    rows["inl_opl"] = rows["opl_onl"] - 7.0
    inner = np.maximum(1.0 - dip / 30.0, 0.08)  # the inner layers thin out in the pit
    rows["ipl_inl"] = rows["inl_opl"] - 9.0 * inner
    rows["rnfl_gcl"] = rows["ipl_inl"] - 14.0 * inner
    rows["ilm"] = rows["rnfl_gcl"] - 7.0 * inner
    r = np.arange(height)[:, None] + 0.5
    image = np.full((height, width), _LEVELS["vitreous"])
    for name in _ORDER:
        image = np.where(r >= rows[name][None, :], _LEVELS[name], image)
    image = np.where(r >= rows["bm"][None, :] + 40.0, 0.1, image)
    if subretinal:  # the photoreceptors (9 px from IS/OS) stay with the lifted retina, fluid below them
        gap = (r >= rows["isos"][None, :] + 9.0) & (r < rows["rpe"][None, :]) & (lift[None, :] > 0.5)
        image = np.where(gap, 0.03, image)
    for mm, ry, rx in (*cysts, *((CYST,) if cyst else ())):
        cx = fovea + mm * 1000.0 / 15.0
        column = int(np.clip(cx, 0, width - 1))
        cy = 0.5 * (rows["opl_onl"][column] + rows["elm"][column]) - 8.0
        image = np.where(((r - cy) / ry) ** 2 + ((x[None, :] - cx) / rx) ** 2 <= 1.0, 0.02, image)
    image = image * rng.gamma(8.0, 1.0 / 8.0, image.shape)
    from scipy.ndimage import gaussian_filter

    image = gaussian_filter(image, 0.6)
    pil = Image.fromarray(np.clip(image * 230.0, 0, 255).astype(np.uint8), mode="L")
    return SyntheticBScan(pil, rows, fovea, 4.0, 15.0)


@dataclass
class SyntheticFundus:
    image: Image.Image
    disc_centre: tuple[float, float]  # (x, y) pixels
    disc_vertical_radius: float
    cup_to_disc: float
    artery_width: float
    vein_width: float
    artery_tortuosity: float  # windowed arc / chord of the wiggly arteries' centre lines


def _windowed_tortuosity(points: np.ndarray, window: float) -> float:
    """Length-weighted arc / chord over consecutive pieces of ``window`` arc length of a dense polyline."""
    step = np.hypot(*np.diff(points, axis=0).T)
    s = np.r_[0.0, np.cumsum(step)]
    n = max(int(round(s[-1] / window)), 1)
    edges = np.searchsorted(s, np.linspace(0, s[-1], n + 1))
    edges[-1] = len(s) - 1
    arcs, chords = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        arcs.append(s[b] - s[a])
        chords.append(np.hypot(*(points[b] - points[a])))
    arcs, chords = np.array(arcs), np.array(chords)
    return float(np.average(arcs / chords, weights=arcs))


def synthetic_fundus(size: int = 512, cup_to_disc: float = 0.45, disc_radius: float = 36.0, seed: int = 0,
                     artery_width: float = 4.0, vein_width: float = 6.5) -> SyntheticFundus:
    """A 45°-like photograph: orange fundus in a circular field, a vertical-ellipse disc with a pale cup,
    four straight veins and four sinusoidal arteries leaving the disc (drawn at 4x, averaged down)."""
    rng = np.random.default_rng(seed)
    k = 4
    big = size * k
    c = size / 2.0
    disc = (c + 0.24 * size, c - 6.0)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    fov = np.clip(0.46 * size - np.hypot(xx - c, yy - c) + 0.5, 0, 1)

    def ellipse(rx: float, ry: float, edge: float) -> np.ndarray:
        rho = np.hypot((xx - disc[0]) / rx, (yy - disc[1]) / ry)
        return np.clip((1.0 - rho) * ry / edge + 0.5, 0, 1)[..., None]

    base = np.array([215.0, 100.0, 52.0]) * (1.0 + 0.03 * rng.standard_normal((size, size, 1)))
    image = base * (1.0 - 0.35 * (np.hypot(xx - c, yy - c) / (0.46 * size))[..., None] ** 2)
    d, cup = ellipse(0.92 * disc_radius, disc_radius, 2.0), ellipse(0.9 * cup_to_disc * disc_radius, cup_to_disc * disc_radius, 2.5)
    image = image * (1 - d) + np.array([240.0, 170.0, 110.0]) * d
    image = image * (1 - cup) + np.array([252.0, 226.0, 186.0]) * cup

    t = np.linspace(0.0, 1.0, 800)
    arteries, veins = Image.new("L", (big, big)), Image.new("L", (big, big))
    wiggly = []
    for i, angle in enumerate(np.deg2rad([150, 210, 95, 265])):
        direction, normal = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
        length = 170.0 if i < 2 else 120.0
        start = np.array(disc) + direction * 0.5 * disc_radius
        straight = start + np.outer(t * length, direction)
        ImageDraw.Draw(veins).line([tuple(p * k) for p in straight], fill=255, width=int(round(vein_width * k)))
        offset = np.deg2rad(18.0)
        a_dir = np.array([np.cos(angle + offset), np.sin(angle + offset)])
        a_norm = np.array([-a_dir[1], a_dir[0]])
        along = t * length
        centre = start + np.outer(along, a_dir) + np.outer(3.0 * np.sin(2 * np.pi * along / 40.0), a_norm)
        wiggly.append(centre)
        ImageDraw.Draw(arteries).line([tuple(p * k) for p in centre], fill=255, width=int(round(artery_width * k)))
    cover_v = np.asarray(veins.reduce(k), dtype=float)[..., None] / 255.0
    cover_a = np.asarray(arteries.reduce(k), dtype=float)[..., None] / 255.0
    image = image * (1 - cover_v * (1 - np.array([0.5, 0.3, 0.42])))
    image = image * (1 - cover_a * (1 - np.array([0.82, 0.52, 0.56])))
    image = image * fov[..., None] + rng.normal(0, 1.0, image.shape)
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB")
    far = [w[np.hypot(*(w - np.array(disc)).T) > 1.5 * disc_radius] for w in wiggly]
    tortuosity = float(np.mean([_windowed_tortuosity(w, 24.0) for w in far]))
    return SyntheticFundus(pil, disc, disc_radius, cup_to_disc, artery_width, vein_width, tortuosity)
